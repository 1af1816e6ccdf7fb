"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr``, then constant.

The shape is nanoGPT's ``get_lr`` (itself the GPT-3 / Chinchilla recipe: Brown et al. 2020,
Hoffmann et al. 2022), with ``lr(it)`` for the optimizer step ``it`` (0-based):

- warmup, ``it < warmup``:        lr = max_lr * (it + 1) / (warmup + 1)
- decay, ``warmup <= it <= D``:   r = (it - warmup) / (D - warmup);  lr = min_lr + ½(1 + cos πr)(max_lr - min_lr)
- after, ``it > D``:              lr = min_lr
"""

from __future__ import annotations

import math


def lr_at(it: int, max_lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int, decay: bool = True) -> float:
    if not decay:
        return max_lr
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    if lr_decay_iters <= warmup_iters:  # degenerate: no room to decay
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
