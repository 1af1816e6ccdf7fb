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

The blocks are written out in this file rather than imported from dodai.nn: the RoPE angles here are
computed in fp32 exactly as HF computes them (dodai.nn.position uses float64), which makes dodai's
SmolLM2 logits bit-identical to HF's on the same weights (max |Δ| = 0 in tests/test_llama_smollm2.py).

Two paths compute the same function. The **reference** (``set_eager(True)``): three projections
W_q, W_k, W_v, RoPE on q and k separately, explicit softmax attention, RMSNorm written out. The
**fast path** (default), for decoding: when autograd is off, W_q|W_k|W_v and W_gate|W_up each run as
one matmul over a concatenated weight whose row blocks *are* the separate modules' weights (views, no
second copy; see :class:`_Fused`), RoPE rotates the q and k heads in one call, attention is SDPA
(no mask for a single new token), and RMSNorm is PyTorch's fused kernel in fp32 (bit-identical here).
The same fusion applies to ``dodai.quant`` int8 projections. tests/test_llama_fast.py checks fast ==
reference. Profiling a SmolLM2 decode step on this CPU shows ~85 % of its time in the matmuls, which
read every weight once per token: the weight format, not Python overhead, sets the decode speed.

Loading: GGUF (dequantized to fp32, or bf16 on request) through dodai's GGUF reader, HF
``config.json`` + ``model.safetensors``, or an HF-named state dict (:meth:`Llama.from_hf_state_dict`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.nn.kv_cache import KVCache
from dodai.nn.padding import padding_bias, resolve_padding


@dataclass
class LlamaConfig:
    vocab_size: int = 49152  # V: rows of the embedding / output matrix
    block_size: int = 2048  # max context the model was trained for (HF max_position_embeddings)
    n_layer: int = 30  # transformer blocks
    n_embd: int = 576  # C: residual stream width (HF hidden_size)
    n_head: int = 9  # H: query heads
    n_kv_head: int = 3  # H_kv: key/value heads (GQA); == n_head is plain MHA, 1 is MQA
    head_dim: int = 0  # D; 0 means n_embd // n_head
    ffn_hidden: int = 1536  # SwiGLU inner width (HF intermediate_size)
    rope_theta: float = 10000.0  # RoPE base θ
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # output matrix == embedding matrix
    model_type: str = "llama"  # written into config.json so load_model can dispatch

    def __post_init__(self):
        if self.head_dim == 0:
            self.head_dim = self.n_embd // max(self.n_head, 1)
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "n_kv_head", "head_dim",
                     "ffn_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DodaiError(f"Llama config: {name} must be a positive integer, got {v!r}")
        if self.n_head % self.n_kv_head:
            raise DodaiError(f"Llama config: n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim % 2:
            raise DodaiError(f"Llama config: RoPE needs an even head_dim, got {self.head_dim}")
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            raise DodaiError("Llama config: rope_theta and norm_eps must be positive")

    # ---- conversions -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> LlamaConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, hf: dict) -> LlamaConfig:
        """From an HF ``LlamaConfig`` dict (config.json)."""
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
        except (KeyError, TypeError, ValueError) as e:
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
        """From GGUF metadata (``general.architecture`` = llama, keys ``llama.*``)."""
        arch = md.get("general.architecture")
        if arch != "llama":
            raise DodaiError(f"GGUF architecture {arch!r} is not supported yet (only 'llama')")

        def get(key, default=None):
            v = md.get(f"llama.{key}", default)
            if v is None:
                raise DodaiError(f"GGUF metadata lacks llama.{key}")
            return v

        if md.get("llama.rope.scaling.type", "none") not in ("none", None) or "llama.expert_count" in md:
            raise DodaiError("GGUF llama variant not supported yet (RoPE scaling or mixture of experts)")
        tokens = md.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if tokens is not None else get("vocab_size")
        n_head = int(get("attention.head_count"))
        n_embd = int(get("embedding_length"))
        try:
            return cls(
                vocab_size=int(vocab), block_size=int(get("context_length")), n_layer=int(get("block_count")),
                n_embd=n_embd, n_head=n_head, n_kv_head=int(get("attention.head_count_kv", n_head)),
                head_dim=int(get("rope.dimension_count", n_embd // n_head)),
                ffn_hidden=int(get("feed_forward_length")), rope_theta=float(get("rope.freq_base", 10000.0)),
                norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            )
        except (TypeError, ValueError) as e:
            raise DodaiError(f"GGUF llama metadata has a bad value: {e}") from None


# ---- building blocks ---------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """y = g ⊙ x / sqrt(mean(x², last dim) + eps), in fp32 then cast back (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # one fused kernel instead of six ops; the same formula, and bit-identical to the lines below
            # in fp32 (tests/test_llama_fast.py)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.reference(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The formula written out (HF's LlamaRMSNorm): the oracle, and the path for bf16."""
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, D) for the half-split convention: angle[t, i] = pos_t · θ^(-2i/D), i < D/2,
    duplicated over both halves. Computed in fp32 whatever the model dtype."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # (D/2,)
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by cos/sin (T, D): x·cos + rotate_half(x)·sin, rotate_half(a, b) = (-b, a)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


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


class _Fused:
    """One matmul for several projections of the same input (W_q|W_k|W_v, W_gate|W_up), for inference.

    The separate ``nn.Linear`` modules stay (their names, state dict, LoRA / int8 module replacement
    and training are unchanged); their weights are re-pointed as row slices (views) of one
    concatenated matrix, so ``F.linear(x, W_cat)`` computes all the projections at once without a second
    copy of the weights. ``ptrs`` are the data pointers of the module weights when the fusion was made:
    anything that swaps a weight's storage (``model.to(dtype)``, ``deepcopy``, ``load_state_dict(assign=
    True)``) makes them differ, and the fusion is made again on the next inference forward. In-place
    updates (``copy_``, an optimizer step) write into the shared storage and keep it valid.
    """

    __slots__ = ("ptrs", "weight", "scale", "group")

    def __init__(self, ptrs, weight, scale=None, group=0):
        self.ptrs, self.weight, self.scale, self.group = ptrs, weight, scale, group

    def __call__(self, x):
        if self.scale is None:
            return F.linear(x, self.weight)
        if self.group:  # 4-bit: packed codes + (scale, zero) pairs
            from dodai.quant.int4 import int4_linear_fast

            return int4_linear_fast(x, self.weight, self.scale, self.group)
        from dodai.quant.int8 import int8_linear_fast

        return int8_linear_fast(x, self.weight, self.scale)

    def __deepcopy__(self, memo):
        return None  # a copy has its own weights: it fuses them itself when it first runs

    def __reduce__(self):
        return (_none, ())


def _none():
    return None


def fused_projection(owner: nn.Module, attr: str, mods: tuple[nn.Module, ...]) -> _Fused | None:
    """The fused matmul for ``mods`` (made or re-made on demand and kept as ``owner.<attr>``), or None
    when they cannot be fused: autograd is on (training keeps the separate modules so that gradients
    reach their parameters), or the modules are not all bias-free ``nn.Linear`` in one dtype, or all
    fast ``dodai.quant`` ``Int8Linear`` (e.g. a LoRA wrapper replaced one)."""
    if torch.is_grad_enabled():
        return None
    if all(type(m) is nn.Linear and m.bias is None for m in mods):
        ts, int8 = [m.weight for m in mods], False
    elif all(type(m).__name__ == "Int8Linear" and getattr(m, "fast", False) and m.bias is None for m in mods):
        ts, int8 = [m.qweight for m in mods], True
    elif (all(type(m).__name__ == "Int4Linear" and m.bias is None for m in mods)
          and len({m.group for m in mods}) == 1 and all(m.out_features % 64 == 0 for m in mods)):
        # The kernel packs rows in tiles (of 64 rows when N is a multiple of 64), so whole tiles stack;
        # tests/test_quant_int4.py checks the fused matmul against the separate ones.
        return _fused_int4(owner, attr, mods)
    else:
        owner.__dict__[attr] = None
        return None
    ptrs = tuple(t.data_ptr() for t in ts)
    hit = owner.__dict__.get(attr)
    if hit is not None and hit.ptrs == ptrs:
        return hit
    if len({(t.dtype, t.device, t.shape[1:]) for t in ts}) != 1:
        owner.__dict__[attr] = None
        return None
    # (Re)make it outside inference mode: the concatenated weights are ordinary tensors that training
    # may use (and update in place) later.
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([t.detach() for t in ts])  # (ΣN, K)
        scale = torch.cat([m.scale_bf16 for m in mods]) if int8 else None  # (ΣN,)
        off = 0
        for m, t in zip(mods, ts):
            n = t.shape[0]
            if int8:
                m.qweight, m.scale_bf16 = weight[off:off + n], scale[off:off + n]
            else:
                m.weight.data = weight[off:off + n]
            off += n
    hit = _Fused(tuple(t.data_ptr() for t in (m.qweight if int8 else m.weight for m in mods)), weight, scale)
    owner.__dict__[attr] = hit
    return hit


def _fused_int4(owner: nn.Module, attr: str, mods: tuple[nn.Module, ...]) -> _Fused:
    """:func:`fused_projection` for ``Int4Linear`` modules: packed rows stacked (the modules' ``packed`` become
    row views of it), their (scale, zero) pairs concatenated into a copy (1/4 of the packed bytes)."""
    ptrs = tuple(m.packed.data_ptr() for m in mods)
    hit = owner.__dict__.get(attr)
    if hit is not None and hit.ptrs == ptrs:
        return hit
    with torch.inference_mode(False), torch.no_grad():
        packed = torch.cat([m.packed for m in mods])  # (ΣN, K/2)
        sz = torch.cat([m.scales_zeros for m in mods], dim=1).contiguous()  # (K/g, ΣN, 2)
        off = 0
        for m in mods:
            n = m.packed.shape[0]
            m.packed = packed[off:off + n]
            off += n
    hit = _Fused(tuple(m.packed.data_ptr() for m in mods), packed, sz, mods[0].group)
    owner.__dict__[attr] = hit
    return hit


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE and an optional KV cache."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wq = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.eager = False  # True: the plain reference path (explicit softmax), the oracle in tests

    def forward(self, x, cos, sin, cache: KVCache | None, layer: int, pad_bias: torch.Tensor | None = None):
        """x (B, T, C); cos/sin (T, D) or per row (B, 1, T, D); pad_bias (B, 1, 1, S) additive or None."""
        B, T, _ = x.shape
        D, H, Hkv = self.head_dim, self.n_head, self.n_kv_head
        qkv = None if self.eager else fused_projection(self, "_qkv", (self.wq, self.wk, self.wv))
        if qkv is None:  # the plain path: three projections, RoPE on q and k separately
            q = self.wq(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = self.wk(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
            v = self.wv(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        else:  # one matmul, and RoPE once over the q and k heads together (the same arithmetic)
            y = qkv(x)  # (B, T, (H + 2·H_kv)·D)
            qk = y[..., :(H + Hkv) * D].view(B, T, H + Hkv, D)
            if cos.dim() == 2:
                c, s = cos[:, None], sin[:, None]  # (T, 1, D)
            else:
                c, s = cos.transpose(1, 2), sin.transpose(1, 2)  # per row: (B, T, 1, D)
            qk = apply_rope(qk, c, s)  # (B, T, H + H_kv, D)
            q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, D)
            k = qk[:, :, H:].transpose(1, 2)  # (B, H_kv, T, D)
            v = y[..., (H + Hkv) * D:].view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)  # (B, H_kv, S, D), S = past + T
        if self.eager:
            y = self._eager(q, k, v, past, pad_bias)
        else:
            y = self._fast(q, k, v, past, pad_bias)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H·D)
        return self.wo(y)

    def _eager(self, q, k, v, past, pad_bias=None):
        """softmax(q kᵀ / sqrt(D) + padding bias + causal mask) v, with K/V heads repeated for GQA (the oracle)."""
        rep = self.n_head // self.n_kv_head
        k = k.repeat_interleave(rep, dim=1)  # (B, H, S, D): query head h reads kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        T, S = q.shape[2], k.shape[2]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if pad_bias is not None:
            att = att + pad_bias  # (B, 1, 1, S): padded keys get finfo.min
        # query t sits at absolute position past + t and may see keys 0 .. past + t
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=past)
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(q.dtype)
        return att @ v  # (B, H, T, D)

    def _fast(self, q, k, v, past, pad_bias=None):
        B, H, T, D = q.shape
        Hkv, S = self.n_kv_head, k.shape[2]
        rep = H // Hkv
        if T == 1:
            # Decoding one token: it sees every key (but padding), so no causal mask. Fold the `rep`
            # query heads that share a kv head into the "time" axis, (B, H_kv, rep, D), and attend
            # without copying K/V; the padding bias (B, 1, 1, S) broadcasts over both.
            qg = q.view(B, Hkv, rep, D)
            y = F.scaled_dot_product_attention(qg, k, v, attn_mask=pad_bias)  # (B, H_kv, rep, D)
            return y.view(B, H, 1, D)
        k = k.repeat_interleave(rep, dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(rep, dim=1)
        if past == 0 and pad_bias is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # A chunk after a cached prefix: SDPA's is_causal aligns top-left, we need bottom-right.
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=past)
        if pad_bias is not None:  # one additive mask: padding bias, -inf above the diagonal (B, 1, T, S)
            mask = pad_bias.expand(B, 1, T, S).masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SwiGLU(nn.Module):
    """W_down · (SiLU(W_gate x) ⊙ W_up x) (Shazeer, 2020)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.w_up = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)
        self.eager = False  # True: always the separate projections (the reference)

    def forward(self, x):
        gate_up = None if self.eager else fused_projection(self, "_gate_up", (self.w_gate, self.w_up))
        if gate_up is None:
            return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        gu = gate_up(x)  # (B, T, 2·F): W_gate x and W_up x from one matmul
        n = gu.shape[-1] // 2
        return self.w_down(F.silu(gu[..., :n]) * gu[..., n:])


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)

    def forward(self, x, cos, sin, cache, layer, pad_bias=None):
        h = self.attn_norm(x)
        # the padding bias only when there is one: subclasses' attentions (Mistral) take no padding
        a = self.attn(h, cos, sin, cache, layer) if pad_bias is None else self.attn(h, cos, sin, cache, layer, pad_bias)
        x = x + a
        return x + self.ffn(self.ffn_norm(x))


# ---- the model ---------------------------------------------------------------------------------

class Llama(nn.Module):
    """A Llama-family causal LM following dodai's causal-LM protocol (see dodai.models)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.output = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin table (fp32, grown on demand)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def set_eager(self, eager: bool = True) -> Llama:
        """Switch every layer to the plain reference path (True: separate projections, explicit softmax)
        or the fast path (fused projections when not training, SDPA)."""
        for blk in self.layers:
            blk.attn.eager = eager
            if isinstance(blk.ffn, SwiGLU):
                blk.ffn.eager = eager
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        c = self.config
        w = self.tok_embeddings.weight
        return KVCache(c.n_layer, batch, c.n_kv_head, max_len, c.head_dim, dtype or w.dtype, w.device)

    def _cos_sin(self, start: int, t: int, dtype, device, positions: torch.Tensor | None = None):
        """cos, sin (t, D) for positions start .. start + t - 1, or (B, 1, T, D) for per-row ``positions``."""
        end = start + t if positions is None else max(start + t, int(positions.max()) + 1)
        if self._rope is None or self._rope[0].shape[0] < end or self._rope[0].device != device:
            n = max(end, 256, 2 * (self._rope[0].shape[0] if self._rope is not None else 0))
            # built outside inference mode: a table made during generate() must still serve a later training
            # forward (inference tensors cannot be saved for backward)
            with torch.inference_mode(False):
                cos, sin = rope_cos_sin(torch.arange(n, device=device), self.config.head_dim,
                                        self.config.rope_theta)
            self._rope = (cos, sin)
        cos, sin = self._rope
        if positions is not None:
            return cos[positions][:, None].to(dtype), sin[positions][:, None].to(dtype)  # (B, 1, T, D)
        return cos[start:end].to(dtype), sin[start:end].to(dtype)  # (t, D) each

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, V), loss or None).

        With ``cache``, idx holds only the new tokens (positions cache.pos .. cache.pos + T - 1), and
        the cache is advanced by T. ``last_only`` computes logits for the last position only
        (B, 1, V), which is all that decoding needs and saves the V×C output matmul on a prefill.
        ``targets`` (B, T): cross-entropy over every position, -100 ignored.
        Left-padded batches (see :mod:`dodai.nn.padding`): ``attention_mask`` (B, T) or (B, past + T),
        1 for real tokens; positions restart at 0 on each row's first real token unless ``position_ids``
        (B, T) are given. A cache keeps the mask, so later steps need none.
        """
        if idx.dim() != 2:
            raise DodaiError(f"Llama expects token ids of shape (B, T), got {tuple(idx.shape)}")
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise DodaiError(f"sequence of {start + T} tokens exceeds the context window "
                             f"({self.config.block_size})")
        key_mask, pos = resolve_padding(cache, attention_mask, position_ids, B, T, idx.device)
        if position_ids is not None and pos.numel() and int(pos.min()) < 0:
            raise DodaiError("position ids must be >= 0")
        if key_mask is not None and type(self.layers[0].attn) is not Attention:
            raise DodaiError(f"{type(self).__name__} does not support padded batches yet")
        x = self.tok_embeddings(idx)  # (B, T, C)
        cos, sin = self._cos_sin(start, T, x.dtype, x.device, pos)
        pad_bias = padding_bias(key_mask, x.dtype) if key_mask is not None else None  # (B, 1, 1, S)
        for i, blk in enumerate(self.layers):
            x = blk(x, cos, sin, cache, i, pad_bias)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if last_only and targets is None:
            x = x[:, -1:, :]
        logits = self.output(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    # ---- HF state dict --------------------------------------------------------------------------
    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        out = {}
        for hf, ours in hf_name_map(self.config).items():
            out[hf] = sd[ours]
        return out

    @classmethod
    def from_hf_state_dict(cls, config: LlamaConfig, sd: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.float32) -> Llama:
        model = cls(config)
        load_named(model, {ours: sd.get(hf) for hf, ours in hf_name_map(config).items()}, dtype, "HF")
        return model

    # ---- folders: config.json + model.safetensors ----------------------------------------------
    def save(self, folder: str | Path, tokenizer=None) -> Path:
        """Write config.json (dodai's fields) and model.safetensors (dodai names) into ``folder``."""
        from dodai.io import atomic_write_json
        from dodai.weights.safetensors import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            sd.pop("output.weight", None)
        save_file(sd, folder / "model.safetensors", metadata={"format": "pt", "model": "dodai-llama"})
        atomic_write_json(folder / "config.json", self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save(folder / "tokenizer.json")
        return folder


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


def gguf_name_map(config: LlamaConfig) -> dict[str, str]:
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


def load_named(model: Llama, tensors: dict[str, torch.Tensor | None], dtype: torch.dtype, source: str) -> None:
    """Copy ``{dodai name: tensor}`` into ``model`` with strict name and shape checks, then cast."""
    params = model.state_dict()
    for name, t in tensors.items():
        if t is None:
            raise DodaiError(f"{source} weights lack the tensor for {name}")
        if tuple(t.shape) != tuple(params[name].shape):
            raise DodaiError(f"{source} tensor for {name} has shape {tuple(t.shape)}, "
                             f"expected {tuple(params[name].shape)}")
    missing = set(params) - set(tensors) - ({"output.weight"} if model.config.tie_embeddings else set())
    if missing:
        raise DodaiError(f"{source} weights lack {sorted(missing)[0]} (and {len(missing) - 1} more)")
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    model.to(dtype)
    model.eval()


def load_llama_dir(folder: str | Path, dtype: torch.dtype = torch.float32) -> Llama:
    """A folder with config.json and model.safetensors, written by :meth:`Llama.save` (dodai names)
    or by HF ``save_pretrained`` (HF config and names)."""
    from dodai.weights.safetensors import load_file

    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DodaiError(f"cannot read {folder / 'config.json'}: {e}") from None
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
    memory: the model plus one dequantized fp32 tensor)."""
    config = LlamaConfig.from_gguf_metadata(gf.metadata)
    names = set(gf.tensors)
    config.tie_embeddings = "output.weight" not in names
    if "rope_freqs.weight" in names:
        raise DodaiError("GGUF file has rope_freqs.weight (scaled RoPE, e.g. Llama 3.1): not supported yet")
    with torch.device("meta"):  # no random init of 135M parameters that we overwrite anyway
        model = Llama(config)
    model = model.to_empty(device="cpu").to(dtype)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight  # to_empty() breaks the tie; restore it
    params = model.state_dict()
    wanted = gguf_name_map(config)
    for g, ours in wanted.items():
        if g not in names:
            raise DodaiError(f"GGUF file lacks tensor {g}")
        t = gf.load(g, torch.float32)
        if tuple(t.shape) != tuple(params[ours].shape):
            raise DodaiError(f"GGUF tensor {g} has shape {tuple(t.shape)}, expected {tuple(params[ours].shape)}")
        if g.endswith("attn_q.weight"):
            t = unpermute_qk(t, config.n_head)
        elif g.endswith("attn_k.weight"):
            t = unpermute_qk(t, config.n_kv_head)
        with torch.no_grad():
            params[ours].copy_(t)
        del t
    return model.eval()
