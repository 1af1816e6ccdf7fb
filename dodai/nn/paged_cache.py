"""A paged KV cache (R5.5, the "paged variant"): fixed-size blocks from a shared pool.

Notation: L layers, N blocks in the pool, P block size (positions per block), H_kv key/value heads,
D head dim, B sequences (batch rows), t new tokens this step.

The contiguous :class:`dodai.nn.kv_cache.KVCache` reserves (B, H_kv, T_max, D) per layer up front, so
every sequence pays for the longest one it *might* reach. PagedAttention (Kwon et al. 2023, "Efficient
Memory Management for Large Language Model Serving with PagedAttention", vLLM) stores keys and values
in fixed-size **blocks** taken from one pool shared by all sequences:

- :class:`BlockPool` owns, per layer, K and V tensors of shape (N, H_kv, P, D) and a free list.
- :class:`PagedKVCache` is one batch's view of the pool: a **block table** per sequence (logical block
  j of row b -> physical block ``tables[b][j]``), blocks **allocated on demand** when a write crosses a
  block boundary, and **freed** when a row finishes (:meth:`PagedKVCache.keep_rows`) or the batch ends
  (:meth:`PagedKVCache.release`), so the next sequences reuse them. An empty pool is a clear DodaiError.

It speaks the models' cache protocol (``update(layer, k, v) -> (K, V)``, ``advance(t)``, ``pos``,
``key_mask``), so GPT and Llama use it unchanged. ``update`` scatters the new K/V into their blocks and
returns K, V gathered back into position order, (B, H_kv, pos + t, D): without a custom attention
kernel that reads the blocks in place (vLLM's), the gather is one copy per layer per step. The gain is
memory: a sequence holds ceil(len / P) blocks, not T_max positions.

Memory per block: 2 (K and V) x L x H_kv x P x D x bytes per element (:meth:`BlockPool.bytes_per_block`).
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


class BlockPool:
    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, num_blocks: int, block_size: int = 16,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        for name, v in (("n_layer", n_layer), ("n_kv_head", n_kv_head), ("head_dim", head_dim),
                        ("num_blocks", num_blocks), ("block_size", block_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DodaiError(f"BlockPool: {name} must be a positive integer, got {v!r}")
        self.n_layer, self.n_kv_head, self.head_dim = n_layer, n_kv_head, head_dim
        self.num_blocks, self.block_size, self.dtype = num_blocks, block_size, dtype
        shape = (num_blocks, n_kv_head, block_size, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: the lowest free id comes out first
        self._used: set[int] = set()

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int = 16, dtype: torch.dtype | None = None) -> BlockPool:
        """A pool shaped for ``model``'s layers and K/V heads (read off a one-position cache)."""
        c = model.new_cache(1, 1, dtype=dtype)
        return cls(c.n_layer, c.n_kv_head, c.head_dim, num_blocks, block_size, c.dtype, c.k[0].device)

    # ---- allocation ------------------------------------------------------------------------------
    def allocate(self) -> int:
        if not self._free:
            raise DodaiError(f"KV cache pool exhausted: all {self.num_blocks} blocks of {self.block_size} "
                             f"positions are in use ({self.nbytes():,} bytes); use a larger pool, fewer "
                             f"concurrent sequences or fewer new tokens")
        b = self._free.pop()
        self._used.add(b)
        return b

    def free(self, blocks) -> None:
        for b in blocks:
            if b not in self._used:
                raise DodaiError(f"KV cache pool: block {b} freed twice or never allocated")
            self._used.remove(b)
            self._free.append(b)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    # ---- memory accounting -----------------------------------------------------------------------
    def bytes_per_token_per_layer(self) -> int:
        return 2 * self.n_kv_head * self.head_dim * torch.finfo(self.dtype).bits // 8

    def bytes_per_block(self) -> int:
        return self.n_layer * self.block_size * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        """The whole pool, allocated up front."""
        return self.num_blocks * self.bytes_per_block()

    def bytes_in_use(self) -> int:
        return self.num_used * self.bytes_per_block()


class PagedKVCache:
    """B sequences' K/V in blocks of ``pool``; the models' cache protocol (update / advance / pos)."""

    def __init__(self, pool: BlockPool, batch: int):
        if batch < 1:
            raise DodaiError(f"PagedKVCache: batch must be >= 1, got {batch}")
        self.pool, self.batch = pool, batch
        self.n_layer, self.n_kv_head, self.head_dim = pool.n_layer, pool.n_kv_head, pool.head_dim
        self.dtype = pool.dtype
        self.tables: list[list[int]] = [[] for _ in range(batch)]  # row -> physical block ids, in order
        self._table = torch.zeros(batch, 0, dtype=torch.long, device=pool.k[0].device)  # (B, blocks) mirror
        self.pos = 0
        self.key_mask: torch.Tensor | None = None  # (B, pos) bool, kept by the models for padded batches

    def _reserve(self, end: int) -> None:
        """Make every row own enough blocks for positions 0 .. end - 1 (allocation on demand)."""
        need = -(-end // self.pool.block_size)  # ceil
        if need <= self._table.shape[1]:
            return
        for row in self.tables:
            while len(row) < need:
                row.append(self.pool.allocate())
        self._table = torch.tensor(self.tables, dtype=torch.long, device=self._table.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, t, D) at positions pos .. pos + t - 1; return K, V (B, H_kv, pos + t, D)."""
        b, _, t, _ = k.shape
        if b != self.batch:
            raise DodaiError(f"PagedKVCache holds {self.batch} rows, got a batch of {b}")
        end = self.pos + t
        if layer == 0:
            self._reserve(end)
        p = torch.arange(self.pos, end, device=k.device)  # (t,) positions written now
        P = self.pool.block_size
        blk = self._table[:, p // P]  # (B, t) physical block of each new position
        off = p % P  # (t,) slot inside its block
        # pool tensors are (N, H_kv, P, D); indexing [blk, :, off] addresses (B, t, H_kv, D)
        self.pool.k[layer][blk, :, off] = k.transpose(1, 2)
        self.pool.v[layer][blk, :, off] = v.transpose(1, 2)
        return self._gather(self.pool.k[layer], end), self._gather(self.pool.v[layer], end)

    def _gather(self, store: torch.Tensor, end: int) -> torch.Tensor:
        nb = -(-end // self.pool.block_size)
        x = store[self._table[:, :nb]]  # (B, nb, H_kv, P, D)
        b, _, h, p, d = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b, h, nb * p, d)[:, :, :end]  # (B, H_kv, end, D)

    def advance(self, t: int) -> None:
        self.pos += t

    def keep_rows(self, rows: list[int]) -> None:
        """Keep only batch rows ``rows`` (in that order); the other rows' blocks go back to the pool."""
        kept = set(rows)
        for i, blocks in enumerate(self.tables):
            if i not in kept:
                self.pool.free(blocks)
        self.tables = [self.tables[i] for i in rows]
        ix = torch.tensor(rows, dtype=torch.long, device=self._table.device)
        self._table = self._table.index_select(0, ix)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, ix.to(self.key_mask.device))
        self.batch = len(rows)

    def release(self) -> None:
        """Give every block back to the pool (the batch is done); the cache is empty afterwards."""
        for blocks in self.tables:
            self.pool.free(blocks)
        self.tables = [[] for _ in range(self.batch)]
        self._table = self._table[:, :0]
        self.pos, self.key_mask = 0, None

    def reset(self) -> None:
        self.release()

    # ---- memory accounting -----------------------------------------------------------------------
    def bytes_per_token_per_layer(self) -> int:
        return self.pool.bytes_per_token_per_layer()

    def bytes_per_token(self) -> int:
        return self.n_layer * self.bytes_per_token_per_layer()

    def nbytes(self) -> int:
        """Bytes held by this batch's blocks (not the whole pool)."""
        return sum(len(r) for r in self.tables) * self.pool.bytes_per_block()
