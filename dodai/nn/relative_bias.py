"""T5 relative position bias (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.1; after Shaw et al. 2018).

Notation: H heads, Tq query positions, Tk key positions, N buckets, M max distance.

Instead of adding position embeddings to the tokens, every attention score gets a learned scalar per
head that depends only on the *relative position* r = key_pos - query_pos, looked up through a bucket:

- bidirectional (encoder): half of the N buckets for r > 0, half for r <= 0; within each half, |r|.
- unidirectional (causal decoder): only r <= 0 matters, n = max(-r, 0), all N buckets for it.
- within the n buckets of a half (n_b = N/2 bidirectional, N causal): the first n_b/2 buckets are exact
  (distance 0, 1, ..., n_b/2 - 1); the rest cover distances n_b/2 .. M logarithmically:

      bucket(d) = n_b/2 + floor( log(d / (n_b/2)) / log(M / (n_b/2)) * (n_b - n_b/2) ),  capped at n_b - 1

  so every distance >= M shares the last bucket: the model cannot tell 200 from 2000 apart, which is
  what lets T5 run on sequences longer than it was trained on.

The bias (1, H, Tq, Tk) is added to the raw QK^T scores. T5 computes it once in the first layer of each
stack and shares it with every layer of that stack. With a KV cache the new queries sit at positions
``offset .. offset + Tq - 1`` while keys span ``0 .. Tk - 1``: pass ``offset`` (= cache.pos).

Convention checked against HF ``T5Attention._relative_position_bucket`` in tests/test_t5.py.
:func:`relative_position_bucket_reference` spells the rule out for one integer and is the oracle for the
vectorised :func:`relative_position_bucket`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket_reference(r: int, bidirectional: bool = True, num_buckets: int = 32,
                                       max_distance: int = 128) -> int:
    """Bucket of one relative position r = key_pos - query_pos (plain Python, the oracle)."""
    bucket = 0
    n = num_buckets
    if bidirectional:
        n //= 2
        if r > 0:
            bucket += n  # keys to the right get the upper half
        d = abs(r)
    else:
        d = max(-r, 0)  # a causal decoder only sees keys at or left of the query
    max_exact = n // 2
    if d < max_exact:
        return bucket + d
    large = max_exact + int(math.log(d / max_exact) / math.log(max_distance / max_exact) * (n - max_exact))
    return bucket + min(large, n - 1)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """Bucket ids (same shape, int64) for a tensor of relative positions key_pos - query_pos."""
    if num_buckets < (4 if bidirectional else 2) or max_distance < 1:
        raise ValueError(f"need num_buckets >= {4 if bidirectional else 2} and max_distance >= 1")
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = buckets + (rel > 0).long() * n
        d = rel.abs()
    else:
        d = (-rel).clamp(min=0)
    max_exact = n // 2
    is_small = d < max_exact
    # float32 log as in the reference implementations, so bucket edges agree bit for bit; d = 0 only
    # reaches this branch when max_exact = 0, and is masked by is_small otherwise (log(0) = -inf is harmless).
    large = max_exact + (
        torch.log(d.float() / max_exact) / math.log(max_distance / max_exact) * (n - max_exact)
    ).long()
    large = large.clamp(max=n - 1)
    return buckets + torch.where(is_small, d, large)


class RelativePositionBias(nn.Module):
    """Learned per-head scalar for each relative-position bucket: returns (1, H, Tq, Tk).

    ``self.relative_attention_bias`` is an ``nn.Embedding(num_buckets, n_heads)``, the same name and
    layout as HF T5 (``...layer.0.SelfAttention.relative_attention_bias.weight``).
    """

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)

    def buckets(self, tq: int, tk: int, offset: int = 0, device=None) -> torch.Tensor:
        """(Tq, Tk) bucket ids for queries at offset..offset+Tq-1 and keys at 0..Tk-1."""
        q_pos = torch.arange(offset, offset + tq, device=device)[:, None]  # (Tq, 1)
        k_pos = torch.arange(tk, device=device)[None, :]  # (1, Tk)
        return relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)

    def forward(self, tq: int, tk: int, offset: int = 0) -> torch.Tensor:
        w = self.relative_attention_bias.weight
        b = self.buckets(tq, tk, offset, device=w.device)  # (Tq, Tk)
        return self.relative_attention_bias(b).permute(2, 0, 1).unsqueeze(0)  # (Tq, Tk, H) -> (1, H, Tq, Tk)
