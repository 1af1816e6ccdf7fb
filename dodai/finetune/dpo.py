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
    grad_accum: int = 1  # micro-batches of batch_size pairs per optimizer step
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False  # torch.compile the policy for the training step
    checkpoint_every: int = 0  # with an output folder: checkpoint every this many steps (0: at the end only)

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


def pair_batches(pairs: list, batch_size: int, seed: int):
    """Batches of ``min(batch_size, len(pairs))`` items drawn without replacement from reshuffled copies of
    ``pairs`` (a new permutation is appended whenever fewer than a batch remain)."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        yield [pairs[order.pop()] for _ in range(min(batch_size, len(pairs)))]


def train_dpo(policy, ref, pairs: list[Pair], cfg: DPOConfig, pad_id: int = 0,
              log: Callable[[dict], None] | None = None, out_dir=None, resume: bool = False,
              progress: bool = False) -> list[dict]:
    """DPO with :func:`dodai.train.fit.fit`: the loss of each batch against the frozen ``ref``; rows of
    loss, implicit reward margin and pair accuracy per step. Under data parallelism each rank takes an
    equal share of the pairs (the loss is a mean over pairs, so the update equals one process's)."""
    from dodai.train.fit import FitConfig, fit

    if not pairs:
        raise DodaiError("DPO needs at least one preference pair")
    if not any(p.requires_grad for p in policy.parameters()):
        raise DodaiError("nothing to train: every parameter is frozen")
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch):
        with torch.no_grad():
            rc, rr = pair_logps(ref, batch, pad_id)
        pc, pr = pair_logps(model, batch, pad_id)
        losses, r_w, r_l = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
        return losses.mean(), {"margin": (r_w - r_l).mean(), "accuracy": (r_w > r_l).float().mean(),
                               "reward_chosen": r_w.mean(), "reward_rejected": r_l.mean()}

    fcfg = FitConfig(steps=cfg.steps, optimizer="adamw", lr=cfg.lr, weight_decay=0.0, decay_matrices_only=False,
                     grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum, dtype=cfg.dtype, compile=cfg.compile,
                     eval_every=cfg.checkpoint_every or None, quiet=not progress, desc="dpo",
                     metrics_file="events.jsonl")
    res = fit(policy, pair_batches(pairs, cfg.batch_size, cfg.seed), loss_fn, fcfg, out_dir=out_dir, resume=resume,
              on_step=log)
    policy.eval()
    return res.history
