"""``dodai grpo``: Group Relative Policy Optimization (Shao et al., 2024) with a verifiable reward.

The reward must be checkable, so the data is dodai's built-in dates task (``--data dates``): reward 1 for
the exact ``{"date": "YYYY-MM-DD"}`` reply, else half the character similarity to it. Prints a JSON
summary (reward of the first and last steps, final KL, held-out accuracy before/after).
"""

from __future__ import annotations

HELP = "GRPO with a verifiable reward on the built-in dates task, LoRA or full"


def add_arguments(p) -> None:
    from dodai.finetune.prefdata import add_common_arguments

    p.add_argument("--data", default="dates", help="only 'dates' (a task with a checkable answer)")
    p.add_argument("--task-size", type=int, default=200, help="training prompts (default 200)")
    p.add_argument("--eval-size", type=int, default=20, help="held-out prompts for accuracy (default 20)")
    p.add_argument("--group-size", type=int, default=4, help="G samples per prompt (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="longest sampled reply (default 20)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (default 0.04)")
    p.add_argument("--out", default="runs/grpo", help="output folder (default runs/grpo)")
    add_common_arguments(p, default_steps=30, default_lr=5e-4)


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    from dodai.errors import DodaiError
    from dodai.finetune import grpo, prefdata, sft, tasks
    from dodai.finetune.policy import strip_end

    prefdata.check_common(args)
    if args.data != "dates":
        raise DodaiError("dodai grpo needs a verifiable reward: only --data dates is supported")
    if args.group_size < 2 or args.max_new_tokens <= 0 or args.task_size <= 0 or args.eval_size <= 0:
        raise DodaiError("need --group-size >= 2 and positive --max-new-tokens, --task-size, --eval-size")
    train, test = tasks.split(args.task_size, args.eval_size, seed=args.seed)
    policy, ref, tok, fmt = prefdata.load_policy(args.model, args.lora_rank, args.lora_alpha)
    stop = set(fmt.end_ids)
    prompts = [fmt.prompt_ids(e.messages(False)) for e in train]
    acc_before, _ = sft.task_accuracy(policy, fmt, test, args.max_new_tokens)
    out = Path(args.out)
    log = prefdata.step_logger(out / "metrics.jsonl", "grpo", out if args.resume else None)
    cfg = grpo.GRPOConfig(steps=args.steps, prompts_per_step=args.batch_size, group_size=args.group_size,
                          max_new_tokens=args.max_new_tokens, lr=args.learning_rate, beta=args.beta, seed=args.seed,
                          grad_accum=args.grad_accum, dtype=args.dtype, compile=args.compile,
                          checkpoint_every=args.checkpoint_every)
    t0 = time.perf_counter()
    hist = grpo.train_grpo(policy, ref, prompts,
                           lambda i, c: tasks.verifiable_reward(tok.decode(strip_end(c, stop)), train[i]),
                           stop, cfg, tok.eos_id or 0, log=log,
                           out_dir=out if args.checkpoint_every or args.resume else None, resume=args.resume,
                           progress=not args.quiet)
    log.close()
    secs = time.perf_counter() - t0
    acc_after, _ = sft.task_accuracy(policy, fmt, test, args.max_new_tokens)
    if not hist:
        raise DodaiError(f"{out}: the resumed run had already finished (no steps left)")
    summary = {"reward_first": hist[0]["reward"], "reward_last": hist[-1]["reward"], "kl_last": hist[-1]["kl"],
               "accuracy_before": acc_before, "accuracy_after": acc_after, "train_seconds": round(secs, 2),
               **prefdata.save_policy(policy, tok, out, args.lora_rank)}
    print(json.dumps(summary))
    return 0
