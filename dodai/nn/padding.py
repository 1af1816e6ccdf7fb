"""Left-padded batches for causal LMs (R5.4): the key mask, per-row positions and the additive bias.

Notation: B batch rows, T new tokens this forward, S = past + T keys (past = positions already cached).

Prompts of different lengths are batched by **left padding** (as HF ``generate`` does for decoder-only
models): row b holds ``pad, ..., pad, tok_1, ..., tok_n`` so that every row's *next* token sits in the
same column and decoding stays one token per row per step. Three things keep padding invisible:

1. **Key mask** ``(B, S)`` bool, True for real tokens. Padded keys get a large negative additive bias
   (``finfo(dtype).min``, not -inf: a padded *query* whose visible keys are all padding then gets a
   uniform, finite softmax instead of NaN, and NaN must never reach the cache because 0 · NaN = NaN).
   Real queries see ``exp(min - max) == 0`` for every padded key, exactly as if the keys were absent.
2. **Positions** ``(B, T)``: ``cumsum(mask) - 1`` (HF's recipe), so each row's first real token is at
   position 0 whatever its padding; RoPE angles and learned position rows use these.
3. **The cache keeps the mask**: a model stores the growing key mask in ``cache.key_mask`` so later
   steps pass only their new tokens (their mask defaults to all ones).

``attention_mask`` given to a model may cover only the new tokens (B, T) or the whole sequence
(B, past + T) in HF's convention; both are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dodai.errors import DodaiError


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int = 0,
             device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids (B, T_max) long and attention mask (B, T_max) bool, padded on the left."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise DodaiError("left_pad: every sequence needs at least one token")
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, t - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, t - len(s):] = True
    return ids.to(device), mask.to(device)


def resolve_padding(cache, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                    b: int, t: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The full key mask (B, S) bool (None when nothing is padded) and the positions (B, T) long (None
    when they are the plain ``past .. past + T - 1`` for every row).

    Updates ``cache.key_mask`` (when a cache is given and a mask is in play) to the mask of all S keys.
    """
    past = cache.pos if cache is not None else 0
    prev = getattr(cache, "key_mask", None) if cache is not None else None
    full = None
    if attention_mask is not None:
        am = attention_mask.to(device=device, dtype=torch.bool)
        if am.dim() != 2 or am.shape[0] != b or am.shape[1] not in (t, past + t):
            raise DodaiError(f"attention_mask must have shape ({b}, {t}) or ({b}, {past + t}), "
                             f"got {tuple(attention_mask.shape)}")
        if am.shape[1] == past + t:
            full = am
        else:
            old = prev if prev is not None else torch.ones(b, past, dtype=torch.bool, device=device)
            full = torch.cat([old, am], dim=1)
    elif prev is not None:
        full = torch.cat([prev, torch.ones(b, t, dtype=torch.bool, device=device)], dim=1)
    if full is not None:
        if cache is not None:
            cache.key_mask = full
        if bool(full.all()):
            full = None  # nothing padded: the plain causal fast path
        elif not bool(full.any(dim=1).all()):
            raise DodaiError("attention_mask: a row has no real token")
    if position_ids is not None:
        if tuple(position_ids.shape) != (b, t):
            raise DodaiError(f"position_ids must have shape ({b}, {t}), got {tuple(position_ids.shape)}")
        return full, position_ids.to(device=device, dtype=torch.long)
    if full is None:
        return None, None
    pos = (full.long().cumsum(dim=1) - 1)[:, past:past + t].clamp(min=0)  # pads before the first token -> 0
    return full, pos


def padding_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key mask (B, S) bool -> additive bias (B, 1, 1, S): 0 for real keys, finfo(dtype).min for padding."""
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~key_mask, torch.finfo(dtype).min)[:, None, None, :]
