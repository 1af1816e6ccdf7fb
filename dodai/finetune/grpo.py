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
import time
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

    def to_dict(self) -> dict:
        return asdict(self)


def train_grpo(policy, ref, prompts: list[list[int]], reward_fn: RewardFn, stop_ids, cfg: GRPOConfig,
               pad_id: int = 0, log: Callable[[dict], None] | None = None) -> list[dict]:
    """Returns per-step rows: mean reward of the rollouts, ``kl`` (mean per-token k3, what the loss
    penalises), ``kl_reply`` (Σ_t log π − log π_ref per reply, comparable with PPO's ``kl``), loss, seconds."""
    if not prompts:
        raise DodaiError("GRPO needs at least one prompt")
    if cfg.group_size < 2:
        raise DodaiError("GRPO needs a group size of at least 2 (advantages are relative to the group)")
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ref.eval()
    rng = random.Random(cfg.seed)
    history = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = [rng.randrange(len(prompts)) for _ in range(cfg.prompts_per_step)]
        # one seed per sample (prompt j, sample g): the batched and the one-by-one paths draw the same tokens
        owner = [i for i in idx for _ in range(cfg.group_size)]  # prompt index of each sample
        ps = [prompts[i] for i in owner]
        seeds = [cfg.seed * 100_003 + step * 1009 + j * cfg.group_size + g
                 for j in range(len(idx)) for g in range(cfg.group_size)]
        if cfg.batched:
            cs = sample_batch(policy, ps, cfg.max_new_tokens, stop_ids, seeds, cfg.temperature, pad_id)
        else:
            cs = [sample_completions(policy, p, 1, cfg.max_new_tokens, stop_ids, cfg.temperature, seed=sd)[0]
                  for p, sd in zip(ps, seeds)]
        rewards = [reward_fn(i, c) for i, c in zip(owner, cs)]
        r = torch.tensor(rewards, dtype=torch.float32)
        adv = grpo_advantages(r, cfg.group_size)
        x, mask, _ = pack(ps, cs, pad_id)
        with torch.no_grad():
            ref_lp = sequence_logps(ref, x, mask)
        policy.train()
        lp = sequence_logps(policy, x, mask)
        loss, kl = grpo_loss(lp, lp.detach(), ref_lp, adv, mask, cfg.beta, cfg.clip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        policy.eval()
        kl_reply = float(((lp.detach() - ref_lp) * mask).sum(1).mean())  # Σ_t log π − log π_ref, as PPO logs it
        row = {"step": step + 1, "reward": float(r.mean()), "kl": float(kl), "kl_reply": kl_reply,
               "loss": float(loss.detach()),
               "length": float(mask.sum(1).mean()), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if log:
            log(row)
    return history
