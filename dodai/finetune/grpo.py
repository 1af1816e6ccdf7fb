"""Group Relative Policy Optimization (Shao et al., 2024, "DeepSeekMath").

For each prompt, G completions are sampled from the current policy and scored by a *verifiable*
reward (here the task's exact checker plus format credit); each completion's advantage is its reward
standardised within its group (:func:`dodai.finetune.losses.grpo_advantages`), so no value network is
needed. The loss is the clipped surrogate with a k3 KL penalty β·KL(π ‖ π_ref) per token
(:func:`dodai.finetune.losses.grpo_loss`). We take one gradient step per batch of rollouts, so the
importance ratio is exactly 1 at the step (the "old" policy is the current one, detached), as in
TRL's default ``num_iterations=1``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from dodai.errors import DodaiError
from dodai.finetune.losses import grpo_advantages, grpo_loss
from dodai.finetune.policy import pack, sample_batch, sample_completions, sequence_logps

RewardFn = Callable[[int, list[int]], float]  # (prompt index, completion ids) -> reward


@dataclass
class GRPOConfig:
    steps: int = 20
    prompts_per_step: int = 4
    group_size: int = 8  # G completions per prompt
    max_new_tokens: int = 16
    lr: float = 1e-5
    beta: float = 0.04  # KL coefficient
    clip: float = 0.2
    temperature: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    batched: bool = True  # all P × G rollouts decoded as one left-padded batch (False: one by one, the reference)
    grad_accum: int = 1  # rollout batches (of prompts_per_step × group_size samples) per optimizer step
    dtype: str = "float32"  # float32 | bfloat16 (autocast) for the update
    compile: bool = False  # torch.compile the policy for the update step
    checkpoint_every: int = 0  # with an output folder: checkpoint every this many steps (0: at the end only)

    def to_dict(self) -> dict:
        return asdict(self)


class Rollouts:
    """The batch source of GRPO: micro-batch ``i`` samples ``group_size`` completions of ``prompts_per_step``
    prompts from the *current* policy, scores them and computes the group advantages and the reference
    log-probs. It depends on the model, so a resumed run cannot replay it: its state (the prompt sampler)
    is checkpointed instead."""

    def __init__(self, policy, ref, prompts, reward_fn: RewardFn, stop_ids, cfg: GRPOConfig, pad_id: int):
        self.policy, self.ref, self.prompts, self.reward_fn = policy, ref, prompts, reward_fn
        self.stop_ids, self.cfg, self.pad_id = stop_ids, cfg, pad_id
        self.rng = random.Random(cfg.seed)

    def __call__(self, i: int) -> dict:
        cfg, prompts = self.cfg, self.prompts
        idx = [self.rng.randrange(len(prompts)) for _ in range(cfg.prompts_per_step)]
        # one seed per sample (prompt j, sample g): the batched and the one-by-one paths draw the same tokens
        owner = [k for k in idx for _ in range(cfg.group_size)]  # prompt index of each sample
        ps = [prompts[k] for k in owner]
        seeds = [cfg.seed * 100_003 + i * 1009 + j * cfg.group_size + g
                 for j in range(len(idx)) for g in range(cfg.group_size)]
        was = self.policy.training
        self.policy.eval()
        if cfg.batched:
            cs = sample_batch(self.policy, ps, cfg.max_new_tokens, self.stop_ids, seeds, cfg.temperature,
                              self.pad_id)
        else:
            cs = [sample_completions(self.policy, p, 1, cfg.max_new_tokens, self.stop_ids, cfg.temperature,
                                     seed=sd)[0] for p, sd in zip(ps, seeds)]
        self.policy.train(was)
        r = torch.tensor([self.reward_fn(k, c) for k, c in zip(owner, cs)], dtype=torch.float32)
        x, mask, _ = pack(ps, cs, self.pad_id)
        with torch.no_grad():
            ref_lp = sequence_logps(self.ref, x, mask)
        return {"x": x, "mask": mask, "adv": grpo_advantages(r, cfg.group_size), "ref_lp": ref_lp, "reward": r}

    def state_dict(self) -> dict:
        v, st, gauss = self.rng.getstate()
        return {"version": v, "state": list(st), "gauss": gauss}

    def load_state_dict(self, st: dict) -> None:
        self.rng.setstate((st["version"], tuple(st["state"]), st["gauss"]))


def train_grpo(policy, ref, prompts: list[list[int]], reward_fn: RewardFn, stop_ids, cfg: GRPOConfig,
               pad_id: int = 0, log: Callable[[dict], None] | None = None, out_dir=None, resume: bool = False,
               progress: bool = False) -> list[dict]:
    """Returns per-step rows: mean reward of the rollouts, ``kl`` (mean per-token k3, what the loss
    penalises), ``kl_reply`` (Σ_t log π − log π_ref per reply, comparable with PPO's ``kl``), loss, seconds.

    The update runs on :func:`dodai.train.fit.fit` with :class:`Rollouts` as its batch source. Under data
    parallelism every rank samples the whole rollout batch (the same seeds) and trains on its share of the
    groups' samples: correct (the loss is a mean over samples), but the sampling is not divided."""
    from dodai.train.fit import FitConfig, fit

    if not prompts:
        raise DodaiError("GRPO needs at least one prompt")
    if cfg.group_size < 2:
        raise DodaiError("GRPO needs a group size of at least 2 (advantages are relative to the group)")
    ref.eval()

    def loss_fn(model, b):
        x, mask, ref_lp = b["x"], b["mask"], b["ref_lp"]
        lp = sequence_logps(model, x, mask)
        loss, kl = grpo_loss(lp, lp.detach(), ref_lp, b["adv"], mask, cfg.beta, cfg.clip)
        kl_reply = ((lp.detach() - ref_lp) * mask).sum(1).mean()  # Σ_t log π − log π_ref, as PPO logs it
        return loss, {"reward": b["reward"].mean(), "kl": kl, "kl_reply": kl_reply, "length": mask.sum(1).mean()}

    fcfg = FitConfig(steps=cfg.steps, optimizer="adamw", lr=cfg.lr, weight_decay=0.0, decay_matrices_only=False,
                     grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum, dtype=cfg.dtype, compile=cfg.compile,
                     eval_every=cfg.checkpoint_every or None, quiet=not progress, desc="grpo",
                     metrics_file="events.jsonl")
    source = Rollouts(policy, ref, prompts, reward_fn, stop_ids, cfg, pad_id)
    res = fit(policy, source, loss_fn, fcfg, out_dir=out_dir, resume=resume, on_step=log)
    policy.eval()
    return res.history
