"""Reward model (Ouyang et al., 2022, InstructGPT §3.5): a causal LM with a scalar head read at the last
token of ``prompt + completion``, trained with the Bradley–Terry loss ``−log σ(r(x, y_w) − r(x, y_l))``
on preference pairs. Measured by pairwise accuracy on held-out pairs (chance = 0.5).
"""

from __future__ import annotations

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
    grad_accum: int = 1  # micro-batches of batch_size pairs per optimizer step
    dtype: str = "float32"  # float32 | bfloat16 (autocast)
    compile: bool = False  # torch.compile the reward model for the training step
    checkpoint_every: int = 0  # with an output folder: checkpoint every this many steps (0: at the end only)

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
                       log: Callable[[dict], None] | None = None, out_dir=None, resume: bool = False,
                       progress: bool = False) -> list[dict]:
    """The Bradley–Terry loss with :func:`dodai.train.fit.fit`; rows of loss and batch pair accuracy."""
    from dodai.finetune.dpo import pair_batches
    from dodai.train.fit import FitConfig, fit

    if not pairs:
        raise DodaiError("the reward model needs at least one preference pair")

    def loss_fn(model, batch):
        rc, rr = pair_scores(model, batch, pad_id)
        return bradley_terry_loss(rc, rr), {"accuracy": (rc > rr).float().mean()}

    # the LM head of the backbone gets no gradient (only the hidden state is read): DDP must be told
    fcfg = FitConfig(steps=cfg.steps, optimizer="adamw", lr=cfg.lr, weight_decay=0.0, decay_matrices_only=False,
                     grad_clip=cfg.grad_clip, grad_accum=cfg.grad_accum, dtype=cfg.dtype, compile=cfg.compile,
                     find_unused_parameters=True, eval_every=cfg.checkpoint_every or None, quiet=not progress,
                     desc="reward model", metrics_file="events.jsonl")
    res = fit(rm, pair_batches(pairs, cfg.batch_size, cfg.seed), loss_fn, fcfg, out_dir=out_dir, resume=resume,
              on_step=log)
    rm.eval()
    return res.history
