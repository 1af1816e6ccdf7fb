"""The written contracts between dodai's causal language models, their KV caches and the runtime.

Notation: B batch rows, T new tokens in this forward, S = past + T keys, V vocabulary, C width,
H_kv key/value heads, D head dim.

Every decoder-only model that :mod:`dodai.generate.engine` drives (GPT, Llama/Mistral/Gemma, the VLM's
image-prefixed view) follows :class:`CausalLM`; every cache (contiguous :class:`dodai.nn.kv_cache.KVCache`,
rolling, int8-quantised, paged, and the runtime's ragged step views) follows :class:`KVCache`. The runtime
never probes signatures or attributes: it calls exactly what is written here.

**forward.** ``model(idx, targets=None, cache=None, last_only=False, attention_mask=None, position_ids=None)``
returns ``(logits, loss)``:

- ``idx`` (B, T) long token ids. With a ``cache``, ``idx`` holds only the *new* tokens, at positions
  ``cache.pos .. cache.pos + T - 1``; the model calls ``cache.update(layer, k, v)`` once per layer and
  ``cache.advance(T)`` once at the end.
- ``last_only=True`` returns logits for the last position only, (B, 1, V): decoding needs nothing else, and a
  prefill skips the V×C output matmul on every other position. Ignored when ``targets`` is given.
- Left-padded batches (:mod:`dodai.nn.padding`): ``attention_mask`` (B, T) or (B, past + T), True for real
  tokens; the model keeps the growing key mask in ``cache.key_mask``, so later steps pass no mask, and
  derives per-row positions as ``cumsum(mask) - 1`` unless ``position_ids`` (B, T) are given. A cache may
  also arrive with a ``key_mask`` already set (the runtime's ragged views): the model treats it exactly as
  if earlier forwards had left it there. A model that cannot attend over padding raises DodaiError.
- ``logits`` (B, T, V) (or (B, 1, V)); ``loss`` is the mean cross-entropy over targets != -100, else None.

**new_cache(batch, max_len, dtype=None)** returns an empty cache for ``batch`` rows of up to ``max_len``
positions, on the model's device.

**config** has ``block_size`` (the context window), ``vocab_size`` and ``n_layer``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


class ModelConfig(Protocol):
    block_size: int
    vocab_size: int


@runtime_checkable
class KVCache(Protocol):
    """Keys and values of the positions already seen, per layer."""

    pos: int  # positions filled so far in every row's frame (the next token's column)
    key_mask: torch.Tensor | None  # (B, pos) bool for padded rows, None when every key is real

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H_kv, T, D) at columns pos .. pos + T - 1; return all keys/values (B, H_kv, S, D)."""
        ...

    def advance(self, t: int) -> None:
        """Mark ``t`` more columns as filled; called once per forward, after every layer's update."""
        ...


@runtime_checkable
class CausalLM(Protocol):
    config: ModelConfig

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                 last_only: bool = False, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        ...

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        ...
