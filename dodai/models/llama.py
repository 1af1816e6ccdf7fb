"""The Llama-family decoder (R6.2): RMSNorm, RoPE, SwiGLU, grouped-query attention.

Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023) and "Llama 2" (2023);
the same architecture carries SmolLM2 (Allal et al., 2025), which is what dodai loads for real.

Notation: B batch, T time (tokens this forward), S keys attended (cache.pos + T), C = n_embd,
H query heads, H_kv key/value heads (GQA: H_kv divides H; H_kv = 1 is MQA), D head dim, V vocab.

One block, pre-norm (Xiong et al., 2020)::

    x = x + W_o · Attn(RoPE(W_q · RMSNorm(x)), RoPE(W_k · RMSNorm(x)), W_v · RMSNorm(x))
    x = x + W_down · (SiLU(W_gate · RMSNorm(x)) ⊙ W_up · RMSNorm(x))

- **RMSNorm** (Zhang & Sennrich, 2019): ``y = g ⊙ x / sqrt(mean(x²) + eps)``, computed in fp32 and
  cast back (as HF does), so bf16 weights do not lose the normaliser's precision.
- **RoPE** (Su et al., 2021, RoFormer), *half-split* convention (HF ``rotate_half``): dimension i is
  paired with i + D/2, rotated by angle ``pos · θ^(-2i/D)``. Original Meta checkpoints and llama.cpp
  pair *adjacent* dimensions (2i, 2i+1) instead; the two are the same function once the rows of
  W_q and W_k are permuted, which is exactly what llama.cpp's converter does (see
  :func:`unpermute_qk`). We keep HF's convention so HF state dicts load as they are.
- **SwiGLU** (Shazeer, 2020, "GLU Variants Improve Transformer").
- **GQA** (Ainslie et al., 2023): query head h reads key/value head ``h // (H / H_kv)``.
- Tied input/output embeddings when the checkpoint has no separate output matrix (SmolLM2).

The blocks are dodai's one configurable decoder (:mod:`dodai.models.decoder`, shared with Mistral and
Gemma 3): this module is Llama's configuration of it, its HF / GGUF names and its loaders. The RoPE angles
are computed in fp32 exactly as HF computes them (``compute_dtype=torch.float32`` of
:func:`dodai.nn.position.rope_cos_sin`), which keeps dodai's SmolLM2 logits equal to HF's on the same weights.

Two paths compute the same function (see :mod:`dodai.models.decoder`): the **reference**
(``set_eager(True)``: three projections, explicit softmax) and the **fast path** for decoding (fused
W_q|W_k|W_v and W_gate|W_up matmuls over views of one weight, SDPA, the fused RMSNorm kernel in fp32; the same
fusion for ``dodai.quant`` int8/int4 projections). tests/test_llama_fast.py checks fast == reference.
Profiling a SmolLM2 decode step on this CPU shows ~85 % of its time in the matmuls, which read every
weight once per token: the weight format, not Python overhead, sets the decode speed.

Loading: GGUF (dequantized to fp32, or bf16 on request) through dodai's GGUF reader, HF
``config.json`` + ``model.safetensors``, or an HF-named state dict (:meth:`Llama.from_hf_state_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.models.decoder import (  # noqa: F401  (re-exported: the blocks' historical home)
    Attention,
    AttnMasks,
    Block,
    Decoder,
    DecoderConfig,
    GatedFFN,
    GGUFMeta,
    _Fused,
    decoder_from_gguf_file,
    fused_projection,
    load_named,
    read_gguf_common,
    rope_scaling_from_gguf,
)
from dodai.nn.norm import RMSNorm  # noqa: F401
from dodai.nn.position import apply_rope  # noqa: F401
from dodai.nn.position import rope_cos_sin as _rope_cos_sin

SwiGLU = GatedFFN  # Llama's FFN is the gated FFN with SiLU


@dataclass
class LlamaConfig(DecoderConfig):
    """Llama's configuration of :class:`dodai.models.decoder.DecoderConfig` (its defaults: SmolLM2-135M)."""

    model_type: str = "llama"

    # ---- conversions -------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: dict) -> LlamaConfig:
        """From an HF ``LlamaConfig`` dict (config.json)."""
        if not isinstance(hf, dict):
            raise DodaiError("HF config.json is not a JSON object")
        try:
            rope = hf.get("rope_parameters") or {}
            if (rope.get("rope_type") or "default") != "default" or hf.get("rope_scaling"):
                raise DodaiError("HF config: only plain RoPE is supported (no rope_scaling)")
            if hf.get("attention_bias") or hf.get("mlp_bias"):
                raise DodaiError("HF config: attention/MLP biases are not supported")
            n_head = int(hf["num_attention_heads"])
            return cls(
                vocab_size=int(hf["vocab_size"]), block_size=int(hf.get("max_position_embeddings", 2048)),
                n_layer=int(hf["num_hidden_layers"]), n_embd=int(hf["hidden_size"]), n_head=n_head,
                n_kv_head=int(hf.get("num_key_value_heads") or n_head),
                head_dim=int(hf.get("head_dim") or hf["hidden_size"] // n_head),
                ffn_hidden=int(hf["intermediate_size"]),
                rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise DodaiError(f"HF config.json is not a usable Llama config: {type(e).__name__} {e}") from None

    def to_hf_config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": self.vocab_size,
            "max_position_embeddings": self.block_size, "num_hidden_layers": self.n_layer,
            "hidden_size": self.n_embd, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head, "head_dim": self.head_dim,
            "intermediate_size": self.ffn_hidden, "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps, "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        }

    @classmethod
    def from_gguf_metadata(cls, md: dict) -> LlamaConfig:
        """From GGUF metadata (``general.architecture`` = llama, keys ``llama.*``), every value validated."""
        arch = md.get("general.architecture")
        if arch != "llama":
            raise DodaiError(f"GGUF architecture {arch!r} is not a Llama")
        if "llama.expert_count" in md:
            raise DodaiError("GGUF llama variant not supported yet (mixture of experts)")
        common = read_gguf_common(md, "llama")
        return cls(**common, rope_scaling=rope_scaling_from_gguf(md, "llama"))


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, D) for ``positions`` (T,), angles in fp32 as HF computes them: the shared
    :func:`dodai.nn.position.rope_cos_sin` with ``compute_dtype=float32`` (kept for this signature's callers)."""
    return _rope_cos_sin(positions=positions, d=head_dim, theta=theta, compute_dtype=torch.float32)


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (GGUF → HF half-split RoPE layout).

    llama.cpp applies RoPE to adjacent pairs (2i, 2i+1) of each head; HF to (i, i + D/2). Its
    converter (convert_hf_to_gguf.py) therefore reorders the output rows of W_q and W_k, per head::

        gguf = hf.reshape(n_head, 2, D/2, C).swapaxes(1, 2).reshape(n_head·D, C)

    i.e. HF row (h, half, i) goes to GGUF row (h, i, half): row h·D + half·D/2 + i lands at
    h·D + 2i + half. The inverse reads the GGUF rows as (n_head, D/2, 2) and swaps back::

        hf = gguf.reshape(n_head, D/2, 2, C).swapaxes(1, 2).reshape(n_head·D, C)

    ``n_head`` is the query head count for W_q and the key/value head count for W_k.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise DodaiError(f"cannot un-permute a {tuple(w.shape)} Q/K weight over {n_head} heads")
    d = rows // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF half-split layout → llama.cpp's interleaved layout (the converter's permutation)."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- the model ---------------------------------------------------------------------------------

class Llama(Decoder):
    """A Llama-family causal LM following dodai's causal-LM protocol (see dodai.models.protocol)."""

    # ---- HF state dict --------------------------------------------------------------------------
    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        return {hf: sd[ours] for hf, ours in hf_name_map(self.config).items()}

    @classmethod
    def from_hf_state_dict(cls, config: LlamaConfig, sd: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float32) -> Llama:
        model = cls(config)
        load_named(model, {ours: sd.get(hf) for hf, ours in hf_name_map(config).items()}, dtype, "HF")
        return model


def hf_name_map(config: LlamaConfig) -> dict[str, str]:
    """HF LlamaForCausalLM parameter name -> dodai name."""
    m = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        m["lm_head.weight"] = "output.weight"
    for i in range(config.n_layer):
        h, o = f"model.layers.{i}.", f"layers.{i}."
        m.update({
            h + "input_layernorm.weight": o + "attn_norm.weight",
            h + "self_attn.q_proj.weight": o + "attn.wq.weight",
            h + "self_attn.k_proj.weight": o + "attn.wk.weight",
            h + "self_attn.v_proj.weight": o + "attn.wv.weight",
            h + "self_attn.o_proj.weight": o + "attn.wo.weight",
            h + "post_attention_layernorm.weight": o + "ffn_norm.weight",
            h + "mlp.gate_proj.weight": o + "ffn.w_gate.weight",
            h + "mlp.up_proj.weight": o + "ffn.w_up.weight",
            h + "mlp.down_proj.weight": o + "ffn.w_down.weight",
        })
    return m


def gguf_name_map(config: DecoderConfig) -> dict[str, str]:
    """llama.cpp GGUF tensor name -> dodai name (``output.weight`` only when untied)."""
    m = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        m["output.weight"] = "output.weight"
    for i in range(config.n_layer):
        g, o = f"blk.{i}.", f"layers.{i}."
        m.update({
            g + "attn_norm.weight": o + "attn_norm.weight", g + "attn_q.weight": o + "attn.wq.weight",
            g + "attn_k.weight": o + "attn.wk.weight", g + "attn_v.weight": o + "attn.wv.weight",
            g + "attn_output.weight": o + "attn.wo.weight", g + "ffn_norm.weight": o + "ffn_norm.weight",
            g + "ffn_gate.weight": o + "ffn.w_gate.weight", g + "ffn_up.weight": o + "ffn.w_up.weight",
            g + "ffn_down.weight": o + "ffn.w_down.weight",
        })
    return m


def load_llama_dir(folder: str | Path, dtype: torch.dtype = torch.float32) -> Llama:
    """A folder with config.json and model.safetensors, written by :meth:`Llama.save` (dodai names)
    or by HF ``save_pretrained`` (HF config and names)."""
    from dodai.weights.safetensors import load_file

    folder = Path(folder)
    cfg = read_user_json(folder / "config.json", what="model config")
    if not isinstance(cfg, dict):
        raise DodaiError(f"{folder / 'config.json'} is not a JSON object")
    sd = load_file(folder / "model.safetensors")
    if "num_hidden_layers" in cfg:  # an HF checkpoint
        config = LlamaConfig.from_hf_config(cfg)
        return Llama.from_hf_state_dict(config, sd, dtype)
    config = LlamaConfig.from_dict(cfg)
    model = Llama(config)
    load_named(model, {k: v for k, v in sd.items()}, dtype, str(folder))
    return model


def load_llama_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """A llama.cpp GGUF file -> (Llama in ``dtype``, tokenizer). Quantized tensors are dequantized by
    dodai's GGUF reader; W_q/W_k rows are un-permuted back to the half-split RoPE layout."""
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf
    from dodai.weights.gguf import GGUFFile

    with GGUFFile(path) as gf:
        model = llama_from_gguf_file(gf, dtype)
        tok = tokenizer_from_gguf(path, gguf=gf)
    return model, tok


def read_llama_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> Llama:
    """The model only (no tokenizer) from a GGUF file."""
    from dodai.weights.gguf import GGUFFile

    with GGUFFile(path) as gf:
        return llama_from_gguf_file(gf, dtype)


def llama_from_gguf_file(gf, dtype: torch.dtype = torch.float32) -> Llama:
    """Build a Llama from an open :class:`dodai.weights.gguf.GGUFFile`, one tensor at a time (peak
    memory: the model plus one dequantized fp32 tensor). Metadata and the tensor table are validated
    before anything is allocated."""
    config = LlamaConfig.from_gguf_metadata(gf.metadata)
    names = set(gf.tensors)
    config.tie_embeddings = "output.weight" not in names
    if "rope_freqs.weight" in names:
        raise DodaiError("GGUF file has rope_freqs.weight (scaled RoPE, e.g. Llama 3.1): not supported yet")

    def transform(name, t):
        if name.endswith("attn_q.weight"):
            return unpermute_qk(t, config.n_head)
        if name.endswith("attn_k.weight"):
            return unpermute_qk(t, config.n_kv_head)
        return t

    return decoder_from_gguf_file(gf, Llama, config, gguf_name_map(config), transform, dtype)
