"""A reader for R's serialization format (``.rds`` files and lazy-load ``.rdx``/``.rdb`` databases).

Written from the format description in the *R Internals* manual, section "Serialization Formats",
and R's ``src/main/serialize.c`` documentation of the item layout. Facts relied on:

- A stream is optionally gzip / bzip2 / xz compressed (recognised by magic bytes) and starts with
  the format byte pair ``"X\\n"`` (XDR: big-endian 32-bit ints and IEEE doubles). Only XDR is read.
- Header: ``int version`` (2 or 3), ``int writer R version``, ``int minimal reader version``; for
  version 3 also ``int n`` + ``n`` bytes naming the native encoding.
- Every item starts with an ``int flags``: ``type = flags & 0xFF``, ``is_object = bit 8``,
  ``has_attr = bit 9``, ``has_tag = bit 10``, ``levels = flags >> 12`` (for CHARSXP the encoding
  bits: UTF8 = 8, LATIN1 = 4, BYTES = 2, ASCII = 64).
- Vectors (LGLSXP 10, INTSXP 13, REALSXP 14, CPLXSXP 15, STRSXP 16, VECSXP 19, EXPRSXP 20,
  RAWSXP 24): ``int length`` (``-1`` means a long length stored as two ints), the elements, then the
  attribute pairlist if ``has_attr``. ``NA_integer_`` / ``NA`` logical is ``INT_MIN``.
- CHARSXP 9: ``int length`` (``-1`` = ``NA_character_``) then the bytes.
- Pairlist-like nodes (LISTSXP 2, CLOSXP 3, PROMSXP 5, LANGSXP 6, DOTSXP 17): attributes if
  ``has_attr``, tag if ``has_tag``, then CAR and CDR items.
- SYMSXP 1 (a CHARSXP follows), ENVSXP 4, PERSISTSXP 247, NAMESPACESXP 249 and PACKAGESXP 248 are
  added to a reference table; REFSXP 255 refers back to it (index ``flags >> 8``, or a following int
  when that is 0; 1-based).
- Singletons: NILVALUE 254, GLOBALENV 253, UNBOUNDVALUE 252, MISSINGARG 251, BASENAMESPACE 250,
  EMPTYENV 242, BASEENV 241.
- Lazy-load DB: the ``.rdx`` file is a compressed serialized list with ``variables`` (name ->
  int(offset, length) into the ``.rdb``); each ``.rdb`` blob is a 4-byte big-endian uncompressed
  length followed by zlib data (or, with a 5th type byte, ``'2'`` bzip2 / ``'Z'`` xz / ``'0'`` none).

Values map to Python: character/integer/double/logical vectors -> ``RVector`` (a list subclass with
``.attributes`` and ``.rtype``; NA -> None), lists -> ``RVector`` of values, pairlists ->
``RPairlist`` (list of ``(tag, value)``), symbols -> ``RSymbol``. Factors stay integer vectors with
a ``levels`` attribute (:func:`factor_values` decodes them). Every length is checked against the
bytes left before anything is allocated, and every failure is a one-line :class:`DodaiError`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

from dodai.errors import DodaiError

NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 9, 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
EMPTYENV_SXP, BASEENV_SXP = 242, 241
NA_INT = -(2**31)
MAX_DEPTH = 200  # Python frames per level ~3: stay far below the interpreter recursion limit
MAX_DECOMPRESSED = 1 << 30


class RVector(list):
    """An R atomic vector or list: the elements plus R's type code and attributes."""

    def __init__(self, items, rtype: int, attributes: dict | None = None):
        super().__init__(items)
        self.rtype = rtype
        self.attributes = attributes or {}


class RPairlist(list):
    """An R pairlist (or language object): a list of ``(tag or None, value)``."""

    def __init__(self, items, rtype: int = LISTSXP, attributes: dict | None = None):
        super().__init__(items)
        self.rtype = rtype
        self.attributes = attributes or {}


class RSymbol(str):
    """An R symbol (name)."""


class REnvironment:
    """An R environment (only its frame is kept)."""

    def __init__(self):
        self.frame: dict = {}


class RSpecial:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<R {self.name}>"


def decompress(data: bytes, what: str = "R data") -> bytes:
    """Undo gzip / bzip2 / xz compression (by magic bytes); uncompressed data passes through."""
    try:
        if data[:2] == b"\x1f\x8b":
            return _bounded(gzip.GzipFile(fileobj=__import__("io").BytesIO(data)).read, what)
        if data[:3] == b"BZh":
            return _bounded_stream(bz2.BZ2Decompressor(), data, what)
        if data[:6] == b"\xfd7zXZ\x00":
            return _bounded_stream(lzma.LZMADecompressor(), data, what)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as e:
        raise DodaiError(f"{what}: corrupt compressed data ({e})") from None
    return data


def _bounded(read, what: str) -> bytes:
    out = read(MAX_DECOMPRESSED + 1)
    if len(out) > MAX_DECOMPRESSED:
        raise DodaiError(f"{what}: decompresses to more than {MAX_DECOMPRESSED} bytes")
    return out


def _bounded_stream(dec, data: bytes, what: str) -> bytes:
    out = dec.decompress(data, max_length=MAX_DECOMPRESSED + 1)
    if len(out) > MAX_DECOMPRESSED:
        raise DodaiError(f"{what}: decompresses to more than {MAX_DECOMPRESSED} bytes")
    if not dec.eof:
        raise DodaiError(f"{what}: truncated compressed data")
    return out


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.d = data
        self.i = 0
        self.what = what
        self.refs: list = []
        self.depth = 0

    def fail(self, msg: str):
        raise DodaiError(f"{self.what}: {msg} at byte {self.i}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.d):
            self.fail(f"truncated (needs {n} bytes, {len(self.d) - self.i} left)")
        b = self.d[self.i : self.i + n]
        self.i += n
        return b

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self, elem_size: int) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        if n < 0:
            self.fail(f"negative length {n}")
        # Bound allocations: every element needs at least elem_size bytes of input.
        if n * elem_size > len(self.d) - self.i:
            self.fail(f"length {n} exceeds the {len(self.d) - self.i} bytes left")
        return n

    def header(self) -> None:
        fmt = self.take(2)
        if fmt != b"X\n":
            if fmt in (b"A\n", b"B\n"):
                self.fail("only the XDR ('X') serialization format is supported, not ascii/native")
            self.fail("not an R serialization stream (no 'X\\n' header)")
        version = self.int()
        if version not in (2, 3):
            self.fail(f"unsupported serialization version {version}")
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.length(1)
            self.take(n)  # native encoding name

    def attributes(self) -> dict:
        pl = self.item()
        if not isinstance(pl, RPairlist):
            self.fail("attributes are not a pairlist")
        return {str(k): v for k, v in pl}

    def item(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH}")
        try:
            return self._item()
        finally:
            self.depth -= 1

    def _item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        levels = flags >> 12
        if t == NILVALUE_SXP:
            return None
        if t in (GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP, EMPTYENV_SXP, BASEENV_SXP):
            return RSpecial({253: "globalenv", 252: "unbound", 251: "missing", 250: "basenamespace",
                             242: "emptyenv", 241: "baseenv"}[t])
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                self.fail(f"reference {idx} out of range (table has {len(self.refs)})")
            return self.refs[idx - 1]
        if t == PERSISTSXP or t in (NAMESPACESXP, PACKAGESXP):
            if self.int() != 0:
                self.fail("bad persistent/namespace name header")
            n = self.length(4)
            names = [self.item() for _ in range(n)]
            v = RSpecial(f"{'persist' if t == PERSISTSXP else 'namespace'}:{names}")
            self.refs.append(v)
            return v
        if t == SYMSXP:
            name = self.item()
            if not isinstance(name, str):
                self.fail("symbol name is not a string")
            sym = RSymbol(name)
            self.refs.append(sym)
            return sym
        if t == ENVSXP:
            env = REnvironment()
            self.refs.append(env)
            self.int()  # locked
            self.item()  # enclosure
            frame = self.item()
            hashtab = self.item()
            attrib = self.item()
            for pl in (frame,) + (tuple(hashtab) if isinstance(hashtab, RVector) else ()):
                if isinstance(pl, RPairlist):
                    env.frame.update({str(k): v for k, v in pl})
            del attrib
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
            # Iterate along CDRs instead of recursing, so long pairlists don't hit the depth limit.
            items: list = []
            attrs: dict = {}
            first = True
            while True:
                a = self.attributes() if has_attr else {}
                if first:
                    attrs = a
                tag = self.item() if has_tag else None
                items.append((tag, self.item()))
                first = False
                nflags = struct.unpack(">i", self.d[self.i : self.i + 4])[0] if self.i + 4 <= len(self.d) else -1
                nt = nflags & 0xFF
                if nflags >= 0 and nt == t and t == LISTSXP:
                    self.i += 4
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                cdr = self.item()
                if cdr is not None and isinstance(cdr, RPairlist):
                    items.extend(cdr)
                break
            return RPairlist(items, t, attrs)
        if t == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            if n < 0 or n > len(self.d) - self.i:
                self.fail(f"string length {n} exceeds the {len(self.d) - self.i} bytes left")
            raw = self.take(n)
            if levels & 4:  # LATIN1
                return raw.decode("latin-1")
            return raw.decode("utf-8", errors="replace")  # UTF8, ASCII, native (assumed UTF-8), bytes
        if t in (LGLSXP, INTSXP):
            n = self.length(4)
            vals = struct.unpack(f">{n}i", self.take(4 * n))
            vals = [None if v == NA_INT else (bool(v) if t == LGLSXP else v) for v in vals]
            out = RVector(vals, t)
        elif t == REALSXP:
            n = self.length(8)
            out = RVector(struct.unpack(f">{n}d", self.take(8 * n)), t)
        elif t == CPLXSXP:
            n = self.length(16)
            f = struct.unpack(f">{2 * n}d", self.take(16 * n))
            out = RVector([complex(f[2 * k], f[2 * k + 1]) for k in range(n)], t)
        elif t == RAWSXP:
            n = self.length(1)
            out = RVector(self.take(n), t)
        elif t == STRSXP:
            n = self.length(4)
            vals = []
            for _ in range(n):
                v = self.item()
                if v is not None and not isinstance(v, str):
                    self.fail("character vector element is not a CHARSXP")
                vals.append(v)
            out = RVector(vals, t)
        elif t in (VECSXP, EXPRSXP):
            n = self.length(4)
            out = RVector([self.item() for _ in range(n)], t)
        elif t == S4SXP:
            out = RVector([], t)
        else:
            self.fail(f"unsupported SEXP type {t}")
        if has_attr:
            out.attributes = self.attributes()
        return out


def unserialize(data: bytes, what: str = "R data"):
    """Read one serialized R object from (possibly compressed) bytes."""
    r = _Reader(decompress(data, what), what)
    r.header()
    return r.item()


def read_rds(path: str | Path):
    """Read an ``.rds`` file (``saveRDS`` output)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DodaiError(f"cannot read {path}: {e.strerror}") from None
    return unserialize(data, str(path))


def read_rdb_blob(blob: bytes, what: str = "lazy-load blob"):
    """One ``.rdb`` entry: 4-byte length + compressed serialized object (see the module docstring)."""
    if len(blob) < 5:
        raise DodaiError(f"{what}: truncated (only {len(blob)} bytes)")
    n = struct.unpack(">I", blob[:4])[0]
    if n > MAX_DECOMPRESSED:
        raise DodaiError(f"{what}: declared size {n} is too large")
    kind = blob[4:5]
    try:
        if kind == b"Z":
            data = lzma.LZMADecompressor().decompress(blob[5:], max_length=n + 1)
        elif kind == b"2":
            data = bz2.BZ2Decompressor().decompress(blob[5:], max_length=n + 1)
        elif kind == b"0":
            data = blob[5:]
        else:
            d = zlib.decompressobj()
            data = d.decompress(blob[4:], n + 1)
            if not d.eof:
                raise DodaiError(f"{what}: truncated zlib data")
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
        raise DodaiError(f"{what}: corrupt compressed data ({e})") from None
    if len(data) != n:
        raise DodaiError(f"{what}: decompressed to {len(data)} bytes, header says {n}")
    r = _Reader(data, what)
    r.header()
    return r.item()


def read_lazyload_db(rdx: str | Path) -> dict:
    """All variables of a lazy-load database (``X.rdx`` + ``X.rdb`` beside it): name -> value."""
    rdx = Path(rdx)
    index = read_rds(rdx)
    if not isinstance(index, RVector) or index.rtype != VECSXP:
        raise DodaiError(f"{rdx}: index is not a list")
    names = index.attributes.get("names") or []
    variables = dict(zip(names, index)).get("variables")
    if not isinstance(variables, RVector):
        raise DodaiError(f"{rdx}: index has no 'variables' entry")
    rdb = rdx.with_suffix(".rdb")
    try:
        blob_all = rdb.read_bytes()
    except OSError as e:
        raise DodaiError(f"cannot read {rdb}: {e.strerror}") from None
    out = {}
    for name, pos in zip(variables.attributes.get("names") or [], variables):
        if not isinstance(pos, RVector) or len(pos) != 2 or any(not isinstance(x, (int, float)) for x in pos):
            raise DodaiError(f"{rdx}: bad position for {name!r}")
        off, ln = int(pos[0]), int(pos[1])
        if off < 0 or ln < 0 or off + ln > len(blob_all):
            raise DodaiError(f"{rdx}: entry {name!r} points outside {rdb.name}")
        out[name] = read_rdb_blob(blob_all[off : off + ln], f"{rdb.name}[{name}]")
    return out


def factor_values(v: RVector) -> list:
    """Decode an R factor (integer codes + ``levels`` attribute) into its level strings (NA -> None)."""
    levels = v.attributes.get("levels") or []
    out = []
    for code in v:
        if code is None:
            out.append(None)
        elif not 1 <= code <= len(levels):
            raise DodaiError(f"factor code {code} outside its {len(levels)} levels")
        else:
            out.append(levels[code - 1])
    return out
