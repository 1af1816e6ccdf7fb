"""Learning-rate schedules, by optimizer step or by elapsed time.

**By step** (:func:`lr_at`, the shape of nanoGPT's ``get_lr``, itself the GPT-3 / Chinchilla recipe: Brown
et al. 2020, Hoffmann et al. 2022), with ``lr(it)`` for the optimizer step ``it`` (0-based):

- warmup, ``it < warmup``:        lr = max_lr * (it + 1) / (warmup + 1)
- decay, ``warmup <= it <= D``:   r = (it - warmup) / (D - warmup);  lr = min_lr + ½(1 + cos πr)(max_lr - min_lr)
- after, ``it > D``:              lr = min_lr

:func:`step_lr` adds the other shapes on the same warmup: ``linear`` (lr falls on a straight line to
``min_lr`` at D), ``wsd`` (warmup-stable-decay: constant, then a straight line to ``min_lr`` over the last
``cooldown`` fraction of the steps between warmup and D; Hu et al. 2024, "MiniCPM") and ``constant``.

**By time** (:func:`time_lr`): the same shapes over the *fraction of a wall-clock budget* p = elapsed /
budget in [0, 1] (warmup and cooldown given as fractions of it). A run that must end when its budget does
(``dodai speedrun``: the budget is the budget) cannot know its step count in advance, but it knows p, so
warmup and decay land where they should whatever the machine's speed. Warmup is ``max_lr · max(p / w,
0.01)`` (never exactly zero, so the first step moves).
"""

from __future__ import annotations

import math

SHAPES = ("cosine", "linear", "wsd", "constant")


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


def _decay(shape: str, r: float, max_lr: float, min_lr: float, cooldown: float) -> float:
    """The post-warmup part at relative position r in [0, 1]."""
    r = min(max(r, 0.0), 1.0)
    if shape == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (max_lr - min_lr)
    if shape == "linear":
        return min_lr + (1.0 - r) * (max_lr - min_lr)
    if shape == "wsd":
        start = 1.0 - cooldown
        if r <= start or cooldown <= 0:
            return max_lr
        return min_lr + (1.0 - (r - start) / cooldown) * (max_lr - min_lr)
    return max_lr  # constant


def step_lr(shape: str, it: int, max_lr: float, min_lr: float, warmup: int, decay_steps: int,
            cooldown: float = 0.2) -> float:
    """``shape`` in :data:`SHAPES` at optimizer step ``it``; ``cosine`` is exactly :func:`lr_at`."""
    if shape == "cosine":
        return lr_at(it, max_lr, min_lr, warmup, decay_steps)
    if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
    if shape == "constant":
        return max_lr
    if it > decay_steps or decay_steps <= warmup:
        return min_lr
    return _decay(shape, (it - warmup) / (decay_steps - warmup), max_lr, min_lr, cooldown)


def time_lr(shape: str, p: float, max_lr: float, min_lr: float, warmup: float, cooldown: float = 0.2) -> float:
    """``shape`` at the budget fraction ``p`` in [0, 1]; ``warmup`` and ``cooldown`` are fractions of the budget."""
    p = min(max(p, 0.0), 1.0)
    if p < warmup:
        return max_lr * max(p / warmup, 0.01)
    if shape == "constant":
        return max_lr
    if warmup >= 1.0:
        return min_lr
    return _decay(shape, (p - warmup) / (1.0 - warmup), max_lr, min_lr, cooldown / (1.0 - warmup) if shape == "wsd"
                  else cooldown)
