"""PPO-based RLHF (Ziegler et al., 2019; Stiennon et al., 2020; Ouyang et al., 2022).

One iteration:

1. **Rollout**: one sampled completion per prompt from the policy; the reward model scores the whole
   ``prompt + completion`` (a scalar per sequence). Scores are whitened over the batch (variance only,
   the mean is kept: ``shift_mean=False`` as TRL) when ``whiten_rewards``.
2. **Per-token rewards**: ``r_t = −β (log π(y_t) − log π_ref(y_t))`` on every completion token, plus the
   score on the last one — the KL penalty to the frozen reference keeps the policy near the start.
   β is fixed or **adaptive** (Ziegler et al. §2.2): ``β ← β · (1 + clip(KL / target − 1, ±0.2) · n / horizon)``.
3. **GAE** with the value head's estimates (:func:`dodai.finetune.losses.gae`), advantages whitened.
4. ``ppo_epochs`` passes of the clipped surrogate + ``vf_coef`` × clipped value loss.

Logged per iteration: mean score, KL (summed over tokens, mean over sequences), policy entropy,
clip fraction, β. The value head is a :class:`~dodai.finetune.policy.ScalarHead` on the policy's final
hidden state (a shared trunk, as in Ziegler et al.).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from dodai.errors import DodaiError
from dodai.finetune.losses import gae, masked_mean, ppo_policy_loss, ppo_value_loss, token_logps, whiten
from dodai.finetune.policy import ScalarHead, forward_hidden, pack, sample_batch, sample_completions, sequence_logps

ScoreFn = Callable[[list[int], list[list[int]], list[list[int]]], torch.Tensor]
# (prompt indices, prompts, completions) -> scores (B,)


@dataclass
class PPOConfig:
    steps: int = 20  # rollout + update iterations
    batch_size: int = 8  # prompts (= completions) per rollout
    max_new_tokens: int = 16
    lr: float = 1e-5
    ppo_epochs: int = 2
    clip: float = 0.2
    vf_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05  # initial β
    target_kl: float | None = None  # adaptive β toward this KL (nats per sequence); None = fixed β
    horizon: int = 10_000
    whiten_rewards: bool = True
    temperature: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    batched: bool = True  # rollouts decoded as one left-padded batch (False: prompt by prompt, the reference)

    def to_dict(self) -> dict:
        return asdict(self)


def _policy_value(policy, head, x):
    logits, h = forward_hidden(policy, x)
    return logits[:, :-1], head(h[:, :-1])  # value of the state before each predicted token


def train_ppo(policy, ref, prompts: list[list[int]], score_fn: ScoreFn, stop_ids, cfg: PPOConfig,
              pad_id: int = 0, log: Callable[[dict], None] | None = None) -> tuple[list[dict], ScalarHead]:
    """Returns (per-iteration rows, the trained value head)."""
    if not prompts:
        raise DodaiError("PPO needs at least one prompt")
    head = ScalarHead(policy.config.n_embd)
    params = [p for p in policy.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ref.eval()
    rng = random.Random(cfg.seed)
    beta = cfg.kl_coef
    history = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = [rng.randrange(len(prompts)) for _ in range(cfg.batch_size)]
        ps = [prompts[i] for i in idx]
        seeds = [cfg.seed * 100_003 + step * 1009 + j for j in range(len(ps))]
        if cfg.batched:
            cs = sample_batch(policy, ps, cfg.max_new_tokens, stop_ids, seeds, cfg.temperature, pad_id)
        else:
            cs = [sample_completions(policy, p, 1, cfg.max_new_tokens, stop_ids, cfg.temperature, seed=sd)[0]
                  for p, sd in zip(ps, seeds)]
        x, mask, lens = pack(ps, cs, pad_id)
        with torch.no_grad():  # not inference_mode: these tensors are saved by the backward of the loss
            policy.eval()
            logits, old_values = _policy_value(policy, head, x)
            old_lp = token_logps(logits, x[:, 1:]) * mask
            ref_lp = sequence_logps(ref, x, mask)
            scores = score_fn(idx, ps, cs).float()
            s = whiten(scores, shift_mean=False) if cfg.whiten_rewards and len(scores) > 1 else scores
            kl_tok = (old_lp - ref_lp) * mask
            rewards = -beta * kl_tok
            last = lens - 2  # the shifted position that predicts the final token
            rewards[torch.arange(len(ps)), last] += s
            old_values = old_values * mask
            adv, returns = gae(rewards, old_values, cfg.gamma, cfg.lam, mask)
            adv = whiten(adv, mask) * mask
        policy.train()
        stats = []
        for _ in range(cfg.ppo_epochs):
            logits, values = _policy_value(policy, head, x)
            lp = token_logps(logits, x[:, 1:])
            pg, clipfrac = ppo_policy_loss(lp, old_lp, adv, cfg.clip, mask)
            vf = ppo_value_loss(values, old_values, returns, cfg.vf_clip, mask)
            loss = pg + cfg.vf_coef * vf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                p = torch.softmax(logits.float(), -1)
                ent = masked_mean(-(p * torch.log(p.clamp_min(1e-30))).sum(-1), mask)
            stats.append((float(pg.detach()), float(vf.detach()), float(clipfrac), float(ent)))
        policy.eval()
        kl = float(kl_tok.sum(1).mean())
        if cfg.target_kl is not None:
            err = max(-0.2, min(0.2, kl / cfg.target_kl - 1.0))
            beta *= 1.0 + err * cfg.batch_size / cfg.horizon
        row = {"step": step + 1, "reward": float(scores.mean()), "kl": kl, "pg_loss": stats[-1][0],
               "vf_loss": stats[-1][1], "clipfrac": sum(s[2] for s in stats) / len(stats),
               "entropy": stats[0][3], "beta": beta, "length": float(mask.sum(1).mean()),
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if log:
            log(row)
    return history, head
