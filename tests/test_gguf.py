"""GGUF reader and writer: round trips, parity with the `gguf` package (reference, test-only) on files
it writes and on the real SmolLM2-135M-Instruct Q4_1 file, and the API the Llama loader relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.weights.gguf import GGUFFile, RawTensor, encode_gguf, quantized, write_gguf
from dodai.weights.quants import GGML_TYPE_IDS


def _q8_0_bytes(n_blocks: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray()
    for _ in range(n_blocks):
        out += np.array([rng.uniform(0.01, 0.1)], "<f2").tobytes()
        out += rng.integers(-128, 128, 32).astype(np.int8).tobytes()
    return bytes(out)


def test_round_trip_metadata_and_tensors(tmp_path):
    meta = {
        "general.architecture": "llama", "llama.block_count": 2, "neg": -5, "f": 0.5, "flag": True,
        "names": ["a", "ü", ""], "ids": [1, 2, 3], "nested": [[1, 2], [3]], "empty": [],
        "big": 2 ** 40, "d": 1.0 / 3.0,
    }
    types = {"ids": "array[int32]", "nested": "array[array[uint16]]", "d": "float64", "neg": "int8"}
    w32 = torch.randn(3, 8)
    w16 = torch.randn(5).half()
    wbf = torch.randn(2, 4).bfloat16()
    q = RawTensor(_q8_0_bytes(2, 0), "Q8_0", (2, 32))
    path = tmp_path / "m.gguf"
    write_gguf(path, meta, {"w32": w32, "w16": w16, "wbf": wbf, "q": q}, types=types, alignment=64)
    with GGUFFile(path) as g:
        assert g.version == 3 and g.alignment == 64 and g.data_offset % 64 == 0
        for k, v in meta.items():
            got = g.metadata[k]
            assert got == pytest.approx(v) if isinstance(v, float) else got == v, k
        assert g.metadata["general.alignment"] == 64
        assert g.metadata_types["ids"] == "array[int32]"
        assert g.metadata_types["nested"] == "array[array[uint16]]"
        assert g.metadata_types["f"] == "float32" and g.metadata_types["d"] == "float64"
        assert g.metadata["d"] == 1.0 / 3.0  # float64 kept exactly
        torch.testing.assert_close(g.load("w32"), w32, rtol=0, atol=0)
        torch.testing.assert_close(g.load("w16", dtype=torch.float16), w16, rtol=0, atol=0)
        torch.testing.assert_close(g.load("wbf", dtype=torch.bfloat16), wbf, rtol=0, atol=0)
        info = g.tensors["w32"]
        assert info.dims == (8, 3) and info.shape == (3, 8) and info.type_name == "F32"
        assert info.ggml_type == 0 and info.nbytes == 96 and info.offset % 64 == 0
        assert g.tensors["q"].type_name == "Q8_0" and g.tensors["q"].nbytes == 68
        assert g.raw("q").tobytes() == q.data
        assert g.load("q").shape == (2, 32)


def test_writer_output_reads_in_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "d.gguf"
    w = torch.randn(4, 32)
    write_gguf(path, {"general.architecture": "llama", "x.count": 7, "x.list": ["p", "q"]},
               {"w": w, "q": RawTensor(_q8_0_bytes(4, 1), "Q8_0", (4, 32)), "q41": quantized(w, "Q4_1"),
                "q40": quantized(w, "Q4_0")})
    r = gguf.GGUFReader(path)
    assert r.fields["x.count"].contents() == 7 and r.fields["x.list"].contents() == ["p", "q"]
    by_name = {t.name: t for t in r.tensors}
    np.testing.assert_array_equal(np.asarray(by_name["w"].data).reshape(4, 32), w.numpy())
    with GGUFFile(path) as g:
        for t in r.tensors:
            assert g.tensors[t.name].offset == t.data_offset
            ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(g.tensors[t.name].shape)
            np.testing.assert_array_equal(g.load(t.name).numpy(), ref)
        torch.testing.assert_close(g.load("q41"), w, atol=float(w.abs().max()) / 7, rtol=0)


def test_reads_files_written_by_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gdq
    from gguf.quants import quantize as gq

    path = tmp_path / "ref.gguf"
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=(3, 64)).astype(np.float32)
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 3)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("b", True)
    w.add_array("toks", ["<s>", "a", "b"])
    w.add_array("scores", [0.5, -1.25])
    w.add_string("tokenizer.chat_template", "{{ x }}")
    w.add_tensor("f32", f32)
    w.add_tensor("f16", f32.astype(np.float16))
    tensors = {}
    for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        qt = gguf.GGMLQuantizationType[name]
        data = gq(f32, qt)
        w.add_tensor(name.lower(), data, raw_dtype=qt)  # shape from the byte shape
        tensors[name.lower()] = (data, qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile(path) as g:
        assert g.metadata["general.architecture"] == "llama"
        assert g.metadata["llama.block_count"] == 3 and g.metadata["b"] is True
        assert g.metadata["toks"] == ["<s>", "a", "b"] and g.metadata["scores"] == [0.5, -1.25]
        assert g.metadata["tokenizer.chat_template"] == "{{ x }}"
        np.testing.assert_array_equal(g.load("f32").numpy(), f32)
        np.testing.assert_array_equal(g.load("f16").numpy(), f32.astype(np.float16).astype(np.float32))
        for name, (data, qt) in tensors.items():
            assert g.tensors[name].type_name == qt.name and g.tensors[name].shape == (3, 64)
            np.testing.assert_array_equal(g.load(name).numpy(), gdq(data, qt).reshape(3, 64))


def _int(name: str, lo: int, hi: int):
    return st.tuples(st.just(name), st.integers(lo, hi))


_VALUE = st.one_of(
    _int("uint8", 0, 255), _int("int8", -128, 127), _int("uint16", 0, 2 ** 16 - 1),
    _int("int16", -2 ** 15, 2 ** 15 - 1), _int("uint32", 0, 2 ** 32 - 1), _int("int32", -2 ** 31, 2 ** 31 - 1),
    _int("uint64", 0, 2 ** 64 - 1), _int("int64", -2 ** 63, 2 ** 63 - 1),
    st.tuples(st.just("float64"), st.floats(allow_nan=False)), st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("float32"), st.floats(width=32, allow_nan=False)),
    st.tuples(st.just("string"), st.text(max_size=20)),
    st.tuples(st.just("array[string]"), st.lists(st.text(max_size=5), max_size=5)),
    st.tuples(st.just("array[int16]"), st.lists(st.integers(-2 ** 15, 2 ** 15 - 1), max_size=5)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=12), _VALUE, max_size=6))
def test_property_metadata_round_trip(tmp_path, items):
    meta = {k: v for k, (_, v) in items.items()}
    types = {k: t for k, (t, _) in items.items()}
    path = tmp_path / "p.gguf"
    path.write_bytes(encode_gguf(meta, {}, types=types))
    with GGUFFile(path) as g:
        assert g.metadata == meta
        assert g.metadata_types == types
        assert g.tensors == {}


def test_api_errors(tmp_path):
    path = tmp_path / "a.gguf"
    write_gguf(path, {}, {"w": torch.ones(2)})
    g = GGUFFile(path)
    with pytest.raises(DodaiError, match="no tensor 'x'"):
        g.load("x")
    view = g.raw("w")
    g.close()  # a live raw() view must not make close() fail
    assert view.nbytes == 8
    with pytest.raises(DodaiError, match="closed"):
        g.load("w")
    with pytest.raises(DodaiError, match="no such GGUF file"):
        GGUFFile(tmp_path / "missing.gguf")


def test_unsupported_type_parses_but_load_says_so(tmp_path):
    path = tmp_path / "iq.gguf"
    write_gguf(path, {}, {"t": RawTensor(b"\0" * 66, "IQ2_XXS", (256,))})
    with GGUFFile(path) as g:
        assert g.tensors["t"].type_name == "IQ2_XXS" and g.tensors["t"].ggml_type == GGML_TYPE_IDS["IQ2_XXS"]
        assert len(g.raw("t")) == 66
        with pytest.raises(DodaiError, match="IQ2_XXS is not implemented"):
            g.load("t")


# ---- the real SmolLM2-135M-Instruct Q4_1 file ---------------------------------------------------

@pytest.fixture(scope="module")
def real(smollm2_gguf):
    gguf = pytest.importorskip("gguf")
    g = GGUFFile(smollm2_gguf)
    yield g, gguf.GGUFReader(smollm2_gguf), gguf
    g.close()


def test_real_file_header_and_metadata(real):
    g, r, _ = real
    assert g.version == 3 and g.alignment == 32 and g.data_offset == r.data_offset
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert list(g.metadata) == keys
    for k in keys:
        ref = r.fields[k].contents()
        if isinstance(ref, float):
            assert math.isclose(g.metadata[k], ref, rel_tol=0, abs_tol=0), k
        else:
            assert g.metadata[k] == ref, k
    assert g.metadata["general.architecture"] == "llama"
    assert len(g.metadata["tokenizer.ggml.tokens"]) == g.metadata["llama.vocab_size"] == 49152
    assert g.metadata_types["tokenizer.ggml.token_type"] == "array[int32]"
    assert "<|im_start|>" in g.metadata["tokenizer.chat_template"]


def test_real_file_tensor_infos(real):
    g, r, _ = real
    assert len(g.tensors) == len(r.tensors) == 272
    for t in r.tensors:
        info = g.tensors[t.name]
        assert info.offset == t.data_offset and info.nbytes == t.n_bytes
        assert info.type_name == t.tensor_type.name and info.ggml_type == int(t.tensor_type)
        assert info.dims == tuple(int(x) for x in t.shape) and info.shape == info.dims[::-1]
    assert g.tensors["token_embd.weight"].shape == (49152, 576)
    assert g.tensors["blk.0.attn_k.weight"].shape == (192, 576)
    assert g.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
    assert {t.type_name for t in g.tensors.values()} == {"F32", "Q4_1", "Q8_0"}


@pytest.mark.parametrize("name", ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight",
                                  "blk.0.attn_q.weight", "blk.7.attn_k.weight", "blk.15.ffn_down.weight",
                                  "blk.29.ffn_gate.weight", "blk.29.ffn_norm.weight"])
def test_real_file_dequantization_matches_gguf_package(real, name):
    g, r, gguf = real
    t = next(t for t in r.tensors if t.name == name)
    shape = g.tensors[name].shape
    got = g.load(name)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    # The reference is slow on the 49152-row embedding: compare a spread of rows there, all rows elsewhere.
    rows = np.r_[0:600, 20000:20600, shape[0] - 600:shape[0]] if shape[0] > 4096 else slice(None)
    data = np.asarray(t.data).reshape(shape[0], -1) if len(shape) == 2 else np.asarray(t.data)
    ref = gguf.quants.dequantize(data[rows], t.tensor_type)
    np.testing.assert_array_equal(got.numpy()[rows], ref)  # bit-exact, Q8_0 and Q4_1 alike
    np.testing.assert_array_equal(g.raw(name), np.asarray(t.data).reshape(-1).view(np.uint8))


# ---- `dodai gguf inspect` ------------------------------------------------------------------------

def test_cli_inspect(tmp_path, capsys):
    import json

    from dodai.cli import main

    path = tmp_path / "c.gguf"
    write_gguf(path, {"general.architecture": "llama", "eps": 1e-5, "toks": [f"t{i}" for i in range(100)]},
               {"w": torch.ones(3, 4), "q": RawTensor(_q8_0_bytes(2, 2), "Q8_0", (2, 32))})
    assert main(["gguf", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == 3 and info["n_tensors"] == 2 and info["n_metadata"] == 3
    assert info["metadata"]["eps"] == {"type": "float32", "value": "1e-05"}
    assert "(100 items)" in info["metadata"]["toks"]["value"]
    assert info["tensors"][0] == {"name": "w", "type": "F32", "shape": [3, 4], "nbytes": 48,
                                  "offset": info["data_offset"]}
    assert info["types"]["Q8_0"] == {"tensors": 1, "elements": 64, "bytes": 68}
    assert main(["gguf", "inspect", str(path), "--max-tensors", "1"]) == 0
    out = capsys.readouterr().out
    assert "GGUF v3" in out and "w  " in out and "1 more" in out and "q  " not in out
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x01\0\0\0" + b"\0" * 16)
    assert main(["gguf", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dodai: error:") and "unsupported version 1" in err


def test_writer_refuses_what_the_reader_would_reject(tmp_path):
    with pytest.raises(DodaiError, match="cannot be stored"):
        encode_gguf({}, {"n" * 64: torch.ones(2)})
    with pytest.raises(DodaiError, match="cannot be stored"):
        encode_gguf({}, {"w": torch.ones(1, 1, 1, 1, 2)})
    with pytest.raises(DodaiError, match="cannot be stored"):
        encode_gguf({}, {"w": torch.ones(2, 0)})
    with pytest.raises(DodaiError, match="cannot be stored"):
        encode_gguf({}, {"q": RawTensor(b"\0" * 34, "Q8_0", (2, 32))})  # two blocks' shape, one block
    with pytest.raises(DodaiError, match="not a power of two"):
        encode_gguf({}, {}, alignment=24)
    with pytest.raises(DodaiError, match="does not fit uint8"):
        encode_gguf({"x": 300}, {}, types={"x": "uint8"})
