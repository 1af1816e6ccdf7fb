"""Attention masks.

Convention: a **boolean mask is True where attention is allowed** (the same convention as
``torch.nn.functional.scaled_dot_product_attention``; note ``torch.nn.MultiheadAttention`` uses the
opposite one). Shapes broadcast against attention scores (B, H, T, S): T query positions, S key
positions.

Causal masks are **bottom-right aligned**: with a KV cache the T new queries sit at absolute positions
S-T … S-1, so query i may see keys 0 … S-T+i. (SDPA's ``is_causal=True`` is top-left aligned, which is
only the same thing when T == S; :mod:`dodai.nn.attention` passes an explicit mask otherwise.)
"""

from __future__ import annotations

import torch


def causal_mask(t: int, s: int | None = None, device=None) -> torch.Tensor:
    """(T, S) bool, True where query i (absolute position S-T+i) may attend to key j (j <= S-T+i)."""
    s = t if s is None else s
    if s < t:
        raise ValueError(f"causal_mask: {t} queries but only {s} keys")
    q_pos = torch.arange(s - t, s, device=device)[:, None]  # (T, 1) absolute query positions
    k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
    return k_pos <= q_pos


def padding_mask(lengths: torch.Tensor, s: int) -> torch.Tensor:
    """(B, 1, 1, S) bool: True for the first ``lengths[b]`` keys of row b (right padding)."""
    keep = torch.arange(s, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
    return keep[:, None, None, :]


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean keep-mask -> additive mask: 0 where allowed, -inf where masked."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, float("-inf"))
