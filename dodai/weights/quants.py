"""ggml block quantization formats: the type table, vectorized dequantization (plus a plain per-block
reference), and quantization to Q8_0 / Q4_0 / Q4_1.

A quantized ggml tensor is a flat run of fixed-size *blocks*; each block holds ``block_elems``
consecutive values (along the innermost GGUF dimension) in ``block_bytes`` bytes: one or two fp16
scales and packed small integers. The layouts below follow ggml's ``ggml-common.h`` block structs
and the dequantization loops of ``ggml-quants.c`` (ggml / llama.cpp, Georgi Gerganov et al.).

Notation: n = number of blocks, d = block scale (delta), m / dmin = block minimum, q = quant.

=========  ======  =====  =================================================================
type       elems   bytes  value
=========  ======  =====  =================================================================
Q4_0       32      18     d·(q - 8),  q 4-bit; byte j holds q[j] (low nibble), q[j+16] (high)
Q4_1       32      20     d·q + m
Q5_0       32      22     d·(q - 16), q 5-bit: 4 low bits as Q4_0, bit i of uint32 qh is q[i]'s 5th
Q5_1       32      24     d·q + m,    as Q5_0
Q8_0       32      34     d·q,        q int8
Q2_K       256     84     16 sub-blocks of 16: (d·sc)·q - (dmin·m), sc/m 4-bit, q 2-bit
Q3_K       256     110    16 sub-blocks of 16: (d·(sc-32))·(q - 4·!hbit), sc 6-bit, q 2+1-bit
Q4_K       256     144    8 sub-blocks of 32: (d·sc)·q - (dmin·m), sc/m 6-bit packed in 12 bytes
Q5_K       256     176    as Q4_K with a 5th bit per quant from qh
Q6_K       256     210    16 sub-blocks of 16: (d·sc)·(q - 32), sc int8, q 4+2-bit
Q8_K       256     292    d·q, d fp32, q int8 (plus 16 int16 partial sums, unused here)
=========  ======  =====  =================================================================

Every fast path below is whole-tensor numpy array code (no per-block Python loop) and does its
float32 arithmetic in the same order as ggml's C loops, so it matches ggml and the ``gguf`` Python
package bit for bit; the ``reference_block`` functions are the per-block loops written out plainly
(the oracle the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dodai.errors import DodaiError


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: id, name, values per block, bytes per block, and whether we dequantize it."""

    id: int
    name: str
    block_elems: int
    block_bytes: int


# ggml_type ids and block sizes (ggml.h `enum ggml_type`, ggml-common.h block structs). Ids 4, 5
# (Q4_2/Q4_3) and 31-33 (Q4_0_4_4 …) were removed upstream and are rejected as unknown. Q8_1 is
# 36 bytes (two fp16 + 32 int8, ggml-common.h's static_assert); the gguf package's table still says 40
# (the old float32 layout). It is a dot-product scratch type, never stored in model files.
_TYPE_LIST = [
    GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2), GGMLType(2, "Q4_0", 32, 18),
    GGMLType(3, "Q4_1", 32, 20), GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24),
    GGMLType(8, "Q8_0", 32, 34), GGMLType(9, "Q8_1", 32, 36), GGMLType(10, "Q2_K", 256, 84),
    GGMLType(11, "Q3_K", 256, 110), GGMLType(12, "Q4_K", 256, 144), GGMLType(13, "Q5_K", 256, 176),
    GGMLType(14, "Q6_K", 256, 210), GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66),
    GGMLType(17, "IQ2_XS", 256, 74), GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50),
    GGMLType(20, "IQ4_NL", 32, 18), GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82),
    GGMLType(23, "IQ4_XS", 256, 136), GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2),
    GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8), GGMLType(28, "F64", 1, 8),
    GGMLType(29, "IQ1_M", 256, 56), GGMLType(30, "BF16", 1, 2), GGMLType(34, "TQ1_0", 256, 54),
    GGMLType(35, "TQ2_0", 256, 66),
]
GGML_TYPES: dict[int, GGMLType] = {t.id: t for t in _TYPE_LIST}
GGML_TYPE_IDS: dict[str, int] = {t.name: t.id for t in _TYPE_LIST}


def _f16(b: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 columns -> (n, 1) float32 from little-endian fp16."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


# --------------------------------------------------------------------------------------------
# Fast paths: blocks is an (n, block_bytes) uint8 array; each returns (n, block_elems) values.
# --------------------------------------------------------------------------------------------

def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32) uint8: low nibbles are values 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes of a little-endian uint32 -> (n, 32) uint8 with bit i in column i, shifted to 0x10."""
    bits = np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")  # (n, 32), bit i = value i
    return bits << 4


def _q4_0(b):
    d = _f16(b[:, 0:2])
    q = _nibbles(b[:, 2:18]).astype(np.int8) - np.int8(8)
    return q.astype(np.float32) * d


def _q4_1(b):
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    return _nibbles(b[:, 4:20]).astype(np.float32) * d + m


def _q5_0(b):
    d = _f16(b[:, 0:2])
    q = (_nibbles(b[:, 6:22]) | _fifth_bits(b[:, 2:6])).astype(np.int8) - np.int8(16)
    return q.astype(np.float32) * d


def _q5_1(b):
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    q = _nibbles(b[:, 8:24]) | _fifth_bits(b[:, 4:8])
    return q.astype(np.float32) * d + m


def _q8_0(b):
    d = _f16(b[:, 0:2])
    return b[:, 2:34].view(np.int8).astype(np.float32) * d


def _q8_k(b):
    d = np.ascontiguousarray(b[:, 0:4]).view("<f4")
    return b[:, 4:260].view(np.int8).astype(np.float32) * d


def _k_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins, each (n, 8) float32.

    Sub-blocks 0..3 keep their 6 bits in bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep
    their low 4 bits in the nibbles of bytes 8..11 and their top 2 bits in the top bits of bytes 0..7
    (ggml's ``get_scale_min_k4``).
    """
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _q4_k(b):
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales_mins(b[:, 4:16])
    qs = b[:, 16:144].reshape(n, 4, 32)                       # 4 groups of 64 values, 32 bytes each
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)  # sub-block 2j = low, 2j+1 = high
    y = (d * sc)[:, :, None] * q.astype(np.float32) - (dmin * mn)[:, :, None]
    return y.reshape(n, 256)


def _q5_k(b):
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales_mins(b[:, 4:16])
    qh = b[:, 16:48]                                          # (n, 32): bit k of byte l -> sub-block k
    qs = b[:, 48:176].reshape(n, 4, 32)
    low = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1  # (n, 8, 32)
    q = low | (high << 4)
    y = (d * sc)[:, :, None] * q.astype(np.float32) - (dmin * mn)[:, :, None]
    return y.reshape(n, 256)


def _q6_k(b):
    n = b.shape[0]
    ql = b[:, 0:128].reshape(n, 2, 64)                        # two halves of 128 values
    qh = b[:, 128:192].reshape(n, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)       # (n, 16), one per 16 values
    d = _f16(b[:, 208:210])
    la, lb = ql[:, :, :32], ql[:, :, 32:]
    q = np.stack([
        (la & 0x0F) | ((qh & 3) << 4),
        (lb & 0x0F) | (((qh >> 2) & 3) << 4),
        (la >> 4) | (((qh >> 4) & 3) << 4),
        (lb >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=2).astype(np.int8) - np.int8(32)                  # (n, 2, 4, 32) = value order
    y = (d * sc)[:, :, None] * q.reshape(n, 16, 16).astype(np.float32)
    return y.reshape(n, 256)


def _q2_k(b):
    n = b.shape[0]
    s = b[:, 0:16]
    qs = b[:, 16:80].reshape(n, 2, 1, 32)
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])
    dl = d * (s & 0x0F).astype(np.float32)                    # (n, 16)
    ml = dmin * (s >> 4).astype(np.float32)
    q = (qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3  # (n, 2, 4, 32)
    y = dl[:, :, None] * q.reshape(n, 16, 16).astype(np.float32) - ml[:, :, None]
    return y.reshape(n, 256)


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """Q3_K: 12 bytes -> sixteen signed scales (6-bit minus 32), (n, 16) float32.

    Scale i takes its low 4 bits from byte i % 8 (low nibble for i < 8, high nibble otherwise) and its
    top 2 bits from byte 8 + i % 4 at bit position 2·(i // 4).
    """
    low = np.concatenate([s[:, 0:8] & 0x0F, s[:, 0:8] >> 4], axis=1)           # (n, 16)
    hb = s[:, 8:12]
    high = np.concatenate([(hb >> (2 * k)) & 3 for k in range(4)], axis=1)     # (n, 16)
    return ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(np.float32)


def _q3_k(b):
    n = b.shape[0]
    hm = b[:, 0:32]
    qs = b[:, 32:96].reshape(n, 2, 1, 32)
    sc = _q3_k_scales(b[:, 96:108])
    d = _f16(b[:, 108:110])
    q = ((qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).astype(np.int8)
    # hmask bit (4·half + j) of byte l is the 3rd bit; when it is clear the value is lowered by 4.
    hbit = (hm[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1      # (n, 8, 32)
    q = q.reshape(n, 8, 32) - ((1 - hbit.astype(np.int8)) * np.int8(4))
    y = (d * sc)[:, :, None] * q.reshape(n, 16, 16).astype(np.float32)
    return y.reshape(n, 256)


_BLOCK_FAST = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q8_K": _q8_k,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
_PLAIN = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}
DEQUANTIZABLE = frozenset(_BLOCK_FAST) | frozenset(_PLAIN) | {"BF16"}

# Blocks handled per numpy call: bounds the temporaries to a few tens of MB on big tensors.
_CHUNK_BLOCKS = 1 << 16


def dequantize(raw: np.ndarray, type_name: str) -> np.ndarray:
    """Flat uint8 bytes of one tensor -> flat values (float32; F64 -> float64; I* -> their int type).

    ``raw`` must hold a whole number of blocks; the result has ``len(raw) / block_bytes *
    block_elems`` values and never aliases ``raw`` (safe to use after the file is closed).
    """
    if type_name not in DEQUANTIZABLE:
        raise DodaiError(f"GGUF: dequantization of ggml type {type_name} is not implemented in dodai "
                         f"(supported: {', '.join(sorted(DEQUANTIZABLE))})")
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size % t.block_bytes:
        raise DodaiError(f"GGUF: {type_name} data must be flat bytes, a multiple of {t.block_bytes}")
    if type_name in _PLAIN:
        return raw.view(_PLAIN[type_name]).copy()
    if type_name == "BF16":
        # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret (exact).
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    blocks = raw.reshape(-1, t.block_bytes)
    n = blocks.shape[0]
    out = np.empty((n, t.block_elems), dtype=np.float32)
    fn = _BLOCK_FAST[type_name]
    # A hostile or unusual file may hold inf/NaN scales; they give inf/NaN values, as in ggml, silently.
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, n, _CHUNK_BLOCKS):
            out[i:i + _CHUNK_BLOCKS] = fn(blocks[i:i + _CHUNK_BLOCKS])
    return out.reshape(-1)


# --------------------------------------------------------------------------------------------
# Quantization (ggml's reference "quantize_row_*_ref" rules) for the three classic formats, so dodai
# can write quantized GGUF files that llama.cpp reads. Bit-identical to ggml: scales are computed in
# float32 and only then stored as fp16; 1/d is taken from the unrounded d.
# --------------------------------------------------------------------------------------------

def _round_half_away(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: halves go away from zero (numpy's ``round`` goes to even). Exact in float32:
    the fraction a - floor(a) is computed without rounding, so 0.49999997 stays below a half."""
    a = np.abs(v)
    fl = np.floor(a)
    return np.sign(v) * (fl + (a - fl >= np.float32(0.5)))


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) values 0..15 -> (n, 16) bytes: value j in the low nibble, value j+16 in the high one."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def quantize(values: np.ndarray, type_name: str) -> np.ndarray:
    """float values (any shape; the last axis a multiple of 32) -> flat uint8 blocks of Q8_0, Q4_0 or Q4_1.

    Q8_0: d = max|x| / 127, q = roundf(x / d).    Q4_0: d = x[argmax|x|] / -8, q = min(15, trunc(x/d + 8.5)).
    Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - m)/d + 0.5)).
    """
    x = np.asarray(values, dtype=np.float32)
    if type_name not in ("Q8_0", "Q4_0", "Q4_1"):
        raise DodaiError(f"GGUF: quantizing to {type_name} is not implemented (only Q8_0, Q4_0, Q4_1)")
    if x.ndim == 0 or x.shape[-1] % 32:
        raise DodaiError(f"GGUF: {type_name} needs rows whose length is a multiple of 32, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DodaiError(f"GGUF: cannot quantize non-finite values to {type_name}")
    b = x.reshape(-1, 32)
    if type_name == "Q8_0":
        d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
        q = _round_half_away(b * _inverse(d)).astype(np.int8).view(np.uint8)
        return np.concatenate([d.astype("<f2").view(np.uint8), q], axis=1).reshape(-1)
    if type_name == "Q4_0":
        mx = np.take_along_axis(b, np.abs(b).argmax(axis=1, keepdims=True), axis=1)
        d = mx / np.float32(-8)
        q = np.minimum(np.trunc(b * _inverse(d) + np.float32(8.5)), 15).astype(np.uint8)
        return np.concatenate([d.astype("<f2").view(np.uint8), _pack_nibbles(q)], axis=1).reshape(-1)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d = (hi - lo) / np.float32(15)
    q = np.minimum(np.trunc((b - lo) * _inverse(d) + np.float32(0.5)), 15).astype(np.uint8)
    return np.concatenate([d.astype("<f2").view(np.uint8), lo.astype("<f2").view(np.uint8), _pack_nibbles(q)],
                          axis=1).reshape(-1)


# --------------------------------------------------------------------------------------------
# Plain per-block reference (the oracle): one block of bytes -> list of float32 values, written as
# the straightforward loops of ggml-quants.c, with float32 scalars so the rounding is the same.
# --------------------------------------------------------------------------------------------

def _h(block: bytes, i: int) -> np.float32:
    return np.float32(np.frombuffer(block[i:i + 2], dtype="<f2")[0])


def _ref_q4_0(b):
    d = _h(b, 0)
    y = [np.float32(0)] * 32
    for j in range(16):
        y[j] = np.float32((b[2 + j] & 0x0F) - 8) * d
        y[j + 16] = np.float32((b[2 + j] >> 4) - 8) * d
    return y


def _ref_q4_1(b):
    d, m = _h(b, 0), _h(b, 2)
    y = [np.float32(0)] * 32
    for j in range(16):
        y[j] = np.float32(b[4 + j] & 0x0F) * d + m
        y[j + 16] = np.float32(b[4 + j] >> 4) * d + m
    return y


def _ref_q5(b, with_min):
    d = _h(b, 0)
    m = _h(b, 2) if with_min else None
    o = 4 if with_min else 2
    qh = int.from_bytes(b[o:o + 4], "little")
    y = [np.float32(0)] * 32
    for j in range(16):
        x0 = (b[o + 4 + j] & 0x0F) | (((qh >> j) & 1) << 4)
        x1 = (b[o + 4 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)
        if with_min:
            y[j], y[j + 16] = np.float32(x0) * d + m, np.float32(x1) * d + m
        else:
            y[j], y[j + 16] = np.float32(x0 - 16) * d, np.float32(x1 - 16) * d
    return y


def _ref_q8_0(b):
    d = _h(b, 0)
    return [np.float32(int.from_bytes(b[2 + j:3 + j], "little", signed=True)) * d for j in range(32)]


def _ref_q8_k(b):
    d = np.float32(np.frombuffer(b[0:4], dtype="<f4")[0])
    return [np.float32(int.from_bytes(b[4 + j:5 + j], "little", signed=True)) * d for j in range(256)]


def _scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def _ref_q45_k(b, five):
    d, dmin = _h(b, 0), _h(b, 2)
    scales = b[4:16]
    qh = b[16:48] if five else None
    ql = b[48:176] if five else b[16:144]
    y = []
    for g in range(4):                      # 4 groups of 64 values = sub-blocks 2g (low) and 2g+1 (high)
        for half in range(2):
            k = 2 * g + half
            sc, m = _scale_min_k4(k, scales)
            d1, m1 = d * np.float32(sc), dmin * np.float32(m)
            for ll in range(32):
                byte = ql[32 * g + ll]
                q = (byte & 0x0F) if half == 0 else (byte >> 4)
                if five and (qh[ll] >> k) & 1:
                    q += 16
                y.append(d1 * np.float32(q) - m1)
    return y


def _ref_q6_k(b):
    ql, qh, sc, d = b[0:128], b[128:192], np.frombuffer(b[192:208], dtype=np.int8), _h(b, 208)
    y = [np.float32(0)] * 256
    for n in range(2):
        o, qo, so = 128 * n, 64 * n, 32 * n
        for ll in range(32):
            is_ = 8 * n + ll // 16
            q1 = ((ql[qo + ll] & 0x0F) | (((qh[so + ll] >> 0) & 3) << 4)) - 32
            q2 = ((ql[qo + ll + 32] & 0x0F) | (((qh[so + ll] >> 2) & 3) << 4)) - 32
            q3 = ((ql[qo + ll] >> 4) | (((qh[so + ll] >> 4) & 3) << 4)) - 32
            q4 = ((ql[qo + ll + 32] >> 4) | (((qh[so + ll] >> 6) & 3) << 4)) - 32
            y[o + ll] = d * np.float32(sc[is_ + 0]) * np.float32(q1)
            y[o + ll + 32] = d * np.float32(sc[is_ + 2]) * np.float32(q2)
            y[o + ll + 64] = d * np.float32(sc[is_ + 4]) * np.float32(q3)
            y[o + ll + 96] = d * np.float32(sc[is_ + 6]) * np.float32(q4)
    return y


def _ref_q2_k(b):
    scales, qs, d, dmin = b[0:16], b[16:80], _h(b, 80), _h(b, 82)
    y, is_ = [], 0
    for n in range(2):
        q = qs[32 * n:32 * n + 32]
        for j in range(4):
            for part in range(2):
                sc = scales[is_]
                is_ += 1
                dl, ml = d * np.float32(sc & 0x0F), dmin * np.float32(sc >> 4)
                for ll in range(16):
                    y.append(dl * np.float32((q[16 * part + ll] >> (2 * j)) & 3) - ml)
    return y


def _ref_q3_k(b):
    hm, qs, s, d = b[0:32], b[32:96], b[96:108], _h(b, 108)
    scales = []
    for i in range(16):
        low = (s[i % 8] & 0x0F) if i < 8 else (s[i % 8] >> 4)
        high = (s[8 + i % 4] >> (2 * (i // 4))) & 3
        scales.append((low | (high << 4)) - 32)
    y, is_, mbit = [], 0, 0
    for n in range(2):
        q = qs[32 * n:32 * n + 32]
        for j in range(4):
            for part in range(2):
                dl = d * np.float32(scales[is_])
                is_ += 1
                for ll in range(16):
                    i = 16 * part + ll
                    v = ((q[i] >> (2 * j)) & 3) - (0 if (hm[i] >> mbit) & 1 else 4)
                    y.append(dl * np.float32(v))
            mbit += 1
    return y


_BLOCK_REF = {
    "Q4_0": _ref_q4_0, "Q4_1": _ref_q4_1, "Q5_0": lambda b: _ref_q5(b, False),
    "Q5_1": lambda b: _ref_q5(b, True), "Q8_0": _ref_q8_0, "Q8_K": _ref_q8_k,
    "Q2_K": _ref_q2_k, "Q3_K": _ref_q3_k, "Q4_K": lambda b: _ref_q45_k(b, False),
    "Q5_K": lambda b: _ref_q45_k(b, True), "Q6_K": _ref_q6_k,
}


def reference_block(block: bytes, type_name: str) -> np.ndarray:
    """Dequantize one block with the plain loops (slow; for tests). Returns float32 (block_elems,)."""
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    block = bytes(block)
    if type_name not in _BLOCK_REF:
        raise DodaiError(f"GGUF: no reference dequantization for {type_name}")
    if len(block) != t.block_bytes:
        raise DodaiError(f"GGUF: a {type_name} block is {t.block_bytes} bytes, got {len(block)}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array(_BLOCK_REF[type_name](block), dtype=np.float32)


REFERENCE_TYPES = frozenset(_BLOCK_REF)
