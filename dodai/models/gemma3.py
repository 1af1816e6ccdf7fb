"""Gemma 3 (Gemma Team, 2025, "Gemma 3 Technical Report"), text decoder: a configuration of dodai's one decoder.

What makes it Gemma (every item a field of :class:`dodai.models.decoder.DecoderConfig`; HF's
``Gemma3ForCausalLM`` is the reference the tests compare against):

- **interleaved local and global attention**: five sliding-window layers (each query sees the last W
  positions, W = 512 in the 270M model) per global layer; layer i is global iff (i + 1) % 6 == 0 (the pattern
  of HF's config and of llama.cpp). Only the global layers' KV cache grows with the context; the local ones
  keep W positions (:class:`dodai.nn.rolling_cache.RollingKVCache`).
- **two RoPE bases**: θ = 10⁶ on global layers (with linear scaling when the file has it), 10⁴ on local ones.
- **QK-norm** (Dehghani et al. 2023): an RMSNorm over each head's query and key before RoPE, replacing Gemma
  2's attention-logit soft-capping; queries are scaled by ``query_pre_attn_scalar^-1/2``.
- **sandwich norms**: RMSNorm before *and after* attention and the FFN (the "post" norms act on the branch
  output, before the residual add).
- **Gemma's RMSNorm** scales by ``1 + g`` (g initialised at 0) and applies the scale in fp32 before casting.
- **GeGLU FFN**: ``W_down (GELU_tanh(W_gate x) ⊙ W_up x)``.
- **embeddings scaled by √C**, the factor rounded to the model dtype first (HF does this; in bf16 √640 =
  25.30 becomes 25.25), and the output head tied to the embedding (262,144 × 640 in the 270M model).
- optional final-logit soft-capping ``cap · tanh(logits / cap)`` when the file sets one (Gemma 2 did). Gemma 2's
  attention-logit soft-capping is not applied: HF's ``Gemma3Attention`` and llama.cpp's gemma3 graph ignore
  ``attn_logit_softcapping`` (the decoder keeps the knob, ``attn_softcap``, for Gemma 2-style configs).

GGUF specifics (llama.cpp's converter): the norm weights are stored as ``1 + g`` (dodai subtracts 1, as HF's
loader does, and the norm adds it back in fp32); Q/K rows are *not* permuted (Gemma uses the half-split
"NeoX" RoPE in llama.cpp too); the file names neither the layer pattern, the local RoPE base nor the query
scalar, so llama.cpp's values are used: pattern 6, local base 10⁴, scalar = head size (n_embd / n_head for the
62-layer 27B model). ``gemma3.rope.freq_base_swa`` and ``gemma3.attention.sliding_window_pattern`` are read
when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dodai.errors import DodaiError
from dodai.models.decoder import (
    GLOBAL,
    LOCAL,
    MAX_CONTEXT,
    Decoder,
    DecoderConfig,
    GGUFMeta,
    decoder_from_gguf_file,
    load_named,
    read_gguf_common,
    rope_scaling_from_gguf,
)

SLIDING_PATTERN = 6  # one global layer in six (HF Gemma3TextConfig's default, llama.cpp's hparams)
LOCAL_ROPE_BASE = 10_000.0


def layer_types_for(n_layer: int, pattern: int = SLIDING_PATTERN) -> tuple[str, ...]:
    """Layer i is global iff (i + 1) % pattern == 0, local otherwise."""
    return tuple(GLOBAL if (i + 1) % pattern == 0 else LOCAL for i in range(n_layer))


@dataclass
class Gemma3Config(DecoderConfig):
    """Gemma 3's configuration of the decoder; the defaults are Gemma 3 270M's."""

    vocab_size: int = 262144
    block_size: int = 32768
    n_layer: int = 18
    n_embd: int = 640
    n_head: int = 4
    n_kv_head: int = 1
    head_dim: int = 256
    ffn_hidden: int = 2048
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    model_type: str = "gemma3"
    act: str = "gelu_tanh"
    norm_offset: float = 1.0
    post_norms: bool = True
    qk_norm: bool = True
    embed_scale: bool = True
    sliding_window: int = 512
    layer_types: tuple = ()  # () -> the 5 local : 1 global pattern over n_layer
    rope_theta_local: float = LOCAL_ROPE_BASE
    attn_scale: float = 256.0

    def __post_init__(self):
        if not self.layer_types and isinstance(self.n_layer, int) and not isinstance(self.n_layer, bool) \
                and 0 < self.n_layer <= 4096:
            self.layer_types = layer_types_for(self.n_layer)
        super().__post_init__()

    @classmethod
    def from_gguf_metadata(cls, md: dict) -> Gemma3Config:
        """From GGUF metadata (``general.architecture`` = gemma3, keys ``gemma3.*``), every value validated."""
        arch = md.get("general.architecture")
        if arch != "gemma3":
            raise DodaiError(f"GGUF architecture {arch!r} is not Gemma 3")
        common = read_gguf_common(md, arch)
        g = GGUFMeta(md, arch)
        n_layer = common["n_layer"]
        window = g.int("attention.sliding_window", 1, MAX_CONTEXT)
        pattern = md.get(f"{arch}.attention.sliding_window_pattern")
        if pattern is None:
            types = layer_types_for(n_layer)
        elif isinstance(pattern, list):
            if len(pattern) != n_layer or not all(isinstance(x, bool) for x in pattern):
                raise DodaiError(f"GGUF metadata {arch}.attention.sliding_window_pattern must list one bool per "
                                 f"layer ({n_layer})")
            types = tuple(LOCAL if x else GLOBAL for x in pattern)
        else:
            types = layer_types_for(n_layer, g.int("attention.sliding_window_pattern", 1, n_layer + 1))
        # llama.cpp: query scale 1/sqrt(head size), except the 62-layer 27B model: 1/sqrt(n_embd / n_head)
        scalar = common["n_embd"] // common["n_head"] if n_layer == 62 else common["head_dim"]
        return cls(
            **common, layer_types=types, sliding_window=window,
            rope_theta_local=g.float("rope.freq_base_swa", 0.0, 1e12, default=LOCAL_ROPE_BASE),
            rope_scaling=rope_scaling_from_gguf(md, arch), attn_scale=float(scalar),
            final_softcap=g.float("final_logit_softcapping", 0.0, 1e6, default=0.0, lo_open=False),
        )

    @classmethod
    def from_hf_config(cls, hf: dict) -> Gemma3Config:
        """From an HF ``Gemma3TextConfig`` dict (``model_type`` gemma3_text)."""
        if not isinstance(hf, dict):
            raise DodaiError("HF config.json is not a JSON object")
        try:
            if hf.get("use_bidirectional_attention"):
                raise DodaiError("HF Gemma 3 config: bidirectional attention is not supported")
            if hf.get("attention_bias"):
                raise DodaiError("HF Gemma 3 config: attention biases are not supported")
            act = hf.get("hidden_activation", "gelu_pytorch_tanh")
            if act != "gelu_pytorch_tanh":
                raise DodaiError(f"HF Gemma 3 config: hidden_activation {act!r} is not supported")
            n_layer = int(hf["num_hidden_layers"])
            rope = hf.get("rope_parameters") or {}
            full = rope.get("full_attention") or {}
            local = rope.get("sliding_attention") or {}
            scaling = 1.0
            kind = full.get("rope_type", "default")
            if kind == "linear":
                scaling = float(full["factor"])
            elif kind != "default" or local.get("rope_type", "default") != "default":
                raise DodaiError(f"HF Gemma 3 config: RoPE type {kind!r} is not supported (default, linear)")
            types = hf.get("layer_types")
            types = tuple(LOCAL if t == "sliding_attention" else GLOBAL for t in types) if types else \
                layer_types_for(n_layer, int(hf.get("sliding_window_pattern", SLIDING_PATTERN)))
            return cls(
                vocab_size=int(hf["vocab_size"]), block_size=int(hf.get("max_position_embeddings", 32768)),
                n_layer=n_layer, n_embd=int(hf["hidden_size"]), n_head=int(hf["num_attention_heads"]),
                n_kv_head=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
                head_dim=int(hf.get("head_dim") or 256), ffn_hidden=int(hf["intermediate_size"]),
                rope_theta=float(full.get("rope_theta", hf.get("rope_theta", 1_000_000.0))),
                rope_theta_local=float(local.get("rope_theta", hf.get("rope_local_base_freq", LOCAL_ROPE_BASE))),
                rope_scaling=scaling, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                tie_embeddings=bool(hf.get("tie_word_embeddings", True)), layer_types=types,
                sliding_window=int(hf.get("sliding_window") or 4096),
                attn_scale=float(hf.get("query_pre_attn_scalar", 256)),
                # HF's Gemma3Attention never applies attn_logit_softcapping (Gemma 3 replaced it by QK-norm)
                final_softcap=float(hf.get("final_logit_softcapping") or 0.0),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DodaiError(f"HF config is not a usable Gemma 3 config: {type(e).__name__} {e}") from None


class Gemma3(Decoder):
    """A Gemma 3 causal LM (dodai's causal-LM protocol); ``new_cache`` keeps W slots for local layers."""

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        return {hf: sd[ours] for hf, ours in hf_name_map(self.config).items()}

    @classmethod
    def from_hf_state_dict(cls, config: Gemma3Config, sd: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float32) -> Gemma3:
        model = cls(config)
        load_named(model, {ours: sd.get(hf) for hf, ours in hf_name_map(config).items()}, dtype, "HF")
        return model


_LAYER_NAMES = [  # (HF suffix, GGUF suffix, dodai suffix)
    ("input_layernorm.weight", "attn_norm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight", "attn.wq.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight", "attn.wk.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight", "attn.wv.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight", "attn.wo.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight", "attn.q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight", "attn.k_norm.weight"),
    ("post_attention_layernorm.weight", "post_attention_norm.weight", "attn_post_norm.weight"),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight", "ffn.w_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight", "ffn.w_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight", "ffn.w_down.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight", "ffn_post_norm.weight"),
]


def hf_name_map(config: Gemma3Config) -> dict[str, str]:
    """HF Gemma3ForCausalLM parameter name -> dodai name."""
    m = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        m["lm_head.weight"] = "output.weight"
    for i in range(config.n_layer):
        m.update({f"model.layers.{i}.{h}": f"layers.{i}.{o}" for h, _, o in _LAYER_NAMES})
    return m


def gguf_name_map(config: Gemma3Config) -> dict[str, str]:
    """llama.cpp GGUF tensor name -> dodai name (``output.weight`` only when untied)."""
    m = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        m["output.weight"] = "output.weight"
    for i in range(config.n_layer):
        m.update({f"blk.{i}.{g}": f"layers.{i}.{o}" for _, g, o in _LAYER_NAMES})
    return m


def _from_gguf_norm(name: str, t: torch.Tensor) -> torch.Tensor:
    """llama.cpp stores Gemma's norm weights as 1 + g; dodai keeps g (the norm adds the 1 in fp32)."""
    return t - 1.0 if name.endswith("norm.weight") else t


def gemma3_from_gguf_file(gf, dtype: torch.dtype = torch.float32) -> Gemma3:
    """Build a Gemma3 from an open GGUFFile: metadata validated, tensor table checked before allocation,
    then one dequantized tensor at a time."""
    config = Gemma3Config.from_gguf_metadata(gf.metadata)
    config.tie_embeddings = "output.weight" not in gf.tensors
    return decoder_from_gguf_file(gf, Gemma3, config, gguf_name_map(config), _from_gguf_norm, dtype)


def load_gemma3_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """A Gemma 3 GGUF file -> (Gemma3 in ``dtype``, tokenizer)."""
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf
    from dodai.weights.gguf import GGUFFile

    with GGUFFile(path) as gf:
        model = gemma3_from_gguf_file(gf, dtype)
        tok = tokenizer_from_gguf(path, gguf=gf)
    return model, tok

