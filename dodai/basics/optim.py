"""Optimizers from scratch over :class:`dodai.basics.autograd.Tensor` parameters (R1.3).

Same hyper-parameter semantics as ``torch.optim`` so the trajectories can be compared step by step:

- SGD (Robbins & Monro 1951) with momentum (Polyak 1964) and Nesterov momentum (Sutskever et al. 2013,
  in torch's formulation): weight decay is *coupled* L2, added to the gradient.
- Adam (Kingma & Ba 2015): bias-corrected first/second moment estimates; weight decay coupled as L2.
- AdamW (Loshchilov & Hutter 2019): weight decay *decoupled* from the adaptive update,
  θ ← θ(1 - lr·λ) before the Adam step, so every weight decays at the same rate whatever its gradient scale.

``step()`` updates ``p.data`` in place from ``p.grad``; parameters without a gradient are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from dodai.basics.autograd import Tensor
from dodai.errors import DodaiError


class Optimizer:
    def __init__(self, params: Iterable[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise DodaiError("optimizer got an empty parameter list")
        if lr < 0:
            raise DodaiError(f"learning rate must be ≥ 0, got {lr}")
        self.lr = float(lr)
        self.t = 0  # steps taken

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, p.grad)

    def _update(self, i: int, p: Tensor, g: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """θ ← θ - lr·v with v = μ v + (1 - dampening) g (v = g on the first step), g including λθ."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise DodaiError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening, self.weight_decay, self.nesterov = momentum, dampening, weight_decay, nesterov
        self.buf: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p.data  # coupled L2: ∇(½λ‖θ‖²) = λθ
        if self.momentum:
            b = self.buf[i]
            # first step: the buffer is the gradient itself (torch's convention, no dampening)
            b = g.copy() if b is None else self.momentum * b + (1 - self.dampening) * g
            self.buf[i] = b
            g = g + self.momentum * b if self.nesterov else b  # Nesterov: look ahead along the velocity
        p.data -= self.lr * g


class Adam(Optimizer):
    """m ← β₁m + (1-β₁)g; v ← β₂v + (1-β₂)g²; θ ← θ - lr·(m/(1-β₁ᵗ)) / (√(v/(1-β₂ᵗ)) + ε)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise DodaiError(f"Adam betas must be in [0, 1), got {betas}")
        self.b1, self.b2, self.eps, self.weight_decay = b1, b2, eps, weight_decay
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def _update(self, i, p, g):
        if self.weight_decay:
            if self.decoupled:
                p.data *= 1 - self.lr * self.weight_decay  # AdamW: shrink θ directly, outside the moments
            else:
                g = g + self.weight_decay * p.data  # Adam's L2: goes through m and v (and gets rescaled)
        m, v = self.m[i], self.v[i]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        bc1 = 1 - self.b1**self.t  # bias corrections: m and v start at 0
        bc2 = 1 - self.b2**self.t
        denom = np.sqrt(v) / np.sqrt(bc2) + self.eps
        p.data -= (self.lr / bc1) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); torch's default λ = 0.01."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
