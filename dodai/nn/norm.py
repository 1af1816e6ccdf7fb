"""Normalization layers (R4.5): LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019).

Shapes: x is (..., C); statistics are taken over the last dimension C only.

- LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias, with the *biased* variance
  (divide by C), as torch and GPT-2 do.
- RMSNorm:   y = x / sqrt(mean(x^2) + eps) * weight. No centring, no bias. Computed in float32 and
  cast back before the weight multiply, the way HF Llama does it, so bf16/fp16 models match HF.

The modules use torch's fused kernels (F.layer_norm, F.rms_norm is not used so that the fp32 upcast is
explicit); the ``*_reference`` functions spell the formulas out and the tests check both against
``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, (..., 1)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    ms = (x.float() ** 2).mean(dim=-1, keepdim=True)  # mean square, (..., 1)
    y = (x.float() / torch.sqrt(ms + eps)).to(x.dtype)
    return y * weight if weight is not None else y


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (GPT-2 has one; ``bias=False`` is the nanoGPT option)."""

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): y = x * rsqrt(mean(x^2) + eps) * weight, stats in float32."""

    def __init__(self, n_embd: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)
