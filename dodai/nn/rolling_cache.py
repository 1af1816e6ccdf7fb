"""Rolling (ring-buffer) KV cache for sliding-window attention (Mistral 7B, Jiang et al. 2023; Gemma 3's
local layers, Gemma Team 2025).

Notation: B batch, H_kv key/value heads, D head dim, W a layer's window (keys each query sees, itself
included), t new tokens this forward, S = pos + t columns in the whole sequence.

With a window of W keys per query, a layer never needs keys older than W-1 columns before the newest
query, so a *local* layer keeps a fixed buffer of W slots and column p lives in slot ``p % W``: its memory
stays W·(bytes per token) however long the generation runs. A *global* layer (window None) keeps every
column in a preallocated buffer like :class:`dodai.nn.kv_cache.KVCache`. Mistral has only local layers;
Gemma 3 interleaves them (five local, one global).

Protocol (dodai.models.protocol.KVCache): ``pos``, ``key_mask``, ``update(layer, k, v) -> (K, V)``,
``advance(t)``. For a global layer ``update`` returns all S columns, as every cache does. For a local layer it
returns only the **most recent** columns, ``S_l = min(S, kept + t)`` of them, in column order: the kept
W-1 before ``pos`` and the t new ones. They are always the *last* S_l of the S columns, which is all a
sliding-window attention needs to place them (dodai.models.decoder computes key positions for the last
S_l columns of the sequence). A chunk longer than W is returned whole (its early queries need keys that
its own later columns will overwrite in the ring, so the buffer is written after the read).

Left-padded batches (dodai.nn.padding) work too: padding is a prefix of each row, so inside a row the
distance between two real tokens' columns equals the distance between their positions, and keeping the
last W-1 columns keeps every real key a window can reach. The model keeps ``key_mask`` (B, S) for all
columns; it holds bools only.
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


class RollingKVCache:
    """Per layer K, V buffers: (B, H_kv, W, D) ring buffers for local layers, (B, H_kv, max_len, D) for
    global ones.

    ``window``: one window for every layer (Mistral), or a list with one entry per layer, ``None`` for a
    global layer (Gemma 3). ``max_len`` sizes the global layers' buffers (required when there is one).
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, window, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None, max_len: int | None = None):
        windows = list(window) if isinstance(window, (list, tuple)) else [window] * n_layer
        if len(windows) != n_layer:
            raise DodaiError(f"RollingKVCache: {len(windows)} windows for {n_layer} layers")
        for w in windows:
            if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
                raise DodaiError(f"RollingKVCache: window must be a positive integer, got {w!r}")
        if any(w is None for w in windows) and (not isinstance(max_len, int) or max_len < 1):
            raise DodaiError("RollingKVCache: global layers need max_len >= 1")
        self.n_layer, self.batch, self.n_kv_head = n_layer, batch, n_kv_head
        self.windows, self.head_dim, self.dtype, self.max_len = windows, head_dim, dtype, max_len
        self.window = windows[0] if len(set(windows)) == 1 else None  # the one window, when uniform
        self.k, self.v = [], []
        for w in windows:
            shape = (batch, n_kv_head, max_len if w is None else w, head_dim)
            self.k.append(torch.zeros(shape, dtype=dtype, device=device))
            self.v.append(torch.zeros(shape, dtype=dtype, device=device))
        self.pos = 0
        self.key_mask: torch.Tensor | None = None  # (B, pos) bool, kept by the models for padded batches

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, H_kv, t, D) for columns pos..pos+t-1 -> K, V (B, H_kv, S_l, D), the last S_l columns in
        order (S_l = S for a global layer, kept + t for a local one)."""
        t = k.shape[2]
        w = self.windows[layer]
        if w is None:
            end = self.pos + t
            if end > self.max_len:
                raise DodaiError(f"KV cache full: {end} positions needed, {self.max_len} allocated "
                                 f"(prompt + max new tokens exceed the context window)")
            self.k[layer][:, :, self.pos:end] = k
            self.v[layer][:, :, self.pos:end] = v
            return self.k[layer][:, :, :end], self.v[layer][:, :, :end]
        start = max(0, self.pos - w + 1)  # the last W-1 columns before pos are still useful
        if start == 0 and self.pos + t <= w:  # nothing has wrapped: the buffer is in column order
            self.k[layer][:, :, self.pos:self.pos + t] = k
            self.v[layer][:, :, self.pos:self.pos + t] = v
            return self.k[layer][:, :, :self.pos + t], self.v[layer][:, :, :self.pos + t]
        slots = torch.arange(start, self.pos, device=k.device) % w
        K = torch.cat((self.k[layer][:, :, slots], k), dim=2)
        V = torch.cat((self.v[layer][:, :, slots], v), dim=2)
        # write only the last W new columns (older ones would be overwritten anyway); after the read above,
        # so a long chunk cannot clobber keys it still needs
        n = min(t, w)
        new = torch.arange(self.pos + t - n, self.pos + t, device=k.device) % w
        self.k[layer][:, :, new] = k[:, :, t - n:]
        self.v[layer][:, :, new] = v[:, :, t - n:]
        return K, V

    def advance(self, t: int) -> None:
        self.pos += t

    def reset(self) -> None:
        self.pos, self.key_mask = 0, None

    def bytes_per_token_per_layer(self) -> int:
        return 2 * self.n_kv_head * self.head_dim * torch.finfo(self.dtype).bits // 8

    def bytes_per_token(self) -> int:
        return self.n_layer * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        """Bytes of every layer's buffers (allocated up front)."""
        return sum(k.shape[2] for k in self.k) * self.bytes_per_token_per_layer() * self.batch
