"""`dodai speedrun`: the main job — corpus → BPE → GPT pre-training in a time budget → report.md."""

from __future__ import annotations

HELP = "the main job: built-in corpus -> BPE -> pre-train a small GPT in a time budget -> report.md"


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/speedrun", help="run folder (default: runs/speedrun)")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget in minutes (default: 5)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default: 4096)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from dodai.speedrun import speedrun

    r = speedrun(args.out, minutes=args.minutes, seed=args.seed, quiet=args.quiet, vocab_size=args.vocab_size,
                 threads=args.threads)
    print(f"val_loss={r['val_loss']:.4f} val_ppl={r['val_ppl']:.2f} val_bpb={r['val_bpb']:.4f} "
          f"steps={r['steps']} report={args.out}/report.md")
    return 0
