"""A preallocated key/value cache for autoregressive decoding (R5.5).

Notation: B batch, H_kv key/value heads, T_max cache length, D head dim, t new tokens this step.

Every layer's keys and values for positions ``0 .. pos-1`` are kept in one preallocated tensor per
layer, shape (B, H_kv, T_max, D), so decoding never reallocates: a step writes its ``t`` new
positions in place and attends over the view ``[:, :, :pos + t]``. After all layers have been
updated for a step, the model calls :meth:`advance` once.

Memory: 2 (K and V) x H_kv x D x bytes-per-element per token per layer (see :meth:`bytes_per_token`).
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.n_layer, self.batch, self.n_kv_head = n_layer, batch, n_kv_head
        self.max_len, self.head_dim, self.dtype = max_len, head_dim, dtype
        shape = (batch, n_kv_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.pos = 0  # positions filled so far (the next token's position)
        self.key_mask: torch.Tensor | None = None  # (B, pos) bool, real tokens of a left-padded batch

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, t, D) at positions pos..pos+t-1; return K, V views (B, H_kv, pos+t, D)."""
        t = k.shape[2]
        end = self.pos + t
        if end > self.max_len:
            raise DodaiError(f"KV cache full: {end} positions needed, {self.max_len} allocated "
                             f"(prompt + max new tokens exceed the context window)")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions as filled; call once per forward, after every layer's update."""
        self.pos += t

    def reset(self) -> None:
        self.pos, self.key_mask = 0, None

    def bytes_per_token_per_layer(self) -> int:
        return 2 * self.n_kv_head * self.head_dim * torch.finfo(self.dtype).bits // 8

    def bytes_per_token(self) -> int:
        return self.n_layer * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        return self.bytes_per_token() * self.max_len * self.batch
