"""Normalization layers (R4.5): LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019).

Shapes: x is (..., C); statistics are taken over the last dimension C only.

- LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias, with the *biased* variance
  (divide by C), as torch and GPT-2 do.
- RMSNorm:   y = x / sqrt(mean(x^2) + eps) * (offset + weight). No centring, no bias. The statistics are
  always taken in float32. Two placements of the cast back to the input dtype exist in the wild and both
  are kept, because they differ in bf16:

  * Llama (HF ``LlamaRMSNorm``, offset 0): ``weight * x_hat.to(dtype)``: normalise in fp32, cast, then scale;
  * Gemma (HF ``Gemma3RMSNorm``, offset 1, ``scale_in_fp32=True``): ``(x_hat * (1 + weight)).to(dtype)``:
    the scale is applied in fp32 too. Gemma stores ``weight`` around 0 and scales by ``1 + weight``
    (a zero-initialised weight is the identity).

:class:`RMSNorm` is the one RMSNorm of the decoder family (GPT's rmsnorm option, Llama, Mistral, Gemma 3);
T5's differs in where it casts and stays in :mod:`dodai.models.t5`. In fp32 it runs PyTorch's fused
``F.rms_norm`` kernel, bit-identical to the formula written out in :meth:`RMSNorm.reference` (asserted in
tests/test_llama_fast.py); other dtypes take the written-out formula. The ``*_reference`` functions spell
the formulas out and the tests check both against ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm``.
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
    """RMSNorm (Zhang & Sennrich 2019): y = x * rsqrt(mean(x^2) + eps) * (offset + weight), stats in float32.

    ``offset`` 0 with the weight initialised to ones is Llama's; ``offset=1.0, scale_in_fp32=True`` with the
    weight initialised to zeros is Gemma's (see the module docstring for where each casts).
    """

    def __init__(self, n_embd: int, eps: float = 1e-6, offset: float = 0.0, scale_in_fp32: bool = False):
        super().__init__()
        self.eps, self.offset, self.scale_in_fp32 = eps, float(offset), scale_in_fp32
        self.weight = nn.Parameter(torch.zeros(n_embd) if offset else torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # one fused kernel instead of six ops; in fp32 both placements of the cast coincide, and the
            # kernel is bit-identical to the formula below (tests/test_llama_fast.py)
            w = self.weight + self.offset if self.offset else self.weight
            return F.rms_norm(x, self.weight.shape, w, self.eps)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The formula written out (HF's LlamaRMSNorm / Gemma3RMSNorm): the oracle, and the path for bf16."""
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.scale_in_fp32:
            return (x32 * (self.offset + self.weight.float())).to(dtype)
        w = self.weight + self.offset if self.offset else self.weight
        return w * x32.to(dtype)
