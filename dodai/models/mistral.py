"""Mistral = Llama + sliding-window attention (Jiang et al. 2023, "Mistral 7B").

A configuration of dodai's one decoder (:mod:`dodai.models.decoder`): every layer is *local*, each query
sees the last ``sliding_window`` positions (itself included, HF ``MistralForCausalLM``'s convention). The
weights and HF names are Llama's; prefill of an un-padded chunk longer than the window uses the blocked
O(T·W) kernel of :mod:`dodai.nn.sparse`, and ``new_cache`` returns a
:class:`~dodai.nn.rolling_cache.RollingKVCache` of ``sliding_window`` slots per layer. Left-padded batches
work like Llama's: the window counts positions (real tokens), not cache columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from dodai.errors import DodaiError
from dodai.models.llama import Llama, LlamaConfig, hf_name_map, load_named


@dataclass
class MistralConfig(LlamaConfig):
    sliding_window: int = 4096  # W: keys each query sees, itself included (every layer)
    model_type: str = "mistral"

    def __post_init__(self):
        super().__post_init__()
        if self.sliding_window < 1:
            raise DodaiError(f"Mistral config: sliding_window must be a positive integer, "
                             f"got {self.sliding_window!r}")
        if self.layer_types:
            raise DodaiError("Mistral config: every layer is local; layer_types is not used")

    @classmethod
    def from_hf_config(cls, hf: dict) -> MistralConfig:
        base = LlamaConfig.from_hf_config(hf)
        sw = hf.get("sliding_window")
        d = asdict(base)
        try:
            d.update(model_type="mistral", sliding_window=int(sw) if sw else base.block_size)
        except (TypeError, ValueError):
            raise DodaiError(f"HF config: sliding_window {sw!r} is not an integer") from None
        return cls(**d)


class Mistral(Llama):
    """A Mistral causal LM (dodai's causal-LM protocol); ``new_cache`` returns a rolling cache."""

    @classmethod
    def from_hf_state_dict(cls, config: MistralConfig, sd: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float32) -> Mistral:
        model = cls(config)
        load_named(model, {ours: sd.get(hf) for hf, ours in hf_name_map(config).items()}, dtype, "HF")
        return model
