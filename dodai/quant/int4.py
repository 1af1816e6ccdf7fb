"""Weight-only 4-bit quantization, groupwise and asymmetric: the Q4_1 scheme (issue 4, item 3).

Notation: N output features (rows of W), K input features, g = 32 weights per group along K.

Each row of W is cut into groups of g consecutive input weights; group j of row n gets its own step
``d`` and offset ``m`` (llama.cpp's Q4_1 block rule, the same as ``dodai.weights.quants`` writes)::

    m[n, j] = min of the group,   d[n, j] = (max - min) / 15   (d = 1 for a constant group)
    q[n, k] = min(trunc((W[n, k] - m) / d + 1/2), 15)          a 4-bit code 0 .. 15
    W ≈ d · q + m                                               error at most d / 2 per weight

SmolLM2's GGUF *is* Q4_1 for every linear layer, so re-quantizing its dequantized weights with this rule
finds the file's own grid again (wherever a block used both codes 0 and 15): 4-bit compute from what
is, up to rounding, the file's 4-bit blocks.

Two paths compute ``y = x Wᵀ``:

- **reference** (:func:`int4_linear_reference`): dequantize to fp32, plain matmul; the oracle.
- **fast** (:class:`Int4Linear`): dodai's own kernels where they build (:mod:`dodai.quant.native`: a
  matrix-vector kernel for decoding, dequantize-then-GEMM for prompts; both read the packed layout below
  and compute on fp32 activations), else PyTorch's CPU kernel ``_weight_int4pack_mm_for_cpu``, which reads the
  packed 4-bit codes and one (scale, zero) pair per group and computes ``(q - 8)·scale + zero`` on the
  fly; so ``scale = d`` and ``zero = m + 8·d``. It is fast with **bfloat16** activations and scales (with
  fp32 or fp16 ones it is 10–30x slower on our CPU, measured), so the pairs are stored in bf16 and
  activations are cast to bf16 around the matmul: both round, which the perplexity check prices in
  (benchmarks/results/formats.md). At one token per step a decoder reads each weight once per token, so
  reading 4 bits instead of 8 (int8) or 32 (fp32) is what makes decoding faster.

The packed layout is the kernel's own (tiles of rows interleaved, chosen by PyTorch); dodai never reads
it directly. :attr:`Int4Linear.weight` recovers W exactly by running the kernel on the identity matrix in
fp32 (slow, for code that needs the matrix; never on the decoding path).

Dettmers & Zettlemoyer (2023), "The case for 4-bit precision", measure why 4-bit with small groups is the
sweet spot for inference; the groupwise min/max scheme is llama.cpp's Q4_1 (ggml).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dodai.errors import DodaiError

GROUP = 32
_OP = getattr(getattr(torch.ops, "aten", None), "_weight_int4pack_mm_for_cpu", None)
_PACK = getattr(getattr(torch.ops, "aten", None), "_convert_weight_to_int4pack_for_cpu", None)


def available() -> bool:
    """Whether this PyTorch has the CPU 4-bit kernel (PyTorch >= 2.5)."""
    return _OP is not None and _PACK is not None


def fits(n_out: int, n_in: int, group: int = GROUP) -> bool:
    """Whether a (N, K) weight can use the kernel: K a multiple of the group, N a multiple of 16."""
    return n_in % group == 0 and n_out % 16 == 0 and n_in >= group


def quantize_groupwise(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (N, K) float -> (q (N, K) uint8 in 0..15, d (N, K/g) fp32, m (N, K/g) fp32), W ≈ d·q + m per group."""
    if w.dim() != 2 or w.shape[1] % group:
        raise DodaiError(f"4-bit quantization needs a 2-D weight whose input size is a multiple of {group}, "
                         f"got shape {tuple(w.shape)}")
    w32 = w.detach().float()
    if not torch.isfinite(w32).all():
        raise DodaiError("4-bit quantization: the weight holds NaN or inf")
    n, k = w32.shape
    blocks = w32.reshape(n, k // group, group)  # (N, K/g, g)
    lo, hi = blocks.amin(-1), blocks.amax(-1)  # (N, K/g)
    d = (hi - lo) / 15.0
    d = torch.where(d > 0, d, torch.ones_like(d))  # a constant group: every code 0, W = m exactly
    q = torch.trunc((blocks - lo[..., None]) / d[..., None] + 0.5).clamp_(0, 15).to(torch.uint8)
    return q.reshape(n, k), d, lo


def dequantize_groupwise(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(q (N, K), d (N, K/g), m (N, K/g)) -> W (N, K) fp32 = d·q + m per group."""
    n, k = q.shape
    g = k // d.shape[1]
    w = q.float().reshape(n, k // g, g) * d[..., None] + m[..., None]
    return w.reshape(n, k)


def kernel_scales(d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (scale, zero) the kernel uses, rounded to bf16 as it stores them, as fp32 (N, K/g) each."""
    scale = d.to(torch.bfloat16).float()
    zero = (m + 8.0 * d).to(torch.bfloat16).float()
    return scale, zero


def int4_linear_reference(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor,
                          bias: torch.Tensor | None = None, as_kernel: bool = False) -> torch.Tensor:
    """x (..., K) -> (..., N) in x's dtype: fp32 matmul with the dequantized weight (the oracle).

    ``as_kernel=True`` dequantizes with the kernel's bf16-rounded (scale, zero), ``(q - 8)·scale + zero``,
    so that the fast path can be compared with it up to the bf16 rounding of the activations alone."""
    if as_kernel:
        scale, zero = kernel_scales(d, m)
        n, k = q.shape
        g = k // d.shape[1]
        w = ((q.float().reshape(n, k // g, g) - 8.0) * scale[..., None] + zero[..., None]).reshape(n, k)
    else:
        w = dequantize_groupwise(q, d, m)
    y = F.linear(x.float(), w, None if bias is None else bias.float())
    return y.to(x.dtype)


class Int4Linear(nn.Module):
    """``y = x Wᵀ (+ b)`` with W as packed 4-bit codes plus a bf16 (scale, zero) per group of 32 inputs."""

    def __init__(self, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        if not available():
            raise DodaiError("the int4 format needs PyTorch's CPU 4-bit kernel (PyTorch >= 2.5)")
        n, k = q.shape
        if q.dim() != 2 or d.shape != m.shape or d.shape[0] != n or k % d.shape[1] or not fits(n, k, k // d.shape[1]):
            raise DodaiError(f"Int4Linear cannot hold a weight of shape {tuple(q.shape)} with {tuple(d.shape)} groups")
        self.out_features, self.in_features, self.group = n, k, k // d.shape[1]
        scale, zero = kernel_scales(d, m)
        self.register_buffer("packed", _PACK(q.to(torch.int32).contiguous(), 1))  # kernel layout, K/2 bytes a row
        # (K/g, N, 2) bf16: the kernel's scales_and_zeros
        self.register_buffer("scales_zeros", torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int4Linear:
        q, d, m = quantize_groupwise(lin.weight)
        return cls(q, d, m, lin.bias)

    @property
    def weight(self) -> torch.Tensor:
        """W (N, K) fp32, exactly ``(q - 8)·scale + zero``: dodai's dequantizer where it builds, else PyTorch's
        kernel applied to the identity matrix with fp32 activations (every output is one weight times 1.0,
        slow). For code that needs the matrix; not used for decoding."""
        bn = _native_tile(self.packed, self.packed, self.group)
        if bn:  # dodai's dequantizer: the same values, without the K×K×N product
            from dodai.quant import native

            return native.int4_dequantize_t(self.packed, self.scales_zeros, self.group, bn).t().contiguous()
        eye = torch.eye(self.in_features, dtype=torch.float32, device=self.packed.device)
        return _OP(eye, self.packed, self.group, self.scales_zeros.float()).t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise DodaiError(f"Int4Linear expects {self.in_features} input features, got {x.shape[-1]}")
        return int4_linear_fast(x, self.packed, self.scales_zeros, self.group, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


# Rows of activations up to which dodai's own matrix-vector kernel runs (decoding: one row per sequence);
# from DEQUANT_ROWS rows on (a prompt), the weight is dequantized to fp32 and multiplied by a dense GEMM.
GEMV_ROWS = 32
DEQUANT_ROWS = 33


def _native_tile(x: torch.Tensor, packed: torch.Tensor, group: int) -> int:
    """The packed layout's row tile when dodai's native kernels can serve this call, else 0."""
    if x.device.type != "cpu" or group % 8:
        return 0
    from dodai.quant import native

    if not native.available():
        return 0
    return native.int4_tile(packed.shape[0], packed.shape[1] * 2)


def int4_linear_fast(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, group: int,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) -> (..., N), returned in x's dtype.

    With dodai's native kernels (:mod:`dodai.quant.native`): up to ``GEMV_ROWS`` rows, the int4
    matrix-vector kernel on fp32 activations; from ``DEQUANT_ROWS`` rows (a prefill), dequantize-then-GEMM:
    the weight is expanded to fp32 once for this call and the rows go through one dense matmul, which on a
    CPU runs at the GEMM's speed instead of a 4-bit kernel's. Otherwise PyTorch's kernel with bf16
    activations. All three compute ``x·((q - 8)·scale + zero)ᵀ``; they differ in rounding only."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # (M, K)
    bn = _native_tile(x2, packed, group)
    if bn and (x2.shape[0] <= GEMV_ROWS or x2.shape[0] >= DEQUANT_ROWS):
        from dodai.quant import native

        xf = x2.float().contiguous()
        if x2.shape[0] <= GEMV_ROWS:
            y = native.int4_gemv(xf, packed, scales_zeros, group, bn)  # (M, N) fp32
        else:
            y = xf @ native.int4_dequantize_t(packed, scales_zeros, group, bn)  # (M, K) @ (K, N)
    else:
        y = _OP(x2.to(torch.bfloat16), packed, group, scales_zeros)  # (M, N) bf16
    y = y.to(x.dtype).reshape(*lead, y.shape[-1])
    return y if bias is None else y + bias.to(x.dtype)
