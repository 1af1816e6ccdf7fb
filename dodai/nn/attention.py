"""Scaled dot-product attention (R4.1) and multi-head causal self-attention with GQA/MQA (R4.2).

Notation: B batch, T query positions (new tokens), S key positions (cache + new), C model width,
H query heads, H_kv key/value heads (H_kv divides H), D = C / H head dim.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + M) V        (Vaswani et al. 2017, eq. 1)

with M = 0 where attention is allowed and -inf where it is masked (see :mod:`dodai.nn.masks` for the
boolean convention and the bottom-right causal alignment used with a KV cache).

Two implementations, tested equal:

- :func:`attention_reference`: the formula above spelled out (matmul, mask, softmax, matmul); it can
  return the attention weights (for the attention-map plots of R4.1).
- :func:`attention_sdpa`: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels where available), the fast path used for training.

Grouped-query attention (Ainslie et al. 2023, "GQA") shares each K/V head between H / H_kv query
heads; H_kv = 1 is multi-query attention (Shazeer 2019, "Fast Transformer Decoding"). The KV cache then
shrinks by the factor H / H_kv.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dodai.nn.masks import causal_mask
from dodai.nn.position import apply_rope

ATTN_IMPLS = ("sdpa", "reference")


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D): each K/V head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    b, h_kv, s, d = x.shape
    x = x[:, :, None, :, :].expand(b, h_kv, n_rep, s, d)  # (B, H_kv, n_rep, S, D), no copy yet
    return x.reshape(b, h_kv * n_rep, s, d)  # (B, H, S, D); head h uses K/V head h // n_rep


def _full_mask(mask: torch.Tensor | None, causal: bool, t: int, s: int, device) -> torch.Tensor | None:
    """Combine an optional boolean keep-mask with the (bottom-right aligned) causal mask."""
    if causal:
        cm = causal_mask(t, s, device=device)  # (T, S)
        return cm if mask is None else (mask & cm)
    return mask


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                        causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
                        return_weights: bool = False, bias: torch.Tensor | None = None):
    """softmax(q k^T * scale + bias + mask) v, written out.

    q: (B, H, T, D); k, v: (B, H_kv, S, D) with H_kv dividing H; mask: bool, broadcastable to (B, H, T, S),
    True = attend; bias: float, broadcastable to (B, H, T, S), added to the scaled scores (ALiBi).
    Returns (B, H, T, D), and the weights (B, H, T, S) if ``return_weights``.
    A query row whose keys are all masked gets zero output (not NaN).
    """
    h, h_kv = q.shape[1], k.shape[1]
    k, v = repeat_kv(k, h // h_kv), repeat_kv(v, h // h_kv)  # (B, H, S, D)
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, D) @ (B, H, D, S) -> (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    m = _full_mask(mask, causal, t, s, q.device)
    if m is not None:
        scores = scores.masked_fill(~m, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1 over the visible keys
    weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows: softmax of all -inf is NaN
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    return (out, weights) if return_weights else out


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                   causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """The same computation through torch's fused ``scaled_dot_product_attention``."""
    h, h_kv = q.shape[1], k.shape[1]
    t, s = q.shape[-2], k.shape[-2]
    gqa = {"enable_gqa": True} if h != h_kv else {}
    if bias is not None:
        # SDPA adds a float attn_mask to the scaled scores: fold the boolean mask in as -inf.
        m = _full_mask(mask, causal, t, s, q.device)
        fb = bias.to(q.dtype)
        if m is not None:
            fb = fb.masked_fill(~m, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=fb, dropout_p=dropout_p, scale=scale, **gqa)
    if mask is None and causal and t == s:
        # SDPA's is_causal is top-left aligned: identical to ours only when T == S; it lets SDPA skip
        # building a mask and use the causal kernels.
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p, scale=scale, **gqa)
    if causal and t == 1 and mask is None:
        # One new query at the last position sees every key: no mask at all.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale, **gqa)
    m = _full_mask(mask, causal, t, s, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=dropout_p, scale=scale, **gqa)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection, optional GQA/MQA, RoPE and KV cache.

    ``c_attn``: Linear(C, (H + 2 H_kv) D), output laid out [q (H*D) | k (H_kv*D) | v (H_kv*D)], which for
    H_kv = H is GPT-2's c_attn (transposed: HF stores Conv1D weights as [in, out]).
    ``c_proj``: Linear(C, C), the output projection.
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None, bias: bool = True,
                 dropout: float = 0.0, attn_impl: str = "sdpa"):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not divisible by n_head {n_head}")
        if n_head % n_kv_head:
            raise ValueError(f"n_head {n_head} is not divisible by n_kv_head {n_kv_head}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attn_impl {attn_impl!r}; expected one of {ATTN_IMPLS}")
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_dim = n_embd // n_head
        self.q_size, self.kv_size = n_head * self.head_dim, n_kv_head * self.head_dim
        self.c_attn = nn.Linear(n_embd, self.q_size + 2 * self.kv_size, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        # Identity when p = 0: the same result with one module call less per layer (tiny models are
        # dominated by per-op overhead).
        self.resid_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.attn_impl = attn_impl
        self.keep_weights = False  # set True (with attn_impl="reference") to keep the last attention map
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache=None, layer: int = 0, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C).

        rope: (cos, sin), each (T, D), for the absolute positions of these T tokens (or None).
        cache: a :class:`dodai.nn.kv_cache.KVCache`; this layer's K/V are appended at ``cache.pos``
        (the caller advances the cache once after all layers).
        bias: additive float attention bias broadcastable to (B, H, T, S), e.g. ALiBi's (H, T, S).
        """
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split([self.q_size, self.kv_size, self.kv_size], dim=2)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H_kv, S, D) with S = cache.pos + T
        p = self.dropout if self.training else 0.0
        if self.attn_impl == "sdpa" and bias is not None:
            y = attention_sdpa(q, k, v, causal=True, dropout_p=p, bias=bias)
        elif self.attn_impl == "sdpa" and cache is None and self.n_kv_head == self.n_head:
            # training's hot path: T == S, so SDPA's top-left causal flag is the right mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif self.attn_impl == "sdpa":
            y = attention_sdpa(q, k, v, causal=True, dropout_p=p)
        else:
            y, w = attention_reference(q, k, v, causal=True, dropout_p=p, return_weights=True, bias=bias)
            if self.keep_weights:
                self.last_weights = w.detach()
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))
