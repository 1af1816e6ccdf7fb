"""Rolling (ring-buffer) KV cache for sliding-window attention (Mistral 7B, Jiang et al. 2023).

With a window of W keys per query, a decoder never needs keys older than W-1 positions before the
newest query, so each layer keeps a fixed buffer of W slots and position p lives in slot ``p % W``:
memory stays W·(bytes per token) however long the generation runs.

Protocol (the same as :class:`dodai.nn.kv_cache.KVCache` where it can be): ``pos`` (absolute
position of the next token), ``update(layer, k, v)`` once per layer, ``advance(t)`` once per forward.
``update`` returns the keys/values a sliding-window query block needs, **plus their absolute
positions**, because after wrap-around the buffer is no longer in position order.
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


class RollingKVCache:
    """Per layer K, V buffers of shape (B, H_kv, W, D); position p is stored in slot p % W."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, window: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None):
        if not isinstance(window, int) or window < 1:
            raise DodaiError(f"RollingKVCache: window must be a positive integer, got {window!r}")
        self.n_layer, self.batch, self.n_kv_head = n_layer, batch, n_kv_head
        self.window, self.head_dim, self.dtype = window, head_dim, dtype
        shape = (batch, n_kv_head, window, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.pos = 0

    def _kept_positions(self) -> torch.Tensor:
        """Absolute positions still useful to the next query (at ``pos``): the last W-1, in order."""
        start = max(0, self.pos - self.window + 1)
        return torch.arange(start, self.pos, device=self.k[0].device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """k, v (B, H_kv, t, D) for positions pos..pos+t-1 ->
        (K, V (B, H_kv, S, D), positions (S,)) with S = kept + t, keys in position order."""
        t = k.shape[2]
        kept = self._kept_positions()
        slots = kept % self.window
        K = torch.cat((self.k[layer][:, :, slots], k), dim=2)
        V = torch.cat((self.v[layer][:, :, slots], v), dim=2)
        positions = torch.cat((kept, torch.arange(self.pos, self.pos + t, device=kept.device)))
        # write only the last W new positions (older ones would be overwritten anyway); after the
        # read above, so a long chunk cannot clobber keys it still needs
        n = min(t, self.window)
        new_pos = torch.arange(self.pos + t - n, self.pos + t, device=kept.device)
        self.k[layer][:, :, new_pos % self.window] = k[:, :, t - n:]
        self.v[layer][:, :, new_pos % self.window] = v[:, :, t - n:]
        return K, V, positions

    def advance(self, t: int) -> None:
        self.pos += t

    def reset(self) -> None:
        self.pos = 0

    def bytes_per_token_per_layer(self) -> int:
        return 2 * self.n_kv_head * self.head_dim * torch.finfo(self.dtype).bits // 8

    def bytes_per_token(self) -> int:
        return self.n_layer * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        return self.bytes_per_token() * self.window * self.batch
