"""dodai.data.rds on hand-made R serialization streams (written here from the R Internals format spec)."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.data import rds
from dodai.errors import DodaiError

HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10
UTF8 = 1 << 3


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def header(version: int = 3) -> bytes:
    h = b"X\n" + i32(version) + i32(0x040201) + i32(0x030500)
    return h + (i32(5) + b"UTF-8" if version == 3 else b"")


def charsxp(s: str | None) -> bytes:
    if s is None:
        return i32(9) + i32(-1)
    b = s.encode("utf-8")
    return i32(9 | (UTF8 << 12)) + i32(len(b)) + b


def nil() -> bytes:
    return i32(254)


def attrs(pairs: list[tuple[str, bytes]]) -> bytes:
    """A pairlist of (tag symbol, value) for attributes; the first tag is a SYMSXP, later refs are not used."""
    out = b""
    for name, val in pairs:
        out += i32(2 | HAS_TAG) + i32(1) + charsxp(name) + val
    return out + nil()


def strsxp(vals, attributes: bytes | None = None) -> bytes:
    flags = 16 | (HAS_ATTR if attributes else 0)
    return i32(flags) + i32(len(vals)) + b"".join(charsxp(v) for v in vals) + (attributes or b"")


def intsxp(vals, attributes: bytes | None = None, t: int = 13) -> bytes:
    flags = t | (HAS_ATTR if attributes else 0)
    enc = [rds.NA_INT if v is None else int(v) for v in vals]
    return i32(flags) + i32(len(vals)) + struct.pack(f">{len(vals)}i", *enc) + (attributes or b"")


def realsxp(vals) -> bytes:
    return i32(14) + i32(len(vals)) + struct.pack(f">{len(vals)}d", *vals)


def vecsxp(items: list[bytes], attributes: bytes | None = None) -> bytes:
    flags = 19 | (HAS_ATTR if attributes else 0)
    return i32(flags) + i32(len(items)) + b"".join(items) + (attributes or b"")


def test_character_vector_with_na_and_unicode():
    v = rds.unserialize(header() + strsxp(["It is a truth", None, "日本語", ""]))
    assert list(v) == ["It is a truth", None, "日本語", ""]
    assert v.rtype == rds.STRSXP


def test_version2_and_compressions_agree():
    body = strsxp(["a", "b"])
    for data in (header(2) + body, gzip.compress(header(3) + body)):
        assert list(rds.unserialize(data)) == ["a", "b"]
    import bz2
    import lzma

    assert list(rds.unserialize(bz2.compress(header() + body))) == ["a", "b"]
    assert list(rds.unserialize(lzma.compress(header() + body))) == ["a", "b"]


def test_numbers_logicals_and_na():
    assert list(rds.unserialize(header() + intsxp([1, -5, None]))) == [1, -5, None]
    assert list(rds.unserialize(header() + intsxp([1, 0, None], t=10))) == [True, False, None]
    assert list(rds.unserialize(header() + realsxp([1.5, -2.25]))) == [1.5, -2.25]


def test_named_list_and_factor():
    fac = intsxp([2, 1, None, 2], attrs([("levels", strsxp(["lo", "hi"])), ("class", strsxp(["factor"]))]))
    obj = vecsxp([fac, strsxp(["x"])], attrs([("names", strsxp(["f", "s"]))]))
    v = rds.unserialize(header() + obj)
    assert v.attributes["names"] == ["f", "s"]
    assert rds.factor_values(v[0]) == ["hi", "lo", None, "hi"]
    assert list(v[1]) == ["x"]


def test_symbol_reference_resolves():
    # Two attributes tagged with the same symbol: the second uses REFSXP index 1 (packed in the flags).
    pl = i32(2 | HAS_TAG) + i32(1) + charsxp("names") + strsxp(["a"])
    pl += i32(2 | HAS_TAG) + i32(255 | (1 << 8)) + strsxp(["b"]) + nil()
    v = rds.unserialize(header() + i32(19 | HAS_ATTR) + i32(1) + nil() + pl)
    assert v.attributes["names"] == ["b"]  # same tag twice: the later value wins in the dict
    with pytest.raises(DodaiError, match="reference"):
        bad = i32(2 | HAS_TAG) + i32(255 | (7 << 8)) + strsxp(["b"]) + nil()
        rds.unserialize(header() + i32(19 | HAS_ATTR) + i32(1) + nil() + bad)


def _lazyload(tmp_path, values: dict[str, bytes], kind: str = "zlib"):
    blob = b""
    positions = []
    for _name, body in values.items():
        raw = header() + body
        entry = struct.pack(">I", len(raw)) + zlib.compress(raw)
        positions.append(intsxp([len(blob), len(entry)]))
        blob += entry
    variables = vecsxp(positions, attrs([("names", strsxp(list(values)))]))
    index = vecsxp([variables, vecsxp([])], attrs([("names", strsxp(["variables", "references"]))]))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(header() + index))
    (tmp_path / "Rdata.rdb").write_bytes(blob)
    return tmp_path / "Rdata.rdx"


def test_lazyload_db_round_trip(tmp_path):
    rdx = _lazyload(tmp_path, {"emma": strsxp(["EMMA", "", "By Jane Austen"]), "n": realsxp([3.0])})
    db = rds.read_lazyload_db(rdx)
    assert list(db["emma"]) == ["EMMA", "", "By Jane Austen"]
    assert list(db["n"]) == [3.0]


def test_lazyload_db_corrupt_blob(tmp_path):
    rdx = _lazyload(tmp_path, {"a": strsxp(["x" * 50])})
    rdb = tmp_path / "Rdata.rdb"
    data = bytearray(rdb.read_bytes())
    data[10] ^= 0xFF
    rdb.write_bytes(bytes(data))
    with pytest.raises(DodaiError):
        rds.read_lazyload_db(rdx)
    rdb.write_bytes(bytes(data[:8]))
    with pytest.raises(DodaiError):
        rds.read_lazyload_db(rdx)


@pytest.mark.parametrize("bad, msg", [
    (b"A\n" + b"\0" * 20, "XDR"),
    (b"junk", "not an R serialization"),
    (b"X\n" + i32(9) + i32(0) + i32(0) + strsxp([]), "version"),
    (header() + i32(16) + i32(2_000_000_000), "exceeds"),  # huge length, tiny input: no allocation
    (header() + i32(13) + i32(-1) + i32(0x7FFF) + i32(0), "exceeds"),  # long length
    (header() + i32(16) + i32(1) + i32(9) + i32(1000) + b"ab", "exceeds"),
    (header() + i32(99), "unsupported SEXP"),
    (header() + i32(16) + i32(1) + realsxp([1.0]), "not a CHARSXP"),
])
def test_hostile_inputs_raise_one_line(bad, msg):
    with pytest.raises(DodaiError, match=msg) as e:
        rds.unserialize(bad)
    assert "\n" not in str(e.value)


def test_deep_nesting_is_bounded():
    depth = rds.MAX_DEPTH + 5
    data = header() + (i32(19) + i32(1)) * depth + nil()
    with pytest.raises(DodaiError, match="nesting"):
        rds.unserialize(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=20), st.data())
def test_truncations_and_mutations_never_crash(vals, data):
    good = header() + vecsxp([strsxp(vals), intsxp([1, 2, None])], attrs([("names", strsxp(["a", "b"]))]))
    v = rds.unserialize(good)
    assert list(v[0]) == vals
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(DodaiError):
        rds.unserialize(good[:cut])
    pos = data.draw(st.integers(0, len(good) - 1))
    mutated = bytearray(good)
    mutated[pos] ^= data.draw(st.integers(1, 255))
    try:
        rds.unserialize(bytes(mutated))
    except DodaiError:
        pass  # either a clean error or some (different) value; never another exception type
