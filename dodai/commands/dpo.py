"""``dodai dpo``: Direct Preference Optimization (Rafailov et al., 2023) on preference pairs, with the
starting model as the frozen reference. ``--data`` is a pairs JSONL (``{"messages", "chosen", "rejected"}``
per line) or ``dates`` (the built-in task, pairs labelled by its judge). Writes metrics.jsonl, the
adapters (LoRA) and the merged model folder into ``--out``; prints a JSON summary with the held-out
implicit reward margin before and after.
"""

from __future__ import annotations

HELP = "DPO on preference pairs (JSONL or the built-in dates task), LoRA or full"


def add_arguments(p) -> None:
    from dodai.finetune.prefdata import add_common_arguments

    p.add_argument("--data", required=True, help="pairs JSONL ({messages, chosen, rejected} per line) or 'dates'")
    p.add_argument("--task-size", type=int, default=200, help="prompts generated with --data dates (default 200)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO β, strength of the KL constraint (default 0.1)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cDPO label smoothing ε (default 0)")
    p.add_argument("--held-out", type=float, default=0.1, help="share of pairs held out for the margin (default 0.1)")
    p.add_argument("--out", default="runs/dpo", help="output folder (default runs/dpo)")
    add_common_arguments(p, default_steps=50, default_lr=5e-4)


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    from dodai.errors import DodaiError
    from dodai.finetune import dpo, prefdata

    prefdata.check_common(args)
    if args.beta <= 0 or not 0 <= args.label_smoothing < 0.5 or not 0 < args.held_out < 1:
        raise DodaiError("need --beta > 0, 0 <= --label-smoothing < 0.5 and 0 < --held-out < 1")
    items = prefdata.date_pairs(args.task_size, args.seed) if args.data == "dates" else \
        prefdata.load_pairs_jsonl(args.data)
    policy, ref, tok, fmt = prefdata.load_policy(args.model, args.lora_rank, args.lora_alpha)
    pairs = prefdata.encode_pairs(fmt, items)
    n_held = max(1, int(len(pairs) * args.held_out)) if len(pairs) > 1 else 0
    train, held = pairs[n_held:], pairs[:n_held] or pairs
    pad = tok.eos_id or 0
    out = Path(args.out)
    before = dpo.implicit_margin(policy, ref, held, args.beta, pad)
    log = prefdata.step_logger(out / "metrics.jsonl", "dpo", out if args.resume else None)
    cfg = dpo.DPOConfig(steps=args.steps, batch_size=args.batch_size, lr=args.learning_rate, beta=args.beta,
                        label_smoothing=args.label_smoothing, seed=args.seed, grad_accum=args.grad_accum,
                        dtype=args.dtype, compile=args.compile, checkpoint_every=args.checkpoint_every)
    t0 = time.perf_counter()
    dpo.train_dpo(policy, ref, train, cfg, pad, log=log, out_dir=out if args.checkpoint_every or args.resume else None,
                  resume=args.resume, progress=not args.quiet)
    log.close()
    after = dpo.implicit_margin(policy, ref, held, args.beta, pad)
    summary = {"pairs_train": len(train), "pairs_held_out": len(held), "margin_before": before[0],
               "margin_after": after[0], "held_out_pair_accuracy": after[1],
               "train_seconds": round(time.perf_counter() - t0, 2), **prefdata.save_policy(policy, tok, out,
                                                                                         args.lora_rank)}
    print(json.dumps(summary))
    return 0
