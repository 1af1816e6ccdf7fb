"""Mistral = Llama + sliding-window attention (Jiang et al. 2023, "Mistral 7B").

The decoder, weights and HF names are dodai's Llama (:mod:`dodai.models.llama`); only the attention
changes: each query sees the last ``sliding_window`` positions (itself included), prefill uses the
blocked O(T·w) kernel of :mod:`dodai.nn.sparse`, and the cache is a :class:`RollingKVCache` of
``sliding_window`` slots per layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.models.llama import Attention, Llama, LlamaConfig, apply_rope, hf_name_map, load_named
from dodai.nn.attention import attention_reference
from dodai.nn.rolling_cache import RollingKVCache
from dodai.nn.sparse import sliding_window_attention, sliding_window_mask


@dataclass
class MistralConfig(LlamaConfig):
    sliding_window: int = 4096  # W: keys each query sees, itself included
    model_type: str = "mistral"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.sliding_window, int) or self.sliding_window < 1:
            raise DodaiError(f"Mistral config: sliding_window must be a positive integer, "
                             f"got {self.sliding_window!r}")

    @classmethod
    def from_hf_config(cls, hf: dict) -> MistralConfig:
        base = LlamaConfig.from_hf_config(hf)
        sw = hf.get("sliding_window")
        d = asdict(base)
        d.update(model_type="mistral", sliding_window=int(sw) if sw else base.block_size)
        return cls(**d)


class SlidingWindowAttention(Attention):
    """Llama's attention (same parameters and names) with a sliding-window mask."""

    def __init__(self, cfg: MistralConfig):
        super().__init__(cfg)
        self.window = cfg.sliding_window

    def forward(self, x, cos, sin, cache: RollingKVCache | None, layer: int):
        B, T, _ = x.shape
        D, H, Hkv = self.head_dim, self.n_head, self.n_kv_head
        q = self.wq(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.wv(x).view(B, T, Hkv, D).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            past = cache.pos
            if not isinstance(cache, RollingKVCache):
                raise DodaiError("Mistral needs its rolling cache: use model.new_cache(...)")
            k, v, kpos = cache.update(layer, k, v)  # keys in position order with their positions
            qpos = torch.arange(past, past + T, device=x.device)
            mask = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] > qpos[:, None] - self.window)  # (T, S)
            y = attention_reference(q, k, v, mask=mask) if self.eager else \
                F.scaled_dot_product_attention(q, k.repeat_interleave(H // Hkv, 1),
                                               v.repeat_interleave(H // Hkv, 1), attn_mask=mask)
        elif self.eager:
            y = attention_reference(q, k, v, mask=sliding_window_mask(T, T, self.window, device=x.device),
                                    scale=1.0 / math.sqrt(D))
        else:
            y = sliding_window_attention(q, k, v, self.window)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class Mistral(Llama):
    """A Mistral causal LM (dodai's causal-LM protocol); ``new_cache`` returns a rolling cache."""

    def __init__(self, config: MistralConfig):
        super().__init__(config)
        for blk in self.layers:
            blk.attn = SlidingWindowAttention(config)
        self.apply(self._init_weights)

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> RollingKVCache:
        """``max_len`` is accepted for the protocol; the buffer holds ``sliding_window`` slots."""
        c = self.config
        w = self.tok_embeddings.weight
        return RollingKVCache(c.n_layer, batch, c.n_kv_head, c.sliding_window, c.head_dim, dtype or w.dtype,
                              w.device)

    @classmethod
    def from_hf_state_dict(cls, config: MistralConfig, sd: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float32) -> Mistral:
        model = cls(config)
        load_named(model, {ours: sd.get(hf) for hf, ours in hf_name_map(config).items()}, dtype, "HF")
        return model
