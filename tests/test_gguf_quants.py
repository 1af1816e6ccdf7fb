"""ggml dequantization: the vectorized fast path against the plain per-block loops and against the
`gguf` package (the reference, test-only), on random blocks of every supported block type."""

from __future__ import annotations

import numpy as np
import pytest

from dodai.errors import DodaiError
from dodai.weights.quants import (
    DEQUANTIZABLE,
    GGML_TYPE_IDS,
    GGML_TYPES,
    REFERENCE_TYPES,
    dequantize,
    reference_block,
)

# Byte offsets of fp16 scale fields in each block layout (ggml-common.h): they are overwritten with
# finite fp16 values so random blocks do not produce inf/NaN (covered separately below).
_F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def _random_blocks(type_name: str, n: int, seed: int) -> np.ndarray:
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n, t.block_bytes), dtype=np.uint8)
    for off in _F16_FIELDS.get(type_name, []):
        blocks[:, off:off + 2] = rng.normal(0, 0.05, size=(n, 1)).astype("<f2").view(np.uint8)
    if type_name == "Q8_K":
        blocks[:, 0:4] = rng.normal(0, 0.05, size=(n, 1)).astype("<f4").view(np.uint8)
    return blocks.reshape(-1)


@pytest.mark.parametrize("type_name", sorted(REFERENCE_TYPES))
def test_fast_path_equals_plain_reference(type_name):
    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    raw = _random_blocks(type_name, 6, seed=len(type_name) * 7 + t.id)
    fast = dequantize(raw, type_name)
    assert fast.dtype == np.float32 and fast.shape == (6 * t.block_elems,)
    plain = np.concatenate([reference_block(raw[i * t.block_bytes:(i + 1) * t.block_bytes], type_name)
                            for i in range(6)])
    np.testing.assert_array_equal(fast, plain)  # same float32 operations in the same order: bit-exact
    assert np.isfinite(fast).all() and np.abs(fast).max() > 0


@pytest.mark.parametrize("type_name", sorted((REFERENCE_TYPES | {"F16", "BF16", "F32"}) - {"Q8_K"}))
def test_fast_path_equals_gguf_package(type_name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gguf_dequantize

    t = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    if t.block_elems == 1:
        raw = np.random.default_rng(t.id).normal(size=64).astype(
            {"F16": "<f2", "F32": "<f4"}.get(type_name, "<f4"))
        if type_name == "BF16":
            raw = (raw.view("<u4") >> 16).astype("<u2")
        raw = raw.view(np.uint8)
    else:
        raw = _random_blocks(type_name, 300, seed=t.id)
    ref = gguf_dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(-1).astype(np.float32)
    np.testing.assert_array_equal(dequantize(raw, type_name), ref)


def test_known_values_by_hand():
    # Q8_0: d = 0.5, q = -3 … 28 -> y = q / 2.
    q = np.arange(-3, 29, dtype=np.int8)
    block = np.concatenate([np.array([0.5], "<f2").view(np.uint8), q.view(np.uint8)])
    np.testing.assert_array_equal(dequantize(block, "Q8_0"), q.astype(np.float32) / 2)
    # Q4_1: d = 2, m = -1, byte j = (j << 4) | (15 - j): low nibbles 15-j (values 0..15), high j (16..31).
    qs = np.array([(j << 4) | (15 - j) for j in range(16)], dtype=np.uint8)
    block = np.concatenate([np.array([2.0, -1.0], "<f2").view(np.uint8), qs])
    expect = np.concatenate([2.0 * (15 - np.arange(16)) - 1, 2.0 * np.arange(16) - 1]).astype(np.float32)
    np.testing.assert_array_equal(dequantize(block, "Q4_1"), expect)
    # Q4_0: all nibbles 8 -> zero whatever d is.
    block = np.concatenate([np.array([3.0], "<f2").view(np.uint8), np.full(16, 0x88, np.uint8)])
    np.testing.assert_array_equal(dequantize(block, "Q4_0"), np.zeros(32, np.float32))
    # BF16 is the top half of float32: exact.
    x = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)
    np.testing.assert_array_equal(dequantize((x.view("<u4") >> 16).astype("<u2").view(np.uint8), "BF16"), x)


def test_chunking_does_not_change_values(monkeypatch):
    import dodai.weights.quants as quants

    raw = _random_blocks("Q6_K", 37, seed=3)
    whole = dequantize(raw, "Q6_K")
    monkeypatch.setattr(quants, "_CHUNK_BLOCKS", 5)
    np.testing.assert_array_equal(dequantize(raw, "Q6_K"), whole)


def test_nonfinite_scales_do_not_raise_or_warn():
    raw = np.full(34 * 2, 0xFF, np.uint8)  # d = NaN fp16
    with np.errstate(all="raise"):
        y = dequantize(raw, "Q8_0")
    assert np.isnan(y).all()


def test_bad_input_is_a_dodai_error():
    with pytest.raises(DodaiError, match="multiple of 18"):
        dequantize(np.zeros(19, np.uint8), "Q4_0")
    with pytest.raises(DodaiError, match="not implemented"):
        dequantize(np.zeros(66, np.uint8), "IQ2_XXS")
    with pytest.raises(DodaiError, match="34 bytes"):
        reference_block(b"\0" * 33, "Q8_0")
    assert "Q4_1" in DEQUANTIZABLE and "IQ2_XXS" not in DEQUANTIZABLE


# ---- quantization ---------------------------------------------------------------------------------

def _data_for_quantization(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, size=(40, 64)).astype(np.float32)
    x[0] = 0.0                                   # an all-zero block: d = 0, q = 0
    x[1, :32] = 5.0                              # constant blocks
    x[2, :32] = np.linspace(-1, 1, 32)           # exact halves after scaling
    x[3] *= 1e4                                  # large magnitudes
    x[4, :32] = -3.0
    return x


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_quantize_matches_gguf_package(type_name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize as gguf_quantize

    from dodai.weights.quants import quantize

    x = _data_for_quantization(1)
    ours = quantize(x, type_name)
    ref = gguf_quantize(x, gguf.GGMLQuantizationType[type_name]).reshape(-1)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_quantize_round_trip_error_is_within_one_step(type_name):
    from dodai.weights.quants import quantize

    x = _data_for_quantization(2)
    y = dequantize(quantize(x, type_name), type_name).reshape(-1, 32)
    b = x.reshape(-1, 32)
    span = np.abs(b).max(1) * 2 if type_name != "Q4_1" else b.max(1) - b.min(1)
    levels = {"Q8_0": 254, "Q4_0": 16, "Q4_1": 15}[type_name]
    step = span / levels
    err = np.abs(y - b).max(1)
    # Half a step from rounding (a full step at Q4_0's clipped top), plus fp16 rounding of the scale.
    assert (err <= step * 1.01 + np.abs(b).max(1) * 2e-3 + 1e-12).all()
    np.testing.assert_array_equal(y[0], np.zeros(32, np.float32))


def test_quantize_rejects_bad_input():
    from dodai.weights.quants import quantize

    with pytest.raises(DodaiError, match="multiple of 32"):
        quantize(np.zeros(33, np.float32), "Q8_0")
    with pytest.raises(DodaiError, match="non-finite"):
        quantize(np.full(32, np.inf, np.float32), "Q4_1")
    with pytest.raises(DodaiError, match="not implemented"):
        quantize(np.zeros(256, np.float32), "Q6_K")
