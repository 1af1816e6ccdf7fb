"""A fused decoding step for the Llama family with int4 weights: every layer of one token in one native call.

Notation: B rows, C = n_embd, H query heads, H_kv key/value heads, D head dim, F FFN width, L layers.

Why: at one token per step, SmolLM2-135M's 30 layers are ~40 small PyTorch ops each (norms, projections,
RoPE, cache writes, SDPA, SwiGLU, residuals). Each op costs microseconds of dispatch whatever its size, so
on a CPU about half of an int4 decoding step was per-op overhead (profiled with torch.profiler). Here the
whole stack runs in C (:func:`dodai.quant.native` ``dodai_llama_step``), in the order the reference
computes it:

    h = RMSNorm_attn(x);  q|k|v = W_qkv h (int4);  RoPE on q, k (half-split);  cache[pos] = k, v
    a = softmax(q kᵀ / √D) v over positions 0..pos (GQA: query head i reads kv head i // (H/H_kv))
    x = x + W_o a;  h = RMSNorm_ffn(x);  g|u = W_gate|up h;  x = x + W_down (silu(g) ⊙ u)

The final norm and the output head stay in PyTorch (one call each). The int4 projections are the same
fused (q|k|v, gate|up) packed weights the PyTorch fast path uses, so no weight is copied.

When it runs (:meth:`dodai.models.decoder.Decoder.forward` asks :func:`fused_step`): no autograd, one new
token per row, a plain :class:`dodai.nn.kv_cache.KVCache` in fp32 with no padding mask and no explicit
positions, the model not switched to the reference path (``set_eager``), every layer's projections
``Int4Linear`` on dodai's native kernels, and a configuration with nothing this step does not implement
(SiLU, plain RMSNorm without offset, no post/QK norms, no embedding scale, no window, no softcap, one RoPE
kind). Anything else takes the PyTorch path. The arithmetic is fp32 with the same int4 weights; it differs
from the PyTorch path in rounding (summation order), which tests/test_fast_decode.py bounds, and greedy
tokens agree.
"""

from __future__ import annotations

import ctypes

import torch

from dodai.nn.kv_cache import KVCache


class _Plan:
    """The per-layer pointers of one model's fused weights (kept alive here) and a signature to notice when
    the model's weights were swapped (a reload, a quantize, ``to()``)."""

    def __init__(self, model, sig, bn, group, tensors, arrays):
        self.sig, self.bn, self.group = sig, bn, group
        c = model.config
        self.a8_ok = bool(bn) and group % 32 == 0 and all(
            n % 32 == 0 for n in (c.n_embd, c.n_head * c.head_dim, c.ffn_hidden))
        self.tensors = tensors  # keeps every pointed-to tensor alive
        self.arrays = arrays  # name -> ctypes array of L pointers

    def __deepcopy__(self, memo):
        return None  # a copy has its own weights: it plans its own step when it first decodes

    def __reduce__(self):
        return (_none, ())


def _none():
    return None


_ATTN, _FFN = ("wq", "wk", "wv", "wo"), ("w_gate", "w_up", "w_down")


def _signature(model) -> tuple:
    """The storage of every tensor the plan points at (a swapped or re-allocated one changes it). Read through
    the modules' own dicts: this runs every step, and ``nn.Module.__getattr__`` is slow."""
    out = []
    for blk in model._modules["layers"]._modules.values():
        mods = blk._modules
        attn, ffn = mods["attn"]._modules, mods["ffn"]._modules
        for m in [attn[n] for n in _ATTN] + [ffn[n] for n in _FFN]:
            p = m._buffers.get("packed")
            out.append(p.data_ptr() if p is not None else id(m))
        out.append(mods["attn_norm"]._parameters["weight"].data_ptr())
        out.append(mods["ffn_norm"]._parameters["weight"].data_ptr())
    return tuple(out)


def _config_ok(model) -> bool:
    c = model.config
    return (c.act == "silu" and not c.norm_offset and not c.post_norms and not c.qk_norm and not c.embed_scale
            and not c.sliding_window and not c.attn_softcap and not c.final_softcap
            and len({c.rope_kind(i) for i in range(c.n_layer)}) == 1 and c.n_head % c.n_kv_head == 0
            and c.head_dim % 2 == 0)


def _build(model, fused_projection) -> _Plan | None:
    """``fused_projection``: the decoder's own (passed in, so this module never imports the decoder)."""
    from dodai.quant import native
    from dodai.quant.int4 import Int4Linear

    if not _config_ok(model) or not native.available():
        return None
    L, c = len(model.layers), model.config
    names = ("attn_norm", "qkv_p", "qkv_s", "o_p", "o_s", "ffn_norm", "gu_p", "gu_s", "down_p", "down_s")
    cols: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    bns, groups = set(), set()
    for blk in model.layers:
        a, f = blk.attn, blk.ffn
        gated = all(hasattr(f, n) for n in ("w_gate", "w_up", "w_down"))  # the gated FFN (SwiGLU)
        if not gated or a.eager or f.eager or a.q_norm is not None or a.window:
            return None
        mods = (a.wq, a.wk, a.wv, a.wo, f.w_gate, f.w_up, f.w_down)
        if not all(type(m) is Int4Linear and m.bias is None for m in mods):
            return None
        qkv = fused_projection(a, "_qkv", (a.wq, a.wk, a.wv))
        gu = fused_projection(f, "_gate_up", (f.w_gate, f.w_up))
        if qkv is None or gu is None or not qkv.group:
            return None
        for w in (blk.attn_norm.weight, blk.ffn_norm.weight):
            if w.dtype != torch.float32 or not w.is_contiguous():
                return None
        for p, s in ((qkv.weight, qkv.scale), (a.wo.packed, a.wo.scales_zeros), (gu.weight, gu.scale),
                     (f.w_down.packed, f.w_down.scales_zeros)):
            bns.add(native.int4_tile(p.shape[0], p.shape[1] * 2))
            if not (p.is_contiguous() and s.is_contiguous()):
                return None
        groups |= {qkv.group, a.wo.group, gu.group, f.w_down.group}
        cols["attn_norm"].append(blk.attn_norm.weight)
        cols["ffn_norm"].append(blk.ffn_norm.weight)
        cols["qkv_p"].append(qkv.weight)
        cols["qkv_s"].append(qkv.scale)
        cols["o_p"].append(a.wo.packed)
        cols["o_s"].append(a.wo.scales_zeros)
        cols["gu_p"].append(gu.weight)
        cols["gu_s"].append(gu.scale)
        cols["down_p"].append(f.w_down.packed)
        cols["down_s"].append(f.w_down.scales_zeros)
    if len(bns) != 1 or 0 in bns or len(groups) != 1 or next(iter(groups)) % 8:
        return None
    if c.n_embd % 8 or c.ffn_hidden % 8:
        return None
    arrays = {n: (ctypes.c_void_p * L)(*[t.data_ptr() for t in ts]) for n, ts in cols.items()}
    return _Plan(model, _signature(model), bns.pop(), groups.pop(), cols, arrays)


ACTIVATION_MODES = ("int8", "fp32")


def activations(model) -> str:
    """How the fused step feeds its int4 projections: "int8" (W4A8, the default) or "fp32"; set with
    :func:`set_activations`."""
    return model.__dict__.get("_fused_activations", "int8")


def set_activations(model, mode: str):
    """Choose the fused step's activations for ``model``: "int8" rounds each projection's input to 8 bits in
    blocks of 32 (integer dot products, several times faster on AVX2); "fp32" keeps them exact (the arithmetic of
    the per-layer PyTorch path up to summation order). Returns the model."""
    if mode not in ACTIVATION_MODES:
        from dodai.errors import DodaiError

        raise DodaiError(f"fused-step activations must be one of {', '.join(ACTIVATION_MODES)}, got {mode!r}")
    model.__dict__["_fused_activations"] = mode
    return model


def _dense_layout(cache, B: int):
    """(keys, values, table, first, row_slots, slot_elems, head_elems, pos) of a plain :class:`KVCache`, or None."""
    if (type(cache) is not KVCache or cache.dtype != torch.float32 or cache.key_mask is not None
            or cache.batch != B or cache.pos + 1 > cache.max_len):
        return None
    D = cache.head_dim
    # slot(b, j) = b·H_kv·max_len + j in units of D floats; head g is max_len·D floats further
    return (cache.k, cache.v, None, None, cache.n_kv_head * cache.max_len, D, cache.max_len * D, cache.pos)


def fused_step(model, x: torch.Tensor, cache, cos: torch.Tensor, sin: torch.Tensor,
               fused_projection=None) -> torch.Tensor | None:
    """Run every layer of ``model`` on the embeddings x (B, 1, C) of one new token per row, writing the
    cache; returns the hidden states (B, 1, C) before the final norm, or None when this step cannot serve
    the call (then nothing was written). ``cos``/``sin``: the RoPE rows of the new position, fp32, either one
    row (1, D) shared by every row or one per row (B, 1, 1, D) (rows at different positions).

    The cache is a plain fp32 :class:`KVCache` without padding, or any cache with a ``fused_layout(B)`` method
    (the paged server cache, :class:`dodai.generate.paged`) returning (keys, values, table (B, S + 1) int64
    slot ids, first (B,) int32 first real column, 0, slot_elems, head_elems, S): row b attends to the slots
    table[b, first[b]:], the last of which receives the new key and value."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[1] != 1:
        return None
    if not model.layers or model.layers[0].attn.eager:  # set_eager(True): the reference path
        return None
    B = x.shape[0]
    if type(cache) is KVCache:
        layout = _dense_layout(cache, B)
    else:
        get = getattr(cache, "fused_layout", None)
        layout = get(B) if get is not None else None
    if layout is None:
        return None
    try:
        sig = _signature(model)
    except (KeyError, AttributeError):  # blocks of another shape (no attn/ffn projections by these names)
        return None
    plan = model.__dict__.get("_fast_decode_plan")
    if plan is None or plan.sig != sig:
        plan = _build(model, fused_projection) if fused_projection is not None else None
        if plan is None:
            plan = _Plan(model, sig, 0, 0, None, None)  # remembered: this model cannot take the step
        model.__dict__["_fast_decode_plan"] = plan
    if not plan.bn:
        return None
    from dodai.quant import native

    c = model.config
    ks, vs, table, first, row_slots, slot_elems, head_elems, S = layout
    if not all(t.is_contiguous() and t.dtype == torch.float32 for t in list(ks) + list(vs)):
        return None
    L = len(model.layers)
    kc = (ctypes.c_void_p * L)(*[t.data_ptr() for t in ks])
    vc = (ctypes.c_void_p * L)(*[t.data_ptr() for t in vs])
    h = x.reshape(B, c.n_embd).float().contiguous().clone()  # (B, C), updated in place
    D = c.head_dim
    if cos.numel() == D:
        cs_stride = 0
    elif cos.numel() == B * D:
        cs_stride = D
    else:
        return None
    cos = cos.reshape(-1).float().contiguous()
    sin = sin.reshape(-1).float().contiguous()
    if table is not None:
        if table.dtype != torch.int64 or tuple(table.shape) != (B, S + 1) or first.dtype != torch.int32:
            return None
        table, first = table.contiguous(), first.contiguous()
    scale = c.attn_scale ** -0.5 if c.attn_scale else c.head_dim ** -0.5
    a = plan.arrays
    a8 = int(activations(model) == "int8" and plan.a8_ok)
    native._lib.dodai_llama_step(
        L, B, c.n_embd, c.n_head, c.n_kv_head, c.head_dim, c.ffn_hidden, plan.group, plan.bn, a8, float(c.norm_eps),
        h.data_ptr(), a["attn_norm"], a["qkv_p"], a["qkv_s"], a["o_p"], a["o_s"], a["ffn_norm"], a["gu_p"],
        a["gu_s"], a["down_p"], a["down_s"], kc, vc, None if table is None else table.data_ptr(), S + 1,
        None if first is None else first.data_ptr(), row_slots, slot_elems, head_elems, cos.data_ptr(),
        sin.data_ptr(), cs_stride, float(scale))
    return h.view(B, 1, c.n_embd)
