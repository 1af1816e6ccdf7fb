import json
import random
import struct

import pytest
import torch

from dodai.errors import DodaiError
from dodai.weights.safetensors import load_file, read_header, save_file


def test_round_trip_all_dtypes(tmp_path):
    ts = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5, dtype=torch.float64),
        "c": torch.randn(2, 2).to(torch.bfloat16),
        "d": torch.arange(7, dtype=torch.int64),
        "e": torch.zeros(0, 3),
        "f": torch.randn(2, 3).half(),
    }
    p = tmp_path / "m.safetensors"
    save_file(ts, p, metadata={"format": "pt"})
    back = load_file(p)
    assert set(back) == set(ts)
    for k in ts:
        assert back[k].dtype == ts[k].dtype
        assert torch.equal(back[k], ts[k])


def test_reference_library_reads_ours_and_we_read_theirs(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    ts = {"w": torch.randn(4, 3), "b": torch.randn(3).to(torch.bfloat16)}
    save_file(ts, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in ts:
        assert torch.equal(theirs[k], ts[k])
    st.save_file(ts, str(tmp_path / "theirs.safetensors"))
    ours = load_file(tmp_path / "theirs.safetensors")
    for k in ts:
        assert torch.equal(ours[k], ts[k])


def test_expected_shapes_are_enforced(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2, 3)}, p)
    load_file(p, expected={"w": (2, 3)})
    with pytest.raises(DodaiError, match="shape"):
        load_file(p, expected={"w": (3, 2)})
    with pytest.raises(DodaiError, match="missing"):
        load_file(p, expected={"w": (2, 3), "v": (1,)})
    with pytest.raises(DodaiError, match="unexpected"):
        load_file(p, expected={})


def _raw(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("header,data,match", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8, "outside"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
    ({"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
    ({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "lacks"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlap"),
])
def test_hostile_headers(tmp_path, header, data, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_raw(header, data))
    with pytest.raises(DodaiError, match=match):
        load_file(p)


def test_truncated_and_garbage(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(DodaiError, match="truncated"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(DodaiError, match="exceeds"):
        read_header(p)
    p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(DodaiError, match="JSON"):
        read_header(p)


def test_random_mutations_never_crash(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(3, 5), "b": torch.arange(4)}, good)
    blob = good.read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "mut.safetensors"
    for _ in range(500):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[: rng.randrange(len(b))]
        bad.write_bytes(bytes(b))
        try:
            load_file(bad)
        except DodaiError:
            pass


def test_deep_or_huge_headers_are_one_line_errors(tmp_path):
    from dodai.weights.safetensors import MAX_HEADER_ITEMS

    p = tmp_path / "h.safetensors"
    for header, match in [(b"[" * 200_000, "nested too deeply"), (b'{"a":' * 100_000, "nested too deeply"),
                          (b"[" + b"0," * (MAX_HEADER_ITEMS + 1) + b"0]", "JSON values")]:
        p.write_bytes(struct.pack("<Q", len(header)) + header)
        with pytest.raises(DodaiError, match=match):
            read_header(p)
