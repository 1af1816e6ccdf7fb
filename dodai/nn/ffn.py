"""Position-wise feed-forward networks (R4.4).

Shapes: x is (B, T, C); the hidden width is F (4C for GPT-2; about 8C/3 for SwiGLU at equal
parameter count, since SwiGLU has three matrices instead of two).

- :class:`MLP`: GPT-2's  y = W2 act(W1 x + b1) + b2  with act = GELU (Hendrycks & Gimpel 2016), exact
  (erf) or the tanh approximation GPT-2 was trained with ("gelu_new" in HF), or ReLU (Vaswani et al. 2017).
- :class:`SwiGLU`: Shazeer 2020, "GLU Variants Improve Transformer": y = W_down (SiLU(W_gate x) * W_up x),
  no biases, as in Llama. Parameter names follow HF Llama (gate_proj, up_proj, down_proj).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def gelu_reference(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh_reference(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class MLP(nn.Module):
    """GPT-2's feed-forward block: c_fc (C -> F), activation, c_proj (F -> C), dropout."""

    def __init__(self, n_embd: int, hidden: int | None = None, bias: bool = True,
                 activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        hidden = hidden or 4 * n_embd
        self.activation = activation
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(activation(self.activation, self.c_fc(x))))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(SiLU(gate(x)) * up(x))."""

    def __init__(self, n_embd: int, hidden: int | None = None, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        # Default width: 2/3 of 4C (so three matrices cost what GPT-2's two do), rounded up to 8.
        hidden = hidden or 8 * ((8 * n_embd // 3 + 7) // 8)
        self.gate_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.up_proj = nn.Linear(n_embd, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))
