"""Weight-only int8 quantization with one scale per output channel (issue 4, item 3).

Notation: N output features (rows of W), K input features, M = rows of activations (B·T).

Symmetric absmax quantization per output channel (row n of W, shape (N, K))::

    s_n   = max_k |W[n, k]| / 127                    (a row of zeros gets s_n = 1, so q = 0)
    q[n,k] = clamp(round(W[n, k] / s_n), -127, 127)   int8; -128 is never used, so the grid is symmetric
    W ≈ q · s  (broadcast over k)                     the error per weight is at most s_n / 2

and ``y = x Wᵀ = (x qᵀ) · s``: the scale factors out of the dot product, so a kernel can multiply
int8 weights by float activations and scale each output once (Dettmers et al., 2022, "LLM.int8()",
describe the per-vector absmax scheme; weight-only int8 is what llama.cpp's Q8_0 does per 32-block).
Only the weights shrink: activations, norms, attention and the KV cache stay in the model's dtype.

Two paths compute the same thing:

- **reference** (:func:`int8_linear_reference`): dequantize W to fp32 and do a plain matmul; the oracle.
- **fast** (:func:`int8_linear_fast`): ``torch._weight_int8pack_mm`` (PyTorch's CPU kernel for int8
  weights with per-channel scales), fed bfloat16 activations: with fp32 activations that kernel is
  several times *slower* than an fp32 matmul on our CPU, with bf16 ones it reads 4x fewer weight bytes
  than fp32 and decodes faster (measured in benchmarks/results/formats.md). The result is cast back to
  the input dtype. tests/test_quant.py checks fast == reference within bf16 rounding.

:func:`quantize_model` swaps a model's ``nn.Linear`` modules in place ("module replacement", so the
model's own code is untouched). The token embedding stays in fp32 (a lookup reads one row per token);
a tied output head gets its own int8 copy of the embedding matrix.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.quant import FORMATS

_HAS_PACK_MM = hasattr(torch, "_weight_int8pack_mm")


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W (N, K) float -> (q (N, K) int8, scale (N,) fp32) with W ≈ q · scale[:, None]."""
    if w.dim() != 2:
        raise DodaiError(f"int8 quantization expects a 2-D weight (N, K), got shape {tuple(w.shape)}")
    w32 = w.detach().float()
    if not torch.isfinite(w32).all():
        raise DodaiError("int8 quantization: the weight holds NaN or inf")
    absmax = w32.abs().amax(dim=1)  # (N,)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))  # (N,)
    q = torch.round(w32 / scale[:, None]).clamp_(-127, 127).to(torch.int8)  # (N, K)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(q (N, K) int8, scale (N,)) -> W (N, K) fp32."""
    return q.float() * scale.float()[:, None]


def int8_linear_reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., N): fp32 matmul with the dequantized weight (the oracle), in x's dtype."""
    y = F.linear(x.float(), dequantize_per_channel(q, scale), None if bias is None else bias.float())
    return y.to(x.dtype)


GEMV_ROWS = 16  # up to this many rows of activations, dodai's own int8 matrix-vector kernel (decoding)


def int8_linear_fast(x: torch.Tensor, q: torch.Tensor, scale_bf16: torch.Tensor,
                     bias: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., N), in x's dtype: ``torch._weight_int8pack_mm`` on bf16 activations, or, for up to
    ``GEMV_ROWS`` rows when :mod:`dodai.quant.native` builds, dodai's matrix-vector kernel on fp32
    activations (at one row PyTorch's kernel is compute-bound on AVX2). Both use the bf16-rounded scales;
    ``scale``, when given, must be ``scale_bf16.float()`` (a cached copy, to skip the conversion)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    if x2.shape[0] <= GEMV_ROWS and x2.device.type == "cpu" and x2.shape[1] % 8 == 0 and q.is_contiguous():
        from dodai.quant import native

        if native.available():
            s32 = scale if scale is not None else scale_bf16.float()
            y = native.int8_gemv(x2.float().contiguous(), q, s32).to(x.dtype).reshape(*lead, q.shape[0])
            return y if bias is None else y + bias.to(x.dtype)
    y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), q, scale_bf16)  # (M, N) bf16: (x2 qᵀ) · scale
    y = y.to(x.dtype).reshape(*lead, q.shape[0])
    return y if bias is None else y + bias.to(x.dtype)


class Int8Linear(nn.Module):
    """``y = x Wᵀ (+ b)`` with W stored as int8 (N, K) plus one fp32 scale per output row."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        if q.dtype != torch.int8 or q.dim() != 2 or scale.shape != (q.shape[0],):
            raise DodaiError("Int8Linear needs q (N, K) int8 and scale (N,)")
        self.out_features, self.in_features = q.shape
        self.register_buffer("qweight", q.contiguous())
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16).contiguous())  # the fast kernel's dtype
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        # the fast kernel when PyTorch has it and the weight lives on the CPU; False: the reference path.
        # The kernel reads K in steps of 16: with other input widths it crashes the process (a segfault,
        # PyTorch 2.13 CPU; found by tests/test_bench.py on a 24-wide model), so those take the reference.
        self.fast = _HAS_PACK_MM and q.device.type == "cpu" and self.in_features % 16 == 0

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int8Linear:
        q, s = quantize_per_channel(lin.weight)
        return cls(q, s, lin.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (N, K) fp32, for code that reads ``.weight`` of a linear layer (e.g. a
        model's ``new_cache`` reading its head's dtype and device); costs a dequantization per access."""
        return dequantize_per_channel(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise DodaiError(f"Int8Linear expects {self.in_features} input features, got {x.shape[-1]}")
        if self.fast:
            s32 = self.__dict__.get("_scale_f32")  # scale_bf16 as fp32 for the native kernel, made once
            if s32 is None or s32[0] != self.scale_bf16.data_ptr():
                with torch.inference_mode(False):
                    s32 = (self.scale_bf16.data_ptr(), self.scale_bf16.detach().float())
                self.__dict__["_scale_f32"] = s32
            return int8_linear_fast(x, self.qweight, self.scale_bf16, self.bias, s32[1])
        return int8_linear_reference(x, self.qweight, self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def _replace_linears(module: nn.Module, four_bit: bool = False, head: nn.Module | None = None) -> int:
    """Swap every ``nn.Linear`` below ``module`` for an ``Int8Linear`` or, with ``four_bit``, an
    ``Int4Linear`` where the kernel fits its shape (int8 otherwise, and always for ``head``)."""
    from dodai.quant import int4

    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if four_bit and child is not head and int4.fits(child.out_features, child.in_features):
                setattr(module, name, int4.Int4Linear.from_linear(child))
            else:
                setattr(module, name, Int8Linear.from_linear(child))
            n += 1
        else:
            n += _replace_linears(child, four_bit, head)
    return n


def _output_head(model: nn.Module) -> nn.Module | None:
    """The layer that maps hidden states to vocabulary logits (dodai's models call it ``output`` or
    ``lm_head``), or None."""
    for attr in ("output", "lm_head", "head"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Linear):
            return m
    return None


def quantize_model(model: nn.Module, fmt: str) -> nn.Module:
    """Convert ``model`` in place to weight format ``fmt`` and return it (in eval mode).

    - "fp32": every parameter in float32 (the reference format).
    - "bf16": every parameter in bfloat16; the model then computes in bf16 (its norms and RoPE upcast
      where they need to).
    - "int8": every ``nn.Linear`` becomes an :class:`Int8Linear` (int8 weights, per-channel scales);
      the rest (embeddings, norms) stays fp32. Activations are fp32 outside the matmuls.
    - "int4": every ``nn.Linear`` the 4-bit kernel can take becomes a :class:`dodai.quant.int4.Int4Linear`
      (Q4_1-style groups of 32); the output head (the vocabulary projection, in SmolLM2 the tied
      embedding, which the GGUF keeps in 8 bits) and layers the kernel cannot take become int8. Measured
      on SmolLM2 (1,024 held-out tokens): int4 with the int8 head −0.05 % perplexity vs fp32, with a
      4-bit head +3.7 %, past the 1 % bound, hence the 8-bit head.

    Quantizing from an already quantized model (int8 -> anything) is refused: the rounding would
    compound silently. Load the model again instead.
    """
    if fmt not in FORMATS:
        raise DodaiError(f"unknown weight format {fmt!r}; known: {', '.join(FORMATS)}")
    if any(type(m).__name__ in ("Int8Linear", "Int4Linear") for m in model.modules()):
        raise DodaiError("this model is already quantized: load it again to convert it to another format")
    if fmt == "fp32":
        model.float()
    elif fmt == "bf16":
        model.to(torch.bfloat16)
    else:
        if fmt == "int4":
            from dodai.quant import int4

            if not int4.available():
                raise DodaiError("the int4 format needs PyTorch's CPU 4-bit kernel (PyTorch >= 2.5)")
        model.float()
        with torch.no_grad():
            n = _replace_linears(model, fmt == "int4", _output_head(model))
        if n == 0:
            raise DodaiError(f"{fmt}: the model has no nn.Linear layers to quantize")
    return model.eval()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers (tied tensors counted once): the model's weight memory."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total
