"""`dodai speedrun`: the main job — corpus → BPE → the best small GPT for the time budget → report.md with
baselines (compressors, n-grams, nanoGPT's recipe for the same time)."""

from __future__ import annotations

HELP = ("the main job: corpus -> BPE -> pre-train a GPT for exactly the time budget -> report.md with baselines "
        "(xz/bzip2/gzip, n-grams, nanoGPT's recipe)")


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/speedrun", help="run folder (default: runs/speedrun)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="training budget in minutes, for the model and again for the nanoGPT recipe (default: 5)")
    p.add_argument("--data", default=None,
                   help="your own text: a .txt/.md file, a folder of them or a .jsonl file (default: the built-in "
                        "python-docs corpus)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu, or cuda (bf16, torch.compile, larger shapes) (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: measured: 1 or all, whichever trains faster now)")
    p.add_argument("--size", default="auto",
                   help="model shape: auto (sized for the measured speed and the budget) or a ladder name "
                        "(xs s m l xl xxl 3xl; on cuda also gpu-s gpu-m gpu-l gpu-xl)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size (default: 2048)")
    p.add_argument("--no-baselines", action="store_true", help="skip the compressor and n-gram baselines")
    p.add_argument("--no-nanogpt", action="store_true",
                   help="skip training nanoGPT's recipe for the same budget (halves the wall time)")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile on cuda")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from dodai.speedrun import speedrun

    r = speedrun(args.out, minutes=args.minutes, seed=args.seed, quiet=args.quiet, vocab_size=args.vocab_size,
                 data=args.data, threads=args.threads, device=args.device, size=args.size,
                 baselines=not args.no_baselines, nanogpt=not args.no_nanogpt,
                 compile=False if args.no_compile else None, text_field=args.text_field)
    extra = ""
    if r.get("ratio_to_xz") is not None:
        extra += f" vs_xz={r['ratio_to_xz']:.3f}"
    if r.get("ratio_to_nanogpt") is not None:
        extra += f" vs_nanogpt={r['ratio_to_nanogpt']:.3f}"
    print(f"val_bpb={r['val_bpb']:.4f}{extra} steps={r['steps']} train_s={r['train_s']:.1f} "
          f"report={args.out}/report.md")
    return 0
