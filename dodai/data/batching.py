"""Token streams and random-window batches (nanoGPT's sampler, made resumable and shardable).

Notation: B batch (global, across all ranks), T block size (context length).

- :func:`to_tensor` stores a token stream as a 1-D tensor in the smallest integer type that holds
  the vocabulary (uint16 up to 65,535 ids, else int32) — 2 bytes per token like nanoGPT's ``.bin``.
- :func:`get_batch` draws B random start offsets with an explicit ``torch.Generator`` (not the
  global RNG), so the generator's state *is* the data position: saving it in the checkpoint and
  restoring it makes a resumed run see exactly the batches an uninterrupted run would.
- Data parallelism: every rank draws the same B offsets from identically seeded generators and
  keeps its contiguous slice ``[rank*B/W, (rank+1)*B/W)``. The union over ranks is exactly the
  single-process batch, so W processes reproduce one process's gradient (up to float summation order).
"""

from __future__ import annotations

import torch

from dodai.errors import DodaiError


def to_tensor(ids, vocab_size: int | None = None) -> torch.Tensor:
    """A 1-D integer tensor of token ids (uint16 when the vocabulary fits, else int32)."""
    t = torch.as_tensor(ids)
    if t.dim() != 1:
        raise DodaiError(f"token ids must be 1-D, got shape {tuple(t.shape)}")
    top = vocab_size if vocab_size is not None else (int(t.max()) + 1 if t.numel() else 0)
    dtype = torch.uint16 if top <= 65535 else torch.int32
    return t.to(dtype)


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def get_batch(
    data: torch.Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (B/W, T) int64 inputs and y (B/W, T) next-token targets for this rank."""
    n = data.numel()
    if n < block_size + 1:
        raise DodaiError(f"only {n} tokens, need at least block size + 1 = {block_size + 1}")
    if batch_size % world_size:
        raise DodaiError(f"batch size {batch_size} is not divisible by the {world_size} processes")
    # Draw the global batch's offsets on every rank (same generator state) -> identical across ranks.
    ix = torch.randint(n - block_size, (batch_size,), generator=generator)
    per = batch_size // world_size
    ix = ix[rank * per : (rank + 1) * per]
    offs = ix[:, None] + torch.arange(block_size + 1)  # (B/W, T+1) gather positions
    win = data[offs].long()  # one gather instead of a Python loop of slices
    x, y = win[:, :-1], win[:, 1:]
    if torch.device(device).type != "cpu":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x.contiguous(), y.contiguous()
