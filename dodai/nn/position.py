"""Positional information (R4.3): learned, sinusoidal and rotary (RoPE).

Notation: T positions, C model width, D head dim (even for RoPE), theta the RoPE base.

- **Learned** (GPT-2): an ``nn.Embedding(block_size, C)`` added to the token embeddings; it lives in
  :class:`dodai.models.gpt.GPT` as ``transformer.wpe``.
- **Sinusoidal** (Vaswani et al. 2017, "Attention Is All You Need", section 3.5):
  PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(p / 10000^(2i/C)), added to the embeddings
  (interleaved sin/cos, as in the paper). We do not multiply the embeddings by sqrt(C) as the paper does:
  GPT-style N(0, 0.02) embeddings plus a unit-scale table works and keeps the models comparable.
- **RoPE** (Su et al. 2021, "RoFormer"): rotate each (query, key) pair of features by the angle
  p * theta^(-2i/D). We use the **half-split convention** of GPT-NeoX and HF Llama: feature i is paired
  with feature i + D/2 (not with its neighbour 2i+1 as in the paper and in GGUF files, the
  "interleaved" convention). Both give the same attention scores up to a fixed permutation of the
  Q/K weight rows; :func:`apply_rope_interleaved` is provided for the other convention and tested equal
  under that permutation (:func:`interleaved_to_half_split`).

  half-split:  y = x * cos + rotate_half(x) * sin,  rotate_half([x1, x2]) = [-x2, x1],
               cos/sin = cos/sin(cat(freqs, freqs)) with freqs[p, i] = p * theta^(-2i/D), i < D/2.
- **ALiBi** (Press, Smith & Lewis 2021, "Train Short, Test Long: Attention with Linear Biases Enables
  Input Length Extrapolation"): no position embedding at all; each head h adds the bias
  -m_h * (i - j) to the causal attention score of query position i and key position j <= i. The slopes
  m_h form the geometric sequence 2^(-8/H), 2^(-16/H), ..., 2^(-8) for H a power of two; otherwise the
  paper takes the slopes for the nearest lower power of two P and then every other slope of 2P
  (:func:`alibi_slopes`). Positions are absolute, so with a KV cache the bias rows are those of the new
  queries' positions cache.pos .. cache.pos + T - 1 against all S keys (:func:`alibi_bias`).
"""

from __future__ import annotations

import math

import torch


def sinusoidal_table(t: int, c: int, base: float = 10000.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """(T, C) table of Vaswani et al.: even features sin, odd features cos, wavelengths 2pi..base*2pi."""
    pos = torch.arange(t, dtype=torch.float64, device=device)[:, None]  # (T, 1)
    i2 = torch.arange(0, c, 2, dtype=torch.float64, device=device)  # 2i, (ceil(C/2),)
    angle = pos * torch.exp(-math.log(base) * i2 / c)  # (T, ceil(C/2))
    pe = torch.zeros(t, c, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : c // 2])
    return pe.to(dtype)


def rope_cos_sin(t: int = 0, d: int = 0, theta: float = 10000.0, offset: int = 0, dtype=torch.float32,
                 device=None, positions: torch.Tensor | None = None, compute_dtype=torch.float64,
                 scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables, half-split layout: (T, D) for positions offset..offset+T-1, or (..., D) for the
    given ``positions`` tensor (any shape, e.g. (B, T) per-row positions).

    ``compute_dtype`` is the precision of the angles: float64 (the default) keeps long contexts precise;
    float32 reproduces HF's tables bit for bit (``inv_freq = 1 / θ^(2i/D)`` and ``pos · inv_freq`` in fp32),
    which is what makes dodai's Llama logits equal HF's exactly. ``scaling`` > 1 is *linear* RoPE scaling
    (Chen et al. 2023, "Extending Context Window of Large Language Models via Positional Interpolation"):
    every frequency is divided by the factor, i.e. position p is rotated as if it were p / factor.
    """
    if d % 2:
        raise ValueError(f"RoPE needs an even head dim, got {d}")
    if compute_dtype == torch.float64:
        inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)  # (D/2,)
    else:  # HF's formula and operation order, in compute_dtype
        inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=compute_dtype, device=device) / d))
    if scaling != 1.0:
        inv_freq = inv_freq / scaling
    if positions is None:
        positions = torch.arange(offset, offset + t, device=device)  # (T,)
    freqs = positions.to(compute_dtype)[..., None] * inv_freq  # (..., D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (..., D): feature i and i + D/2 share an angle
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension (halves of size D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, D) by the half-split tables cos, sin (T, D) (or anything broadcastable)."""
    return x * cos + rotate_half(x) * sin


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The paper's / GGUF's convention: pairs (2i, 2i+1). Takes the same half-split cos/sin tables."""
    half = x.shape[-1] // 2
    c, s = cos[..., :half], sin[..., :half]  # (T, D/2): one angle per pair
    xe, xo = x[..., 0::2], x[..., 1::2]  # (..., T, D/2) each
    ye = xe * c - xo * s
    yo = xe * s + xo * c
    return torch.stack([ye, yo], dim=-1).flatten(-2)  # re-interleave to (..., T, D)


def interleaved_to_half_split(d: int) -> torch.Tensor:
    """Index permutation p with x_half = x_inter[..., p]: evens first, then odds."""
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def alibi_slopes(n_head: int) -> torch.Tensor:
    """(H,) ALiBi slopes, Press et al. 2021 (section 3 and their reference code's rule for H not a power of 2)."""

    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_head & (n_head - 1) == 0:
        slopes = pow2(n_head)
    else:
        p = 2 ** math.floor(math.log2(n_head))
        slopes = pow2(p) + pow2(2 * p)[0::2][: n_head - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, t: int, s: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, T, S) additive bias -m_h * (i - j) for the last T of S positions (query i = S - T + row).

    Entries with j > i (the future, removed by the causal mask anyway) get a positive value; callers
    combine it with the causal mask.
    """
    i = torch.arange(s - t, s, device=device, dtype=torch.float32)[:, None]  # (T, 1) absolute query positions
    j = torch.arange(s, device=device, dtype=torch.float32)[None, :]  # (1, S) key positions
    return (-slopes.to(device=device, dtype=torch.float32)[:, None, None] * (i - j)).to(dtype)
