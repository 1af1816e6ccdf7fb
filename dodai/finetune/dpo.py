"""Direct Preference Optimization (Rafailov et al., 2023, "Direct Preference Optimization: Your Language
Model is Secretly a Reward Model").

Each example is (prompt ids, chosen completion ids, rejected completion ids); the loss is
:func:`dodai.finetune.losses.dpo_loss` on completion log-probs summed over tokens, under the policy
and under a frozen reference (the starting model). The effect is measured by the held-out implicit
reward margin ``β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]`` and the fraction of
pairs where it is positive.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from dodai.errors import DodaiError
from dodai.finetune.losses import dpo_loss
from dodai.finetune.policy import pack, sequence_logps

Pair = tuple[list[int], list[int], list[int]]  # (prompt, chosen, rejected) token ids


@dataclass
class DPOConfig:
    steps: int = 50
    batch_size: int = 8  # pairs per step
    lr: float = 1e-5
    beta: float = 0.1  # strength of the implicit KL constraint
    label_smoothing: float = 0.0  # ε of conservative DPO
    grad_clip: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def pair_logps(model, pairs: list[Pair], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs (chosen (B,), rejected (B,)) in one forward of 2B rows."""
    prompts = [p for p, _, _ in pairs] * 2
    comps = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    x, mask, _ = pack(prompts, comps, pad_id)
    lp = sequence_logps(model, x, mask).sum(dim=1)  # (2B,)
    return lp[:len(pairs)], lp[len(pairs):]


@torch.no_grad()
def implicit_margin(policy, ref, pairs: list[Pair], beta: float, pad_id: int = 0,
                    batch_size: int = 16) -> tuple[float, float]:
    """(mean implicit reward margin, fraction of pairs with a positive margin) on ``pairs``."""
    policy.eval()
    margins = []
    for i in range(0, len(pairs), batch_size):
        b = pairs[i:i + batch_size]
        pc, pr = pair_logps(policy, b, pad_id)
        rc, rr = pair_logps(ref, b, pad_id)
        margins.append(beta * ((pc - rc) - (pr - rr)))
    m = torch.cat(margins)
    return float(m.mean()), float((m > 0).float().mean())


def train_dpo(policy, ref, pairs: list[Pair], cfg: DPOConfig, pad_id: int = 0,
              log: Callable[[dict], None] | None = None) -> list[dict]:
    if not pairs:
        raise DodaiError("DPO needs at least one preference pair")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise DodaiError("nothing to train: every parameter is frozen")
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history = []
    t0 = time.perf_counter()
    policy.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = [pairs[order.pop()] for _ in range(min(cfg.batch_size, len(pairs)))]
        with torch.no_grad():
            rc, rr = pair_logps(ref, batch, pad_id)
        pc, pr = pair_logps(policy, batch, pad_id)
        losses, r_w, r_l = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "margin": float((r_w - r_l).mean()),
               "accuracy": float((r_w > r_l).float().mean()), "reward_chosen": float(r_w.mean()),
               "reward_rejected": float(r_l.mean()), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if log:
            log(row)
    policy.eval()
    return history
