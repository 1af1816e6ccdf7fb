"""Reward model (Ouyang et al., 2022, InstructGPT §3.5): a causal LM with a scalar head read at the last
token of ``prompt + completion``, trained with the Bradley–Terry loss ``−log σ(r(x, y_w) − r(x, y_l))``
on preference pairs. Measured by pairwise accuracy on held-out pairs (chance = 0.5).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from dodai.errors import DodaiError
from dodai.finetune.losses import bradley_terry_loss
from dodai.finetune.policy import RewardModel, pack

Pair = tuple[list[int], list[int], list[int]]


@dataclass
class RMConfig:
    steps: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def pair_scores(rm: RewardModel, pairs: list[Pair], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [p for p, _, _ in pairs] * 2
    comps = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    x, _, lens = pack(prompts, comps, pad_id)
    r = rm(x, lens)
    return r[:len(pairs)], r[len(pairs):]


@torch.no_grad()
def pairwise_accuracy(rm: RewardModel, pairs: list[Pair], pad_id: int = 0, batch_size: int = 16) -> float:
    """Fraction of pairs where the chosen reply scores higher (a tie counts one half: chance is 0.5)."""
    rm.eval()
    hits = 0.0
    for i in range(0, len(pairs), batch_size):
        rc, rr = pair_scores(rm, pairs[i:i + batch_size], pad_id)
        hits += float((rc > rr).sum()) + 0.5 * float((rc == rr).sum())
    return hits / max(len(pairs), 1)


def train_reward_model(rm: RewardModel, pairs: list[Pair], cfg: RMConfig, pad_id: int = 0,
                       log: Callable[[dict], None] | None = None) -> list[dict]:
    if not pairs:
        raise DodaiError("the reward model needs at least one preference pair")
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history = []
    t0 = time.perf_counter()
    rm.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = [pairs[order.pop()] for _ in range(min(cfg.batch_size, len(pairs)))]
        rc, rr = pair_scores(rm, batch, pad_id)
        loss = bradley_terry_loss(rc, rr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "accuracy": float((rc > rr).float().mean()),
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if log:
            log(row)
    rm.eval()
    return history
