"""One configurable decoder for the Llama family: Llama, Mistral and Gemma 3 are configurations of it.

In the manner of litgpt's single ``GPT`` driven by a ``Config`` (Lightning AI): one embedding, one block,
one attention, one RMSNorm (:class:`dodai.nn.norm.RMSNorm`) and one RoPE (:mod:`dodai.nn.position`);
what differs between the families is a field of :class:`DecoderConfig`:

==================  ===================  ======================  ==================================
field               Llama / SmolLM2      Mistral                 Gemma 3
==================  ===================  ======================  ==================================
``act``             silu (SwiGLU)        silu                    gelu_tanh (GeGLU)
``norm_offset``     0: ``g · x̂``         0                       1: ``(1 + g) · x̂``, scaled in fp32
``post_norms``      no                   no                      norm after attention and after FFN
``qk_norm``         no                   no                      RMSNorm on each q and k head
``embed_scale``     no                   no                      embeddings · √C (in the model dtype)
``sliding_window``  0 (all global)       W on every layer        W on the local layers
``layer_types``     ()                   ()                      5 local : 1 global, from the file
``rope_theta_local``                                             10⁴ on local layers, θ on global
``attn_scale``      0: D^-½              0                       query_pre_attn_scalar^-½
``attn_softcap``,   0                    0                       0 (Gemma 2 uses them)
``final_softcap``
==================  ===================  ======================  ==================================

Notation: B batch, T new tokens, S = past + T key columns, S_l ≤ S the columns a layer's cache returns,
C = n_embd, H query heads, H_kv key/value heads (GQA), D head dim, F FFN width, V vocab, W window.

One block (pre-norm, Xiong et al. 2020; Gemma adds the two ``post`` norms, a "sandwich")::

    a = Attn(RMSNorm_attn(x));   a = RMSNorm_attn_post(a) if post_norms;   x = x + a
    f = W_down · (act(W_gate h) ⊙ W_up h), h = RMSNorm_ffn(x);  f = RMSNorm_ffn_post(f) if post_norms;  x = x + f

Attention: ``softmax(q kᵀ · s + mask) v`` with s = attn_scale^-½ (D^-½ by default), q and k rotated by RoPE
(half-split convention, HF ``rotate_half``; see :func:`dodai.nn.position.rope_cos_sin`) after the optional
per-head RMSNorm (Gemma 3's QK-norm, Dehghani et al. 2023). A *local* layer sees the last W positions
(itself included, HF's and llama.cpp's convention); a *global* one every earlier position. GQA (Ainslie
et al. 2023): query head h reads key/value head ``h // (H / H_kv)``.

**Where the window comes from.** The window is counted in key/query *positions*, not cache columns:
with ``cache.key_mask`` (left-padded batches, the runtime's ragged views) a column's position is the number
of real tokens before it (``cumsum(mask) - 1``), so a padded row sees exactly the keys it would see alone, in
any cache. A cache may return only the last S_l columns for a local layer
(:class:`dodai.nn.rolling_cache.RollingKVCache`, so memory grows with W, not the context); the attention
places them as columns S - S_l .. S - 1.

**Two paths, one function.** The reference (``set_eager(True)``): three projections, explicit softmax with
a mask built from positions, RMSNorm written out. The fast path (default): when autograd is off, W_q|W_k|W_v
and W_gate|W_up each run as one matmul over a concatenated weight whose row blocks *are* the separate modules'
weights (:class:`_Fused`; also for ``dodai.quant`` int8/int4 layers), RoPE rotates q and k heads in one
call, attention is SDPA (no mask for one new token; the last W keys only on a local layer; the blocked
O(T·W) kernel of :mod:`dodai.nn.sparse` for a long un-padded local prefill), RMSNorm is PyTorch's fused kernel
in fp32. tests/test_llama_fast.py and tests/test_gemma3.py check fast == reference. Decoding one token with int4
weights on a plain KV cache, a Llama-configured stack runs all its layers in one native call instead
(:mod:`dodai.models.fast_decode`, checked against the reference by tests/test_fast_decode.py).

Loading from GGUF: :func:`read_gguf_config` validates every metadata value it uses (a DodaiError names the
key), then the tensor table is checked against the configuration (names and shapes) *before* the model is
allocated, so a file that claims 1,000 blocks fails on its table instead of allocating them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.nn.kv_cache import KVCache
from dodai.nn.norm import RMSNorm
from dodai.nn.padding import padding_bias, resolve_padding
from dodai.nn.position import apply_rope, rope_cos_sin

ACTIVATIONS = ("silu", "gelu_tanh")
LOCAL, GLOBAL = "local", "global"


@dataclass
class DecoderConfig:
    vocab_size: int = 49152  # V: rows of the embedding / output matrix
    block_size: int = 2048  # max context the model was trained for (HF max_position_embeddings)
    n_layer: int = 30  # transformer blocks
    n_embd: int = 576  # C: residual stream width (HF hidden_size)
    n_head: int = 9  # H: query heads
    n_kv_head: int = 3  # H_kv: key/value heads (GQA); == n_head is plain MHA, 1 is MQA
    head_dim: int = 0  # D; 0 means n_embd // n_head
    ffn_hidden: int = 1536  # F: gated FFN inner width (HF intermediate_size)
    rope_theta: float = 10000.0  # RoPE base θ (of the global layers)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # output matrix == embedding matrix
    model_type: str = "llama"  # written into config.json so load_model can dispatch
    act: str = "silu"  # gated FFN activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU, Gemma)
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + g); Gemma: 1.0, scaled in fp32
    post_norms: bool = False  # RMSNorm after attention and after the FFN, before each residual add (Gemma)
    qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE (Gemma 3)
    embed_scale: bool = False  # multiply token embeddings by sqrt(n_embd), rounded to the model dtype (Gemma)
    sliding_window: int = 0  # W: keys a local layer's query sees, itself included; 0: no local layers
    layer_types: tuple = ()  # per layer "local" / "global"; () = every layer local if sliding_window else global
    rope_theta_local: float = 0.0  # RoPE base of the local layers; 0: rope_theta
    rope_scaling: float = 1.0  # linear RoPE scaling factor of the global layers (positions / factor)
    attn_scale: float = 0.0  # query pre-attention scalar s: scores · s^-1/2; 0: head_dim (plain 1/sqrt(D))
    attn_softcap: float = 0.0  # scores -> cap · tanh(scores / cap) before the mask; 0: off (Gemma 2)
    final_softcap: float = 0.0  # logits -> cap · tanh(logits / cap); 0: off

    def __post_init__(self):
        if self.head_dim == 0 and isinstance(self.n_head, int) and not isinstance(self.n_head, bool) \
                and self.n_head > 0 and isinstance(self.n_embd, int):
            self.head_dim = self.n_embd // self.n_head
        name = type(self).__name__.removesuffix("Config") or "decoder"
        for f in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "n_kv_head", "head_dim", "ffn_hidden"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise DodaiError(f"{name} config: {f} must be a positive integer, got {v!r}")
        if self.n_head % self.n_kv_head:
            raise DodaiError(f"{name} config: n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim % 2:
            raise DodaiError(f"{name} config: RoPE needs an even head_dim, got {self.head_dim}")
        for f in ("rope_theta", "norm_eps", "rope_scaling"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise DodaiError(f"{name} config: {f} must be a positive finite number, got {v!r}")
        for f in ("rope_theta_local", "attn_scale", "attn_softcap", "final_softcap", "norm_offset"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise DodaiError(f"{name} config: {f} must be a finite number >= 0, got {v!r}")
        if self.act not in ACTIVATIONS:
            raise DodaiError(f"{name} config: act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")
        sw = self.sliding_window
        if not isinstance(sw, int) or isinstance(sw, bool) or sw < 0:
            raise DodaiError(f"{name} config: sliding_window must be an integer >= 0, got {sw!r}")
        self.layer_types = tuple(self.layer_types or ())
        if self.layer_types:
            if len(self.layer_types) != self.n_layer or not set(self.layer_types) <= {LOCAL, GLOBAL}:
                raise DodaiError(f"{name} config: layer_types must list '{LOCAL}' or '{GLOBAL}' for each of the "
                                 f"{self.n_layer} layers")
            if LOCAL in self.layer_types and sw == 0:
                raise DodaiError(f"{name} config: local layers need sliding_window >= 1")

    def window(self, layer: int) -> int:
        """W of layer ``layer`` (0: a global layer, every earlier position)."""
        if self.layer_types:
            return self.sliding_window if self.layer_types[layer] == LOCAL else 0
        return self.sliding_window

    def rope_kind(self, layer: int) -> str:
        """Which RoPE table layer ``layer`` uses: local layers may have their own base."""
        return LOCAL if self.window(layer) and self.layer_types and self.rope_theta_local else GLOBAL

    # ---- conversions -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise DodaiError("model config must be a JSON object")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if isinstance(kw.get("layer_types"), list):
            kw["layer_types"] = tuple(kw["layer_types"])
        try:
            return cls(**kw)
        except TypeError as e:
            raise DodaiError(f"model config: {e}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d


# ---- GGUF metadata, validated ------------------------------------------------------------------

# Bounds on what a model file may claim: far above any real model, far below what would exhaust memory.
MAX_LAYERS = 512
MAX_WIDTH = 1 << 16  # n_embd, head_dim · heads
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
MAX_FFN = 1 << 20
MAX_VOCAB = 1 << 22
MAX_CONTEXT = 1 << 24


class GGUFMeta:
    """Typed, bounded reads of ``<arch>.*`` GGUF metadata: each value is checked before it is used, and a
    bad one is a one-line DodaiError naming the key."""

    def __init__(self, md: dict, arch: str):
        self.md, self.arch = md, arch

    def _raw(self, key: str, default):
        full = f"{self.arch}.{key}"
        if full in self.md:
            return full, self.md[full]
        if default is None:
            raise DodaiError(f"GGUF metadata lacks {full}")
        return full, default

    def int(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        full, v = self._raw(key, default)
        if isinstance(v, list):
            raise DodaiError(f"GGUF metadata {full} is a per-layer list; dodai needs one value for every layer")
        if not isinstance(v, int) or isinstance(v, bool):
            raise DodaiError(f"GGUF metadata {full} must be an integer, got {type(v).__name__} {v!r}")
        if not lo <= v <= hi:
            raise DodaiError(f"GGUF metadata {full}={v} is out of range ({lo}..{hi})")
        return v

    def float(self, key: str, lo: float, hi: float, default: float | None = None, lo_open: bool = True) -> float:
        full, v = self._raw(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DodaiError(f"GGUF metadata {full} must be a number, got {type(v).__name__}")
        v = float(v)
        if not math.isfinite(v) or not ((lo < v) if lo_open else (lo <= v)) or v > hi:
            raise DodaiError(f"GGUF metadata {full}={v!r} is out of range ({lo}..{hi})")
        return v

    def has(self, key: str) -> bool:
        return f"{self.arch}.{key}" in self.md


def read_gguf_common(md: dict, arch: str) -> dict:
    """The fields every decoder shares, from ``<arch>.*`` keys, each validated before use."""
    g = GGUFMeta(md, arch)
    n_layer = g.int("block_count", 1, MAX_LAYERS)
    n_embd = g.int("embedding_length", 1, MAX_WIDTH)
    n_head = g.int("attention.head_count", 1, MAX_HEADS)
    n_kv_head = g.int("attention.head_count_kv", 1, n_head, default=n_head)
    if n_head % n_kv_head:
        raise DodaiError(f"GGUF metadata {arch}.attention.head_count={n_head} is not a multiple of "
                         f"head_count_kv={n_kv_head}")
    default_hd = n_embd // n_head if n_embd // n_head > 0 else None
    head_dim = g.int("attention.key_length", 2, MAX_HEAD_DIM, default=default_hd) \
        if g.has("attention.key_length") else g.int("rope.dimension_count", 2, MAX_HEAD_DIM, default=default_hd)
    if g.has("attention.value_length") and g.int("attention.value_length", 1, MAX_HEAD_DIM) != head_dim:
        raise DodaiError(f"GGUF metadata {arch}.attention.value_length differs from key_length: not supported")
    if g.has("rope.dimension_count") and g.int("rope.dimension_count", 2, MAX_HEAD_DIM) != head_dim:
        raise DodaiError(f"GGUF metadata {arch}.rope.dimension_count differs from the head size (partial RoPE): "
                         f"not supported")
    if head_dim % 2:
        raise DodaiError(f"GGUF metadata: head size {head_dim} is odd (RoPE needs an even one)")
    if n_head * head_dim > MAX_WIDTH:
        raise DodaiError(f"GGUF metadata: {n_head} heads of {head_dim} exceed {MAX_WIDTH} features")
    tokens = md.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and tokens:
        vocab = len(tokens)
        if vocab > MAX_VOCAB:
            raise DodaiError(f"GGUF vocabulary of {vocab} tokens is larger than dodai accepts ({MAX_VOCAB})")
    else:
        vocab = g.int("vocab_size", 1, MAX_VOCAB)
    return dict(
        vocab_size=vocab, block_size=g.int("context_length", 1, MAX_CONTEXT), n_layer=n_layer, n_embd=n_embd,
        n_head=n_head, n_kv_head=n_kv_head, head_dim=head_dim, ffn_hidden=g.int("feed_forward_length", 1, MAX_FFN),
        rope_theta=g.float("rope.freq_base", 0.0, 1e12, default=10000.0),
        norm_eps=g.float("attention.layer_norm_rms_epsilon", 0.0, 1.0, default=1e-5),
    )


def rope_scaling_from_gguf(md: dict, arch: str) -> float:
    """The linear RoPE scaling factor of ``<arch>.rope.scaling.*`` (1.0 when absent); other kinds refused."""
    kind = md.get(f"{arch}.rope.scaling.type", "none")
    if kind in ("none", None):
        return 1.0
    if kind != "linear":
        raise DodaiError(f"GGUF {arch} RoPE scaling {kind!r} is not supported yet (only linear)")
    return GGUFMeta(md, arch).float("rope.scaling.factor", 0.0, 1e6)


# ---- fused projections (inference) ---------------------------------------------------------------

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

    __slots__ = ("ptrs", "weight", "scale", "group", "scale32")

    def __init__(self, ptrs, weight, scale=None, group=0, scale32=None):
        self.ptrs, self.weight, self.scale, self.group = ptrs, weight, scale, group
        self.scale32 = scale32  # int8: the bf16 scales as fp32 (dodai's native decode kernel reads them)

    def __call__(self, x):
        if self.scale is None:
            return F.linear(x, self.weight)
        if self.group:  # 4-bit: packed codes + (scale, zero) pairs
            from dodai.quant.int4 import int4_linear_fast

            return int4_linear_fast(x, self.weight, self.scale, self.group)
        from dodai.quant.int8 import int8_linear_fast

        return int8_linear_fast(x, self.weight, self.scale, None, self.scale32)

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
        scale32 = scale.float() if int8 else None  # (ΣN,) the bf16 scales as fp32, for dodai's native kernel
        off = 0
        for m, t in zip(mods, ts):
            n = t.shape[0]
            if int8:
                m.qweight, m.scale_bf16 = weight[off:off + n], scale[off:off + n]
            else:
                m.weight.data = weight[off:off + n]
            off += n
    hit = _Fused(tuple(t.data_ptr() for t in (m.qweight if int8 else m.weight for m in mods)), weight, scale,
                 scale32=scale32)
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


# ---- masks ---------------------------------------------------------------------------------------

class AttnMasks:
    """What the layers of one forward share about padding: the key mask (B, S) of every column (or None),
    its additive bias (B, 1, 1, S), and the columns' positions, built once and only when needed."""

    def __init__(self, key_mask: torch.Tensor | None, past: int, t: int, dtype: torch.dtype):
        self.key_mask, self.past, self.t = key_mask, past, t
        self.pad_bias = padding_bias(key_mask, dtype) if key_mask is not None else None
        self._kpos: torch.Tensor | None = None
        self._holes: bool | None = None

    def key_positions(self) -> torch.Tensor:
        """(B, S) long: each column's position, the number of real tokens before it (padding before a row's
        first token gets -1, padding inside a row the position of the real token before it)."""
        if self._kpos is None:
            self._kpos = self.key_mask.long().cumsum(dim=1) - 1
        return self._kpos

    def has_holes(self) -> bool:
        """Whether some row has padding *after* a real token (not a plain left-padded batch)."""
        if self._holes is None:
            m = self.key_mask
            self._holes = bool((m[:, :-1] & ~m[:, 1:]).any()) if m.shape[1] > 1 else False
        return self._holes


def attention_keep(t: int, s_l: int, past: int, window: int, masks: AttnMasks | None = None,
                   device=None) -> torch.Tensor:
    """Which keys each query may see: (T, S_l) bool, or (B, 1, T, S_l) with a key mask.

    Queries are columns past .. past + T - 1, keys the last S_l columns S - S_l .. S - 1 (S = past + T).
    Causal by column; on a local layer (``window`` > 0) also ``key position > query position - W``, with
    positions from the key mask when there is one (else the columns themselves).
    """
    s = past + t
    qcol = torch.arange(past, s, device=device)[:, None]  # (T, 1)
    kcol = torch.arange(s - s_l, s, device=device)[None, :]  # (1, S_l)
    keep = kcol <= qcol  # (T, S_l)
    key_mask = masks.key_mask if masks is not None else None
    if not window:
        return keep if key_mask is None else keep[None, None].expand(key_mask.shape[0], 1, t, s_l)
    if key_mask is None:
        return keep & (kcol > qcol - window)
    kpos = masks.key_positions()  # (B, S)
    qp = kpos[:, past:s, None]  # (B, T, 1)
    kp = kpos[:, s - s_l:][:, None, :]  # (B, 1, S_l)
    return (keep[None] & (kp > qp - window))[:, None]  # (B, 1, T, S_l)


# ---- the blocks ----------------------------------------------------------------------------------

def make_norm(cfg: DecoderConfig, dim: int) -> RMSNorm:
    return RMSNorm(dim, cfg.norm_eps, offset=cfg.norm_offset, scale_in_fp32=bool(cfg.norm_offset))


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE, optional QK-norm, a per-layer window and any KV cache."""

    def __init__(self, cfg: DecoderConfig, layer: int = 0):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.window = cfg.window(layer)  # 0: global
        self.scale = cfg.attn_scale ** -0.5 if cfg.attn_scale else None  # None: 1/sqrt(D), SDPA's default
        self.softcap = float(cfg.attn_softcap)
        self.wq = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        if cfg.qk_norm:
            self.q_norm = make_norm(cfg, cfg.head_dim)
            self.k_norm = make_norm(cfg, cfg.head_dim)
        else:
            self.q_norm = self.k_norm = None
        self.eager = False  # True: the plain reference path (explicit softmax), the oracle in tests

    def forward(self, x, cos, sin, cache=None, layer: int = 0, masks: AttnMasks | None = None):
        """x (B, T, C); cos/sin (T, D) or per row (B, 1, T, D); masks: padding of this forward (None: none)."""
        B, T, _ = x.shape
        D, H, Hkv = self.head_dim, self.n_head, self.n_kv_head
        qkv = None if self.eager else fused_projection(self, "_qkv", (self.wq, self.wk, self.wv))
        if qkv is None:  # the plain path: three projections, norm and RoPE on q and k separately
            q = self.wq(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = self.wk(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
            v = self.wv(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        else:  # one matmul, and RoPE once over the q and k heads together (the same arithmetic)
            y = qkv(x)  # (B, T, (H + 2·H_kv)·D)
            qk = y[..., :(H + Hkv) * D].view(B, T, H + Hkv, D)
            if self.q_norm is not None:
                qk = torch.cat((self.q_norm(qk[:, :, :H]), self.k_norm(qk[:, :, H:])), dim=2)
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
            k, v = cache.update(layer, k, v)  # (B, H_kv, S_l, D): the last S_l of S = past + T columns
        s_l = k.shape[2]
        if s_l != past + T and (not self.window or s_l > past + T or s_l < T):
            raise DodaiError(f"the KV cache returned {s_l} keys for layer {layer}, expected {past + T}")
        if s_l < past + T and masks is not None and masks.key_mask is not None and masks.has_holes():
            raise DodaiError("a rolling KV cache cannot serve rows with padding between real tokens; "
                             "use a full cache (dodai.nn.kv_cache.KVCache)")
        if self.eager or self.softcap:
            y = self._eager(q, k, v, past, masks)
        else:
            y = self._fast(q, k, v, past, masks)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H·D)
        return self.wo(y)

    def _eager(self, q, k, v, past, masks=None):
        """softmax(q kᵀ · s + padding bias, masked to the visible keys) v, K/V heads repeated for GQA (the oracle)."""
        rep = self.n_head // self.n_kv_head
        k = k.repeat_interleave(rep, dim=1)  # (B, H, S_l, D): query head h reads kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        T, S_l = q.shape[2], k.shape[2]
        att = q @ k.transpose(-2, -1)  # (B, H, T, S_l)
        att = att / math.sqrt(self.head_dim) if self.scale is None else att * self.scale
        if self.softcap:
            att = torch.tanh(att / self.softcap) * self.softcap
        if masks is not None and masks.pad_bias is not None:
            att = att + masks.pad_bias[..., masks.pad_bias.shape[-1] - S_l:]  # (B, 1, 1, S_l): padding -> finfo.min
        keep = attention_keep(T, S_l, past, self.window, masks, q.device)
        att = att.masked_fill(~keep, float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(q.dtype)
        return att @ v  # (B, H, T, D)

    def _fast(self, q, k, v, past, masks=None):
        B, H, T, D = q.shape
        Hkv, S_l = self.n_kv_head, k.shape[2]
        rep, W = H // Hkv, self.window
        padded = masks is not None and masks.pad_bias is not None
        if W and not padded and T == 1 and S_l > W:
            k, v, S_l = k[:, :, -W:], v[:, :, -W:], W  # columns are positions: the last W keys are the window
        mask = None  # additive float or boolean, broadcastable to (B, H, T, S_l); None: see below
        if padded:
            bias = masks.pad_bias[..., masks.pad_bias.shape[-1] - S_l:]  # (B, 1, 1, S_l)
            if T == 1 and not W:
                mask = bias
            else:
                keep = attention_keep(T, S_l, past, W, masks, q.device)  # (B, 1, T, S_l)
                mask = bias.expand(B, 1, T, S_l).masked_fill(~keep, float("-inf"))
        elif W and T > 1 and S_l > W:
            if past == 0 and S_l == T:  # a fresh prefill longer than the window: the blocked O(T·W) kernel
                from dodai.nn.sparse import sliding_window_attention

                return sliding_window_attention(q, k, v, W, scale=self.scale)
            mask = attention_keep(T, S_l, past, W, None, q.device)  # (T, S_l) bool
        if T == 1:
            # Decoding one token: it sees every key given (the window already cut), so no mask but padding.
            # Fold the `rep` query heads that share a kv head into the "time" axis, (B, H_kv, rep, D), and
            # attend without copying K/V; a (B, 1, 1, S_l) mask broadcasts over both.
            qg = q.view(B, Hkv, rep, D)
            y = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, scale=self.scale)  # (B, H_kv, rep, D)
            return y.view(B, H, 1, D)
        k = k.repeat_interleave(rep, dim=1)  # (B, H, S_l, D)
        v = v.repeat_interleave(rep, dim=1)
        if mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        if S_l == T:  # no past keys: SDPA's top-left causal flag is the right mask
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        # A chunk after a cached prefix: SDPA's is_causal aligns top-left, we need bottom-right.
        keep = torch.ones(T, S_l, dtype=torch.bool, device=q.device).tril(diagonal=S_l - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=self.scale)


class GatedFFN(nn.Module):
    """W_down · (act(W_gate x) ⊙ W_up x): SwiGLU with SiLU, GeGLU with tanh-approximated GELU (Shazeer, 2020,
    "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.w_up = nn.Linear(cfg.n_embd, cfg.ffn_hidden, bias=False)
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)
        self.act = cfg.act
        self.eager = False  # True: always the separate projections (the reference)

    def _act(self, x):
        return F.silu(x) if self.act == "silu" else F.gelu(x, approximate="tanh")

    def forward(self, x):
        gate_up = None if self.eager else fused_projection(self, "_gate_up", (self.w_gate, self.w_up))
        if gate_up is None:
            return self.w_down(self._act(self.w_gate(x)) * self.w_up(x))
        gu = gate_up(x)  # (B, T, 2·F): W_gate x and W_up x from one matmul
        n = gu.shape[-1] // 2
        return self.w_down(self._act(gu[..., :n]) * gu[..., n:])


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer: int = 0):
        super().__init__()
        self.attn_norm = make_norm(cfg, cfg.n_embd)
        self.attn = Attention(cfg, layer)
        if cfg.post_norms:
            self.attn_post_norm = make_norm(cfg, cfg.n_embd)
        self.ffn_norm = make_norm(cfg, cfg.n_embd)
        self.ffn = GatedFFN(cfg)
        if cfg.post_norms:
            self.ffn_post_norm = make_norm(cfg, cfg.n_embd)
        self.post_norms = cfg.post_norms

    def forward(self, x, cos, sin, cache=None, layer: int = 0, masks: AttnMasks | None = None):
        a = self.attn(self.attn_norm(x), cos, sin, cache, layer, masks)
        if self.post_norms:
            a = self.attn_post_norm(a)
        x = x + a
        f = self.ffn(self.ffn_norm(x))
        if self.post_norms:
            f = self.ffn_post_norm(f)
        return x + f


# ---- the model -----------------------------------------------------------------------------------

class Decoder(nn.Module):
    """A decoder-only causal LM following dodai's causal-LM protocol (dodai.models.protocol)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = make_norm(config, config.n_embd)
        self.output = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._rope: dict | None = None  # RoPE cos/sin tables per kind (fp32, grown on demand)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def set_eager(self, eager: bool = True):
        """Switch every layer to the plain reference path (True: separate projections, explicit softmax with a
        mask built from positions) or the fast path (fused projections when not training, SDPA, the blocked
        window kernel). RMSNorm is not switched: its fused kernel is bit-identical to the formula in fp32."""
        for blk in self.layers:
            blk.attn.eager = eager
            if isinstance(blk.ffn, GatedFFN):
                blk.ffn.eager = eager
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once

    def layer_windows(self) -> list[int]:
        return [self.config.window(i) for i in range(self.config.n_layer)]

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None):
        """A contiguous :class:`KVCache` when every layer is global; else a :class:`RollingKVCache` whose local
        layers keep W slots each (memory grows with the window, not the context) and global layers max_len."""
        c = self.config
        w = self.tok_embeddings.weight
        windows = self.layer_windows()
        if any(windows):
            from dodai.nn.rolling_cache import RollingKVCache

            return RollingKVCache(c.n_layer, batch, c.n_kv_head, [x or None for x in windows], c.head_dim,
                                  dtype or w.dtype, w.device, max_len=max_len)
        return KVCache(c.n_layer, batch, c.n_kv_head, max_len, c.head_dim, dtype or w.dtype, w.device)

    def _cos_sin(self, start: int, t: int, dtype, device, positions: torch.Tensor | None = None,
                 kind: str = GLOBAL):
        """cos, sin (t, D) for positions start .. start + t - 1, or (B, 1, T, D) for per-row ``positions``,
        of the RoPE ``kind`` (global: θ and the scaling; local: the local base)."""
        end = start + t if positions is None else max(start + t, int(positions.max()) + 1)
        tables = self._rope if isinstance(self._rope, dict) else {}
        have = tables.get(kind)
        if have is None or have[0].shape[0] < end or have[0].device != device:
            n = max(end, 256, 2 * (have[0].shape[0] if have is not None else 0))
            c = self.config
            theta, scaling = (c.rope_theta_local, 1.0) if kind == LOCAL else (c.rope_theta, c.rope_scaling)
            # built outside inference mode: a table made during generate() must still serve a later training
            # forward (inference tensors cannot be saved for backward); fp32 angles, as HF computes them
            with torch.inference_mode(False):
                have = rope_cos_sin(positions=torch.arange(n, device=device), d=c.head_dim, theta=theta,
                                    compute_dtype=torch.float32, scaling=scaling, device=device)
            tables = dict(tables)
            tables[kind] = have
            self._rope = tables
        cos, sin = have
        if positions is not None:
            return cos[positions][:, None].to(dtype), sin[positions][:, None].to(dtype)  # (B, 1, T, D)
        return cos[start:end].to(dtype), sin[start:end].to(dtype)  # (t, D) each

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, C), times sqrt(C) rounded to their dtype when ``embed_scale`` (as HF Gemma)."""
        x = self.tok_embeddings(idx)
        if self.config.embed_scale:
            x = x * torch.tensor(self.config.n_embd ** 0.5).to(x.dtype)
        return x

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None,
                last_only: bool = False, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, V), loss or None).

        With ``cache``, idx holds only the new tokens (positions cache.pos .. cache.pos + T - 1), and
        the cache is advanced by T. ``last_only`` computes logits for the last position only
        (B, 1, V), which is all that decoding needs and saves the V×C output matmul on a prefill.
        ``targets`` (B, T): cross-entropy over every position, -100 ignored.
        Left-padded batches (see :mod:`dodai.nn.padding`): ``attention_mask`` (B, T) or (B, past + T),
        1 for real tokens; positions restart at 0 on each row's first real token unless ``position_ids``
        (B, T) are given (they set RoPE's angles; local windows count real tokens). A cache keeps the mask.
        """
        name = type(self).__name__
        if not torch.is_tensor(idx) or idx.dim() != 2:
            raise DodaiError(f"{name} expects token ids of shape (B, T), got "
                             f"{tuple(idx.shape) if torch.is_tensor(idx) else type(idx).__name__}")
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise DodaiError(f"sequence of {start + T} tokens exceeds the context window "
                             f"({self.config.block_size})")
        key_mask, pos = resolve_padding(cache, attention_mask, position_ids, B, T, idx.device)
        if position_ids is not None and pos.numel() and int(pos.min()) < 0:
            raise DodaiError("position ids must be >= 0")
        x = self.embed(idx)  # (B, T, C)
        kinds = {self.config.rope_kind(i) for i in range(self.config.n_layer)}
        ropes = {kind: self._cos_sin(start, T, x.dtype, x.device, pos, kind) for kind in kinds}
        masks = AttnMasks(key_mask, start, T, x.dtype) if key_mask is not None else None
        fused = None
        if (T == 1 and cache is not None and position_ids is None and not torch.is_grad_enabled()
                and (key_mask is None or hasattr(cache, "fused_layout"))):
            from dodai.models.fast_decode import fused_step

            cos, sin = ropes[self.config.rope_kind(0)]
            fused = fused_step(self, x, cache, cos, sin, fused_projection)  # all layers in one native call, or None
        if fused is not None:
            x = fused
        else:
            for i, blk in enumerate(self.layers):
                cos, sin = ropes[self.config.rope_kind(i)]
                x = blk(x, cos, sin, cache, i, masks)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if last_only and targets is None:
            x = x[:, -1:, :]
        logits = self.output(x)  # (B, T, V)
        if self.config.final_softcap:
            cap = self.config.final_softcap
            logits = torch.tanh(logits / cap) * cap
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

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
        save_file(sd, folder / "model.safetensors",
                  metadata={"format": "pt", "model": f"dodai-{self.config.model_type}"})
        atomic_write_json(folder / "config.json", self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save(folder / "tokenizer.json")
        return folder


# ---- loading -------------------------------------------------------------------------------------

def load_named(model: Decoder, tensors: dict[str, torch.Tensor | None], dtype: torch.dtype, source: str) -> None:
    """Copy ``{dodai name: tensor}`` into ``model`` with strict name and shape checks, then cast."""
    params = model.state_dict()
    for name, t in tensors.items():
        if name not in params:
            raise DodaiError(f"{source} weights hold {name}, which this model does not have")
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


def check_gguf_tensors(gf, wanted: dict[str, str], shapes: dict[str, tuple]) -> None:
    """Every GGUF tensor in ``wanted`` (GGUF name -> dodai name) is in the file's table with the shape the
    configuration implies (``shapes``: dodai name -> shape), checked before anything is allocated."""
    table = gf.tensors
    for g, ours in wanted.items():
        info = table.get(g)
        if info is None:
            raise DodaiError(f"GGUF file lacks tensor {g} (its metadata promises {len(wanted)} tensors that the "
                             f"table does not hold)")
        if tuple(info.shape) != tuple(shapes[ours]):
            raise DodaiError(f"GGUF tensor {g} has shape {tuple(info.shape)}, expected {tuple(shapes[ours])} "
                             f"from the metadata")


def decoder_from_gguf_file(gf, model_cls, config: DecoderConfig, wanted: dict[str, str], transform=None,
                           dtype: torch.dtype = torch.float32):
    """Build ``model_cls(config)`` from an open GGUFFile, one tensor at a time (peak memory: the model plus one
    dequantized fp32 tensor). ``wanted``: GGUF name -> dodai name; ``transform(gguf_name, tensor)`` adapts a
    tensor to dodai's convention (Q/K un-permutation, Gemma's norm offset)."""
    # cheap checks first, from the config alone (building even a meta model of absurd metadata, e.g. 500 blocks,
    # takes minutes of parameter initialisation): the embedding's shape, then every promised tensor's presence
    emb = gf.tensors.get("token_embd.weight")
    if emb is not None and tuple(emb.shape) != (config.vocab_size, config.n_embd):
        raise DodaiError(f"GGUF tensor token_embd.weight has shape {tuple(emb.shape)}, expected "
                         f"{(config.vocab_size, config.n_embd)} from the metadata")
    check_gguf_tensors(gf, {g: ours for g, ours in wanted.items() if g not in gf.tensors}, {})
    with torch.device("meta"):  # shapes only: checked against the table before any memory is allocated
        model = model_cls(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_gguf_tensors(gf, wanted, shapes)
    model = model.to_empty(device="cpu").to(dtype)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight  # to_empty() breaks the tie; restore it
    params = model.state_dict()
    for g, ours in wanted.items():
        t = gf.load(g, torch.float32)
        if transform is not None:
            t = transform(g, t)
        with torch.no_grad():
            params[ours].copy_(t)
        del t
    model._rope = None
    return model.eval()

