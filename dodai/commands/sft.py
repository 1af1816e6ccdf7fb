"""``dodai sft``: supervised fine-tuning of a causal LM on chat JSONL (full or LoRA), loss on assistant tokens.

``--data`` is a JSONL file of ``{"messages": [{"role", "content"}, ...]}`` lines, or ``dates`` for dodai's
built-in date → ISO-JSON task (:mod:`dodai.finetune.tasks`). Conversations are rendered with the model's
chat template (ChatML when it has none). ``--lora-rank 0`` fine-tunes every weight.

The output folder gets ``sft_config.json``, ``metrics.jsonl`` and, for LoRA, ``adapters.safetensors``
(load with :func:`dodai.finetune.lora.load_adapters`); with full fine-tuning or ``--merge`` also a model
folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) that ``--model`` accepts again.
"""

from __future__ import annotations

HELP = "supervised fine-tuning (full or LoRA) on chat JSONL, loss only on assistant tokens"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="registry name (smollm2-135m-instruct), .gguf file or model folder")
    p.add_argument("--data", required=True, help="chat JSONL file ({\"messages\": [...]} per line), or 'dates'")
    p.add_argument("--task-size", type=int, default=400, help="examples generated with --data dates (default 400)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank; 0 = full fine-tuning (default 8)")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scaling alpha/rank; default 16)")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA input (default 0)")
    p.add_argument("--lora-targets", default="wq,wk,wv,wo,w_gate,w_up,w_down",
                   help="comma-separated linear layer names to adapt (default: every attention and MLP projection)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--batch-size", type=int, default=8, help="conversations per step (default 8)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="peak learning rate (default 2e-3 with LoRA, 3e-5 for full fine-tuning)")
    p.add_argument("--warmup-iters", type=int, default=10, help="linear warm-up steps (default 10)")
    p.add_argument("--max-len", type=int, default=256, help="conversations are cut to this many tokens (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--merge", action="store_true", help="with LoRA: also save the merged model folder")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches of --batch-size conversations per optimizer step (default 1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for the training step (on CPU needs a C++ compiler)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="checkpoint into OUT/ckpt every N steps (default: none)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt (same flags as the first run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="runs/sft", help="output folder (default runs/sft)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    import torch

    from dodai.errors import DodaiError
    from dodai.finetune import lora, sft, tasks
    from dodai.finetune.prefdata import step_logger
    from dodai.io import atomic_write_json
    from dodai.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task_size <= 0:
        raise DodaiError(f"--task-size must be positive, got {args.task_size}")
    if args.grad_accum < 1 or args.checkpoint_every < 0:
        raise DodaiError("need --grad-accum >= 1 and --checkpoint-every >= 0")
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    lr = args.learning_rate if args.learning_rate is not None else (2e-3 if args.lora_rank else 3e-5)
    cfg = sft.SFTConfig(steps=args.steps, batch_size=args.batch_size, lr=lr, warmup=args.warmup_iters,
                        max_len=args.max_len, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                        lora_dropout=args.lora_dropout, lora_targets=targets, seed=args.seed,
                        grad_accum=args.grad_accum, dtype=args.dtype, compile=args.compile,
                        checkpoint_every=args.checkpoint_every)
    cfg.validate()
    if args.data == "dates":
        convs = [e.messages() for e in tasks.make_dates(args.task_size, args.seed)]
    else:
        convs = sft.load_chat_jsonl(args.data)
    model, tok = load_model(args.model)
    fmt = sft.ChatFormatter(tok)
    data = [fmt.encode(c) for c in convs]
    torch.manual_seed(args.seed)  # the LoRA A matrices are drawn here: --seed makes a run repeatable
    trainable, total = sft.prepare(model, cfg)
    print(f"sft: {len(data)} conversations, {trainable:,} of {total:,} parameters trainable", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = step_logger(out / "metrics.jsonl", "sft", out if args.resume else None)
    t0 = time.perf_counter()
    try:
        hist = sft.train_sft(model, data, cfg, pad_id=tok.eos_id or 0, log=log, progress=not args.quiet,
                             out_dir=out if args.checkpoint_every or args.resume else None, resume=args.resume)
    finally:
        log.close()
    if not hist:
        raise DodaiError(f"{out}: the resumed run had already finished (no steps left)")
    secs = time.perf_counter() - t0
    summary = {"conversations": len(data), "trainable_params": trainable, "total_params": total,
               "first_loss": hist[0]["loss"], "final_loss": hist[-1]["loss"], "train_seconds": round(secs, 2),
               "out": str(out)}
    atomic_write_json(out / "sft_config.json", {"model": args.model, "data": args.data, **cfg.to_dict(),
                                                "summary": summary})
    if args.lora_rank:
        lora.save_adapters(model, out / "adapters.safetensors")
        summary["adapters"] = str(out / "adapters.safetensors")
    if not args.lora_rank or args.merge:
        plain = lora.remove_lora(model, merge=True)
        if not hasattr(plain, "save"):
            raise DodaiError(f"{type(plain).__name__} cannot be saved as a model folder")
        plain.save(out / "model", tokenizer=tok)
        summary["model_folder"] = str(out / "model")
    print(json.dumps(summary))
    return 0
