"""Hostile GGUF files: one hand-made corrupt file per failure case (bytes built with struct here, not by
dodai's writer), then thousands of random mutations of a small valid file. The only outcome allowed
is a DodaiError naming the field, fast and with memory bounded by the file size."""

from __future__ import annotations

import random
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from dodai.errors import DodaiError
from dodai.weights.gguf import GGUFFile, RawTensor, encode_gguf

U64_HUGE = 2 ** 60


def s(text: str | bytes) -> bytes:
    b = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def ti(name, dims, gtype, offset) -> bytes:
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", gtype, offset)


def gguf_bytes(kvs=(), tensors=(), data=b"", version=3, n_kv=None, n_tensors=None, alignment=32) -> bytes:
    """A GGUF file from raw pieces; counts default to the real ones but can lie."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % alignment)
    return head + data


F32_4 = np.arange(4, dtype="<f4").tobytes()  # 16 bytes: one F32 tensor of 4 values


def good_tensor(name="w", offset=0):
    return ti(name, [4], 0, offset)


def expect_error(tmp_path, data: bytes, *fragments: str, load: bool = False) -> str:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(DodaiError) as e:
        with GGUFFile(path) as g:
            if load:
                for name in g.tensors:
                    g.load(name)
    msg = str(e.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


def test_baseline_of_the_hand_made_files_is_valid(tmp_path):
    # The builder itself must produce a file the reader accepts, or the cases below prove nothing.
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes([kv("a", 4, struct.pack("<I", 7))], [good_tensor()], F32_4))
    with GGUFFile(path) as g:
        assert g.metadata == {"a": 7}
        np.testing.assert_array_equal(g.load("w").numpy(), np.arange(4, dtype=np.float32))


CASES = {
    "bad magic": (lambda: b"GGML" + gguf_bytes()[4:], ["bad magic", "not a GGUF file"]),
    "version 1": (lambda: gguf_bytes(version=1), ["unsupported version 1", "version 1"]),
    "version 4": (lambda: gguf_bytes(version=4), ["unsupported version 4"]),
    "big endian": (lambda: gguf_bytes(version=3 << 24), ["big-endian"]),
    "short header": (lambda: b"GGUF\x03\0\0\0", ["header truncated"]),
    "absurd kv count": (lambda: gguf_bytes(n_kv=2 ** 63), ["metadata count", "impossible"]),
    "absurd tensor count": (lambda: gguf_bytes(n_tensors=2 ** 64 - 1), ["tensor count", "impossible"]),
    "key length 2^60": (lambda: gguf_bytes([struct.pack("<Q", U64_HUGE) + b"k" * 20], n_kv=1),
                        ["metadata key #0 length"]),
    "string value length 2^60": (lambda: gguf_bytes([kv("name", 8, struct.pack("<Q", U64_HUGE) + b"x" * 8)]),
                                 ["metadata 'name'", "string of"]),
    "array count 2^60": (lambda: gguf_bytes([kv("arr", 9, struct.pack("<IQ", 4, U64_HUGE))]),
                         ["metadata 'arr' array of", "items"]),
    "string array count 2^60": (lambda: gguf_bytes([kv("toks", 9, struct.pack("<IQ", 8, U64_HUGE))]),
                                ["metadata 'toks' array of", "string"]),
    "nesting too deep": (lambda: gguf_bytes([kv("deep", 9, struct.pack("<IQ", 9, 1) * 10 + struct.pack("<IQ", 0, 0))]),
                         ["metadata 'deep'", "nested deeper"]),
    "unknown value type": (lambda: gguf_bytes([kv("x", 13, b"\0" * 8)]), ["metadata 'x'", "unknown value type 13"]),
    "unknown array item type": (lambda: gguf_bytes([kv("x", 9, struct.pack("<IQ", 99, 1))]),
                                ["metadata 'x'", "unknown item type 99"]),
    "bool not 0/1": (lambda: gguf_bytes([kv("flag", 7, b"\x02")]), ["metadata 'flag'", "bool"]),
    "bool array not 0/1": (lambda: gguf_bytes([kv("flags", 9, struct.pack("<IQ", 7, 2) + b"\x01\x05")]),
                           ["metadata 'flags'", "bool"]),
    "non-utf8 value": (lambda: gguf_bytes([kv("name", 8, s(b"\xff\xfe"))]), ["metadata 'name'", "UTF-8"]),
    "non-utf8 key": (lambda: gguf_bytes([kv(b"k\xc3", 4, b"\0" * 4)]), ["metadata key #0", "UTF-8"]),
    "duplicate key": (lambda: gguf_bytes([kv("a", 4, b"\0" * 4), kv("a", 4, b"\1\0\0\0")]),
                      ["duplicate metadata key 'a'"]),
    "truncated in metadata": (lambda: gguf_bytes([kv("a", 4, b"\0" * 4), kv("b", 10, b"")], alignment=1),
                              ["metadata 'b'", "truncated"]),
    "alignment zero": (lambda: gguf_bytes([kv("general.alignment", 4, struct.pack("<I", 0))]),
                       ["general.alignment 0", "power of two"]),
    "alignment three": (lambda: gguf_bytes([kv("general.alignment", 4, struct.pack("<I", 3))]),
                        ["general.alignment 3", "power of two"]),
    "alignment a string": (lambda: gguf_bytes([kv("general.alignment", 8, s("32"))]),
                           ["general.alignment must be an integer"]),
    "duplicate tensor": (lambda: gguf_bytes([], [good_tensor("w", 0), good_tensor("w", 32)],
                                            F32_4 + b"\0" * 16 + F32_4),
                         ["duplicate tensor name 'w'"]),
    "tensor name too long": (lambda: gguf_bytes([], [good_tensor("n" * 64)], F32_4), ["tensor #0 name length 64"]),
    "n_dims 5": (lambda: gguf_bytes([], [ti("w", [1, 1, 1, 1, 4], 0, 0)], F32_4), ["tensor 'w'", "n_dims 5"]),
    "n_dims 2^31": (lambda: gguf_bytes([], [s("w") + struct.pack("<I", 2 ** 31) + b"\0" * 64], F32_4),
                    ["tensor 'w'", "n_dims 2147483648"]),
    "dim zero": (lambda: gguf_bytes([], [ti("w", [4, 0], 0, 0)], F32_4), ["tensor 'w'", "dim 1 is 0"]),
    "dim 2^64-1": (lambda: gguf_bytes([], [ti("w", [2 ** 64 - 1], 0, 0)], F32_4), ["tensor 'w'", "dim 0"]),
    "dims product huge": (lambda: gguf_bytes([], [ti("w", [2 ** 40, 2 ** 40], 0, 0)], F32_4),
                          ["tensor 'w'", "more than 2^63 elements"]),
    "dims past the file": (lambda: gguf_bytes([], [ti("w", [2 ** 20, 2 ** 20], 0, 0)], F32_4),
                           ["tensor 'w'", "past the end of the file"]),
    "unknown ggml type": (lambda: gguf_bytes([], [ti("w", [4], 99, 0)], F32_4), ["tensor 'w'", "unknown ggml type 99"]),
    "removed ggml type 4": (lambda: gguf_bytes([], [ti("w", [32], 4, 0)], b"\0" * 32), ["unknown ggml type 4"]),
    "row not a block multiple": (lambda: gguf_bytes([], [ti("q", [33], 2, 0)], b"\0" * 64),
                                 ["tensor 'q'", "not a multiple of the Q4_0 block size 32"]),
    "misaligned offset": (lambda: gguf_bytes([], [good_tensor("w", 4)], F32_4 * 2),
                          ["tensor 'w'", "offset 4 is not a multiple of the alignment 32"]),
    "offset past end": (lambda: gguf_bytes([], [good_tensor("blk.0.attn_q.weight", 2 ** 40)], F32_4),
                        ["tensor 'blk.0.attn_q.weight'", "offset 1099511627776", "past the end"]),
    "data truncated": (lambda: gguf_bytes([], [ti("w", [8], 0, 0)], F32_4), ["tensor 'w'", "past the end"]),
    "overlapping tensors": (lambda: gguf_bytes([], [ti("a", [16], 0, 0), ti("b", [4], 0, 32)], b"\0" * 64),
                            ["tensor 'b'", "overlaps tensor 'a'"]),
    "data section past end": (lambda: gguf_bytes([kv("general.alignment", 4, struct.pack("<I", 2 ** 31))],
                                                 [good_tensor()], alignment=1), ["data section", "past the end"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_made_corrupt_file(tmp_path, case):
    build, fragments = CASES[case]
    msg = expect_error(tmp_path, build(), *fragments)
    assert "\n" not in msg and str(tmp_path) in msg  # one line, names the file


def test_empty_and_missing_files(tmp_path):
    expect_error(tmp_path, b"", "header truncated")
    with pytest.raises(DodaiError, match="no such GGUF file"):
        GGUFFile(tmp_path / "nope.gguf")
    (tmp_path / "dir.gguf").mkdir()
    with pytest.raises(DodaiError, match="not a regular file"):
        GGUFFile(tmp_path / "dir.gguf")


def test_os_errors_become_dodai_errors(tmp_path, monkeypatch):
    import dodai.weights.gguf as gguf_mod

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    path = tmp_path / "locked.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 40)
    monkeypatch.setattr(gguf_mod.mmap, "mmap", refuse)
    with pytest.raises(DodaiError, match="cannot read the GGUF file .Permission denied"):
        GGUFFile(path)


def test_huge_declared_lengths_fail_without_allocating(tmp_path):
    # A 2^60-byte string or a 2^60-item array must be refused from its length field alone.
    tracemalloc.start()
    try:
        for case in ("key length 2^60", "string value length 2^60", "array count 2^60", "string array count 2^60"):
            expect_error(tmp_path, CASES[case][0]())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---- random mutations of a small valid file --------------------------------------------------------

def _small_valid_file() -> bytes:
    rng = np.random.default_rng(0)
    q8 = b"".join(np.array([0.05], "<f2").tobytes() + rng.integers(-128, 128, 32).astype(np.int8).tobytes()
                  for _ in range(2))
    q41 = b"".join(np.array([0.1, -0.5], "<f2").tobytes() + rng.integers(0, 256, 16).astype(np.uint8).tobytes()
                   for _ in range(2))
    q6k = bytearray(rng.integers(0, 256, 210).astype(np.uint8).tobytes())
    q6k[208:210] = np.array([0.01], "<f2").tobytes()
    meta = {"general.architecture": "llama", "llama.block_count": 2, "f": 1.5, "flag": False,
            "tokenizer.ggml.tokens": ["<s>", "a", "bc"], "ids": [3, 1, 2], "nested": [[1], [2, 3]],
            "general.alignment": 16}
    types = {"general.alignment": "uint32", "ids": "array[int32]", "nested": "array[array[uint8]]"}
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "h": torch.ones(8).half(),
               "b": torch.ones(4).bfloat16(), "q8": RawTensor(q8, "Q8_0", (2, 32)),
               "q41": RawTensor(q41, "Q4_1", (64,)), "q6k": RawTensor(bytes(q6k), "Q6_K", (256,))}
    return encode_gguf(meta, tensors, types=types, alignment=16)


def _mutate(data: bytes, rnd: random.Random, header_end: int) -> bytes:
    b = bytearray(data)
    kind = rnd.randrange(6)
    # Most of the file is tensor data; aim most mutations at the header where the parser lives.
    pos = rnd.randrange(header_end) if rnd.random() < 0.85 else rnd.randrange(len(b))
    if kind == 0:                                     # flip 1-3 bits / bytes
        for _ in range(rnd.randint(1, 3)):
            b[pos] ^= 1 << rnd.randrange(8)
            pos = min(len(b) - 1, pos + rnd.randint(0, 8))
    elif kind == 1:                                   # truncate
        del b[pos:]
    elif kind == 2:                                   # insert random bytes
        b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 9)))
    elif kind == 3:                                   # delete a run
        del b[pos:pos + rnd.randint(1, 9)]
    elif kind == 4:                                   # overwrite with an "interesting" integer
        v = rnd.choice([0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 60, 2 ** 63, 2 ** 64 - 1, rnd.getrandbits(64)])
        width = rnd.choice([1, 4, 8])
        b[pos:pos + width] = (v % 2 ** (8 * width)).to_bytes(width, "little")
    else:                                             # random byte
        b[pos] = rnd.randrange(256)
    return bytes(b)


def test_random_mutations_only_raise_dodai_error(tmp_path):
    data = _small_valid_file()
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with GGUFFile(path) as g:      # the seed file is valid and every tensor loads
        header_end = g.data_offset
        for name in g.tensors:
            g.load(name)
    rnd = random.Random(1234)
    n, parsed, rejected, worst = 3000, 0, 0, 0
    tracemalloc.start()
    try:
        for i in range(n):
            mutated = _mutate(data, rnd, header_end)
            path.unlink()  # a fresh file each time: rewriting one in place (truncate) is slow on ext4
            path = tmp_path / f"m{i}.gguf"
            path.write_bytes(mutated)
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            try:
                with GGUFFile(path) as g:
                    for name in g.tensors:
                        t = g.load(name)
                        assert t.numel() * t.element_size() <= 8 * len(mutated)  # bounded by the file
                parsed += 1
            except DodaiError as e:
                assert "\n" not in str(e)
                rejected += 1
            worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert parsed + rejected == n and parsed > 100 and rejected > 1000
    # Parsing + loading one mutated file (< 2 KB) may not allocate much more than the file's own size:
    # a lying count or length must never turn into a big allocation.
    assert worst < 32 * len(data) + (64 << 10), worst
