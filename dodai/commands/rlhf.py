"""``dodai rlhf``: the InstructGPT recipe after SFT — a Bradley–Terry reward model on preference pairs,
then PPO against it with a KL penalty to the starting model (fixed β, or adaptive with ``--target-kl``),
reward whitening, GAE. ``--data``: pairs JSONL (``{"messages", "chosen", "rejected"}``) or ``dates``.
Logs reward, KL, entropy, clip fraction and β per PPO iteration into metrics.jsonl.
"""

from __future__ import annotations

HELP = "RLHF: reward model (Bradley-Terry) + PPO with a KL penalty, on preference pairs or the dates task"


def add_arguments(p) -> None:
    from dodai.finetune.prefdata import add_common_arguments

    p.add_argument("--data", required=True, help="pairs JSONL ({messages, chosen, rejected} per line) or 'dates'")
    p.add_argument("--task-size", type=int, default=200, help="prompts generated with --data dates (default 200)")
    p.add_argument("--rm-steps", type=int, default=50, help="reward-model training steps (default 50)")
    p.add_argument("--rm-learning-rate", type=float, default=1e-3, help="reward-model learning rate (default 1e-3)")
    p.add_argument("--kl-coef", type=float, default=0.05, help="initial KL penalty β (default 0.05)")
    p.add_argument("--target-kl", type=float, default=None, help="adapt β toward this KL per reply (default: fixed β)")
    p.add_argument("--ppo-epochs", type=int, default=2, help="optimisation passes per rollout batch (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="longest sampled reply (default 20)")
    p.add_argument("--no-whiten-rewards", action="store_true", help="do not whiten the reward-model scores")
    p.add_argument("--out", default="runs/rlhf", help="output folder (default runs/rlhf)")
    add_common_arguments(p, default_steps=30, default_lr=5e-4, resume=False)


def run(args) -> int:
    import copy
    import json
    import time
    from pathlib import Path

    from dodai.errors import DodaiError
    from dodai.finetune import ppo, prefdata, reward
    from dodai.finetune.lora import inject_lora
    from dodai.finetune.policy import RewardModel

    prefdata.check_common(args)
    if args.rm_steps <= 0 or args.ppo_epochs <= 0 or args.max_new_tokens <= 0 or args.kl_coef < 0:
        raise DodaiError("need positive --rm-steps, --ppo-epochs, --max-new-tokens and --kl-coef >= 0")
    if args.target_kl is not None and args.target_kl <= 0:
        raise DodaiError(f"--target-kl must be positive, got {args.target_kl}")
    items = prefdata.date_pairs(args.task_size, args.seed) if args.data == "dates" else \
        prefdata.load_pairs_jsonl(args.data)
    policy, ref, tok, fmt = prefdata.load_policy(args.model, args.lora_rank, args.lora_alpha)
    pairs = prefdata.encode_pairs(fmt, items)
    n_held = max(1, len(pairs) // 10) if len(pairs) > 1 else 0
    train, held = pairs[n_held:], pairs[:n_held] or pairs
    pad = tok.eos_id or 0
    out = Path(args.out)
    log = prefdata.step_logger(out / "metrics.jsonl", "rm")
    backbone = copy.deepcopy(ref)
    if args.lora_rank:
        inject_lora(backbone, args.lora_rank, args.lora_alpha)
    else:
        for p in backbone.parameters():
            p.requires_grad_(True)
    rm = RewardModel(backbone)
    t0 = time.perf_counter()
    rm_cfg = reward.RMConfig(steps=args.rm_steps, batch_size=args.batch_size, lr=args.rm_learning_rate, seed=args.seed,
                             grad_accum=args.grad_accum, dtype=args.dtype, compile=args.compile,
                             checkpoint_every=args.checkpoint_every)
    reward.train_reward_model(rm, train, rm_cfg, pad, log=log, out_dir=out / "rm" if args.checkpoint_every else None,
                              progress=not args.quiet)
    rm_acc = reward.pairwise_accuracy(rm, held, pad)
    for p in rm.parameters():
        p.requires_grad_(False)
    log.close()
    log = prefdata.step_logger(out / "ppo_metrics.jsonl", "ppo")
    cfg = ppo.PPOConfig(steps=args.steps, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        lr=args.learning_rate, ppo_epochs=args.ppo_epochs, kl_coef=args.kl_coef,
                        target_kl=args.target_kl, whiten_rewards=not args.no_whiten_rewards, seed=args.seed,
                        dtype=args.dtype, compile=args.compile, checkpoint_every=args.checkpoint_every)
    prompts = [p for p, _, _ in train]
    hist, _ = ppo.train_ppo(policy, ref, prompts, lambda idx, ps, cs: rm.score(ps, cs, pad), set(fmt.end_ids), cfg,
                            pad, log=log, out_dir=out / "ppo" if args.checkpoint_every else None,
                            progress=not args.quiet)
    log.close()
    summary = {"rm_pairwise_accuracy_held_out": rm_acc, "reward_first": hist[0]["reward"],
               "reward_last": hist[-1]["reward"], "kl_last": hist[-1]["kl"], "beta_last": hist[-1]["beta"],
               "train_seconds": round(time.perf_counter() - t0, 2),
               **prefdata.save_policy(policy, tok, out, args.lora_rank)}
    print(json.dumps(summary))
    return 0
