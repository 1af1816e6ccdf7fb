"""Read sentencepiece ``.model`` files and encode/decode exactly as the ``sentencepiece`` library does.

A ``.model`` file is one protobuf ``ModelProto`` message (Kudo & Richardson 2018, "SentencePiece").
dodai decodes the protobuf wire format itself (varints, fixed32/64, length-delimited fields) and
reads only the fields it needs; field numbers follow ``sentencepiece_model.proto``:

  ModelProto:      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
  SentencePiece:   1 piece, 2 score (float), 3 type (1 normal, 2 unknown, 3 control,
                   4 user defined, 5 unused, 6 byte)
  TrainerSpec:     3 model_type (1 unigram, 2 bpe, 3 word, 4 char), 4 vocab_size,
                   24 treat_whitespace_as_suffix, 25 split_digits, 35 byte_fallback,
                   40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id, 44 unk_surface
  NormalizerSpec:  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
                   5 escape_whitespaces

Normalisation is the library's: the precompiled charsmap is a darts-clone double-array trie
(uint32 units; ``has_leaf = bit 8``, ``label = unit & 0x800000ff``, ``value = unit & 0x7fffffff``,
``offset = (unit >> 10) << ((unit & 0x200) >> 6)``) over UTF-8 bytes whose values index a pool of
NUL-terminated replacement strings. At each position the *longest* matching rule wins; with no
match one UTF-8 character is copied. Leading, trailing and repeated spaces are dropped
(``remove_extra_whitespaces``), ``" "`` becomes ``"▁"`` and a ``"▁"`` is prepended
(``add_dummy_prefix``).

Encoding: unigram models run Viterbi over the pieces (unknown characters score
``min(normal scores) - 10``; ties keep the first candidate found, scanning starts left to right and
lengths short to long, as the library does); BPE models merge adjacent symbols by the score of the
merged piece (highest first, leftmost on ties). With ``byte_fallback`` an unknown piece becomes its
UTF-8 bytes ``<0xXX>``. Neither algorithm lets a piece cross a ``"▁"`` unless some piece has a
``"▁"`` after its first character, so dodai caches results per ``"▁"``-word when that holds.

Scores are added in float64 where the library uses float32; the two orders differ only on exact
float32 ties between different paths, which the identical-ids tests have not met.
"""

from __future__ import annotations

import heapq
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dodai.errors import DodaiError

SPACE = "\u2581"  # "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
_UNK_PENALTY = 10.0
_MAX_MODEL_BYTES = 256 * 1024 * 1024


# ---------------------------------------------------------------- protobuf wire format

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise DodaiError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DodaiError("varint longer than 10 bytes")


def _fields(buf: bytes, start: int = 0, end: int | None = None):
    """Yield (field_number, wire_type, value) of one message; value is int (varint/fixed) or a
    (start, end) slice for length-delimited fields."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise DodaiError("protobuf field number 0")
        if wt == 0:
            v, pos = _varint(buf, pos, end)
            yield num, wt, v
        elif wt == 1:
            if pos + 8 > end:
                raise DodaiError("truncated fixed64 field")
            yield num, wt, buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise DodaiError(f"length-delimited field {num} runs past its message ({n} bytes)")
            yield num, wt, (pos, pos + n)
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise DodaiError("truncated fixed32 field")
            yield num, wt, buf[pos:pos + 4]
            pos += 4
        else:
            raise DodaiError(f"unsupported protobuf wire type {wt} (field {num})")


def _int32(v) -> int:
    if not isinstance(v, int):
        raise DodaiError("expected a varint field")
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _text(buf: bytes, sl) -> str:
    if not isinstance(sl, tuple):
        raise DodaiError("expected a length-delimited string field")
    try:
        return buf[sl[0]:sl[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise DodaiError("string field is not UTF-8") from None


# ---------------------------------------------------------------- precompiled charsmap

class CharsMap:
    """sentencepiece's precompiled normalisation rules: a double-array trie + replacement strings."""

    def __init__(self, blob: bytes):
        if len(blob) < 4:
            raise DodaiError("precompiled_charsmap shorter than its 4-byte header")
        (trie_size,) = struct.unpack_from("<I", blob, 0)
        if trie_size % 4 or trie_size == 0 or 4 + trie_size > len(blob):
            raise DodaiError(f"precompiled_charsmap trie size {trie_size} does not fit the blob ({len(blob)} bytes)")
        self.units = struct.unpack_from(f"<{trie_size // 4}I", blob, 4)
        self.pool = blob[4 + trie_size:]
        self._cache: dict[int, tuple[bytes, int] | None] = {}

    def longest(self, b: bytes, pos: int) -> tuple[bytes, int] | None:
        """Longest rule matching b[pos:] -> (replacement bytes, matched length), or None."""
        units = self.units
        n = len(units)
        node = (units[0] >> 10) << ((units[0] & 0x200) >> 6)
        best = None
        for i in range(pos, len(b)):
            c = b[i]
            node ^= c
            if node >= n:
                break
            unit = units[node]
            if unit & 0x800000FF != c:
                break
            node ^= (unit >> 10) << ((unit & 0x200) >> 6)
            if node >= n:
                break
            if unit & 0x100:
                best = (units[node] & 0x7FFFFFFF, i + 1 - pos)
        if best is None:
            return None
        off, length = best
        r = self._cache.get(off)
        if r is None:
            if off >= len(self.pool):
                raise DodaiError(f"precompiled_charsmap value {off} points past its string pool")
            stop = self.pool.find(b"\0", off)
            r = self.pool[off:stop if stop >= 0 else len(self.pool)]
            self._cache[off] = r
        return r, length


def _utf8_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2


# ---------------------------------------------------------------- the model

@dataclass
class SpmPiece:
    piece: str
    score: float
    type: int = NORMAL


@dataclass
class SentencePieceModel:
    """A parsed ``.model`` file; ``encode``/``decode`` equal ``sentencepiece.SentencePieceProcessor``'s."""

    pieces: list[SpmPiece]
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id_: int = 2
    pad_id: int = -1
    unk_surface: str = " \u2047 "
    treat_whitespace_as_suffix: bool = False
    split_digits: bool = False
    normalizer_name: str = ""
    charsmap: CharsMap | None = None
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    _word_cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> SentencePieceModel:
        from dodai.io import read_user_bytes

        p = Path(path).expanduser()
        data = bytes(read_user_bytes(p, _MAX_MODEL_BYTES))  # a regular file (not a FIFO or device), size capped
        try:
            return cls.from_bytes(data)
        except DodaiError as e:
            raise DodaiError(f"{p}: not a valid sentencepiece model ({e})") from None

    @classmethod
    def from_bytes(cls, buf: bytes) -> SentencePieceModel:
        pieces: list[SpmPiece] = []
        kw: dict = {}
        try:
            for num, wt, v in _fields(buf):
                if num == 1 and wt == 2:
                    piece, score, typ = None, 0.0, NORMAL
                    for n2, w2, v2 in _fields(buf, *v):
                        if n2 == 1 and w2 == 2:
                            piece = _text(buf, v2)
                        elif n2 == 2 and w2 == 5:
                            (score,) = struct.unpack("<f", v2)
                        elif n2 == 3 and w2 == 0:
                            typ = _int32(v2)
                    if not piece:
                        raise DodaiError(f"piece {len(pieces)} is empty")
                    if typ not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
                        raise DodaiError(f"piece {len(pieces)} has unknown type {typ}")
                    pieces.append(SpmPiece(piece, float(score), typ))
                elif num == 2 and wt == 2:
                    for n2, w2, v2 in _fields(buf, *v):
                        if w2 == 0:
                            key = {3: "model_type", 24: "treat_whitespace_as_suffix", 25: "split_digits",
                                   35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id_",
                                   43: "pad_id"}.get(n2)
                            if key is not None:
                                x = _int32(v2)
                                kw[key] = bool(x) if key in ("treat_whitespace_as_suffix", "split_digits",
                                                             "byte_fallback") else x
                        elif n2 == 44 and w2 == 2:
                            kw["unk_surface"] = _text(buf, v2)
                elif num == 3 and wt == 2:
                    for n2, w2, v2 in _fields(buf, *v):
                        if n2 == 1 and w2 == 2:
                            kw["normalizer_name"] = _text(buf, v2)
                        elif n2 == 2 and w2 == 2:
                            blob = buf[v2[0]:v2[1]]
                            kw["charsmap"] = CharsMap(blob) if blob else None
                        elif n2 in (3, 4, 5) and w2 == 0:
                            kw[{3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                                5: "escape_whitespaces"}[n2]] = bool(_int32(v2))
        except (struct.error, IndexError) as e:
            raise DodaiError(f"malformed protobuf ({e})") from None
        if not pieces:
            raise DodaiError("no pieces")
        m = cls(pieces, **kw)
        m._check()
        return m

    def _check(self) -> None:
        if self.model_type not in (UNIGRAM, BPE):
            raise DodaiError(f"model_type {self.model_type} is not supported (dodai reads unigram and bpe)")
        n = len(self.pieces)
        unk = [i for i, p in enumerate(self.pieces) if p.type == UNKNOWN]
        if len(unk) != 1:
            raise DodaiError(f"expected exactly one unknown piece, found {len(unk)}")
        if self.unk_id != unk[0]:
            raise DodaiError(f"unk_id {self.unk_id} is not the unknown piece ({unk[0]})")
        self.unk_id = unk[0]
        self.piece_to_id: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        for i, p in enumerate(self.pieces):
            d = self.piece_to_id if p.type in (NORMAL, USER_DEFINED, UNUSED) else self.reserved
            if p.piece in d or (p.piece in self.piece_to_id or p.piece in self.reserved):
                raise DodaiError(f"piece {p.piece!r} appears twice")
            d[p.piece] = i
        self.byte_ids: list[int] | None = None
        if self.byte_fallback:
            ids = [self.reserved.get(f"<0x{b:02X}>", -1) for b in range(256)]
            if min(ids) < 0 or any(self.pieces[i].type != BYTE for i in ids):
                raise DodaiError("byte_fallback is on but the 256 <0xXX> byte pieces are missing")
            self.byte_ids = ids
        normal = [p.score for p in self.pieces if p.type == NORMAL]
        self.min_score = min(normal) if normal else 0.0
        self.max_score = max(normal) if normal else 0.0
        self.max_len = max((len(p) for p in self.piece_to_id), default=1)
        self.user_defined = sorted({p.piece for p in self.pieces if p.type == USER_DEFINED}, key=len, reverse=True)
        # A "▁" after a piece's first character would let pieces cross words: then no word cache.
        self.words_independent = not self.treat_whitespace_as_suffix and all(
            SPACE not in s[1:] for s in self.piece_to_id)
        for name in ("bos_id", "eos_id_", "pad_id"):
            if getattr(self, name) >= n:
                raise DodaiError(f"{name.rstrip('_')} {getattr(self, name)} is outside the vocabulary ({n})")

    # ------------------------------------------------------------ tokenizer interface
    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {p.piece: i for i, p in enumerate(self.pieces) if p.type in (UNKNOWN, CONTROL)}

    @property
    def eos_id(self) -> int | None:
        return self.eos_id_ if self.eos_id_ >= 0 else None

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i].piece

    # ------------------------------------------------------------ normalisation
    def _prefix(self, b: bytes, pos: int) -> tuple[bytes, int]:
        if self.user_defined:
            for u in self.user_defined:
                ub = u.encode("utf-8")
                if b.startswith(ub, pos):
                    return ub, len(ub)
        if self.charsmap is not None:
            r = self.charsmap.longest(b, pos)
            if r is not None:
                return r
        n = min(_utf8_len(b[pos]), len(b) - pos)
        return b[pos:pos + n], n

    def normalize(self, text: str) -> str:
        """The library's Normalizer::Normalize (without the alignment it also returns)."""
        b = text.encode("utf-8", "surrogatepass")
        pos, n = 0, len(b)
        if self.remove_extra_whitespaces:
            while pos < n:
                r, used = self._prefix(b, pos)
                if r != b" ":
                    break
                pos += used
        if pos >= n:
            return ""
        ws = SPACE.encode() if self.escape_whitespaces else b" "
        out = bytearray()
        if self.add_dummy_prefix and not self.treat_whitespace_as_suffix:
            out += ws
        prev_space = self.remove_extra_whitespaces
        while pos < n:
            r, used = self._prefix(b, pos)
            if prev_space:
                r = r.lstrip(b" ")
            if r:
                out += r.replace(b" ", ws) if self.escape_whitespaces else r
                prev_space = r.endswith(b" ")
            pos += used
            if not self.remove_extra_whitespaces:
                prev_space = False
        if self.remove_extra_whitespaces:
            while out.endswith(ws):
                del out[len(out) - len(ws):]
        if self.add_dummy_prefix and self.treat_whitespace_as_suffix:
            out += ws
        return out.decode("utf-8", "replace")

    # ------------------------------------------------------------ encoding
    def _words(self, s: str) -> list[str]:
        if not self.words_independent:
            return [s]
        out, start = [], 0
        for i in range(1, len(s)):
            if s[i] == SPACE:
                out.append(s[start:i])
                start = i
        out.append(s[start:])
        return out

    def _viterbi(self, s: str) -> list[tuple[str, int]]:
        n = len(s)
        best = [0.0] * (n + 1)
        back: list = [None] * (n + 1)
        p2i, pieces, max_len = self.piece_to_id, self.pieces, self.max_len
        unk_score = self.min_score - _UNK_PENALTY
        for st in range(n):
            base = best[st]
            single = False
            for e in range(st + 1, min(n, st + max_len) + 1):
                i = p2i.get(s[st:e])
                if i is None:
                    continue
                p = pieces[i]
                if p.type == UNUSED:
                    continue
                # user-defined symbols get a bonus that always wins (length in UTF-8 bytes, as upstream)
                sc = len(s[st:e].encode()) * self.max_score - 0.1 if p.type == USER_DEFINED else p.score
                cand = base + sc
                if back[e] is None or cand > best[e]:
                    best[e], back[e] = cand, (st, i)
                if e == st + 1:
                    single = True
            if not single:
                cand = base + unk_score
                if back[st + 1] is None or cand > best[st + 1]:
                    best[st + 1], back[st + 1] = cand, (st, self.unk_id)
        out = []
        e = n
        while e > 0:
            st, i = back[e]
            out.append((s[st:e], i))
            e = st
        out.reverse()
        return _fuse_unk(out, self.unk_id)

    def _bpe(self, s: str) -> list[tuple[str, int]]:
        # symbols: [piece, prev, next]; user-defined symbols stay whole
        syms: list[list] = []
        i = 0
        while i < len(s):
            ln = 1
            for u in self.user_defined:
                if s.startswith(u, i):
                    ln = len(u)
                    break
            syms.append([s[i:i + ln], len(syms) - 1, len(syms) + 1])
            i += ln
        if syms:
            syms[-1][2] = -1
        heap: list = []
        p2i, pieces = self.piece_to_id, self.pieces

        def add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            merged = syms[left][0] + syms[right][0]
            j = p2i.get(merged)
            if j is None:
                return
            heapq.heappush(heap, (-pieces[j].score, left, right, len(merged)))

        for k in range(len(syms) - 1):
            add(k, k + 1)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = syms[left], syms[right]
            if not a[0] or not b[0] or len(a[0]) + len(b[0]) != size or a[2] != right:
                continue
            a[0] = a[0] + b[0]
            a[2] = b[2]
            if b[2] >= 0:
                syms[b[2]][1] = left
            b[0] = ""
            add(a[1], left)
            add(left, a[2])
        out = []
        k = 0 if syms else -1
        while k >= 0:
            piece = syms[k][0]
            out.extend(self._resegment(piece))
            k = syms[k][2]
        return _fuse_unk(out, self.unk_id)

    def _resegment(self, piece: str) -> list[tuple[str, int]]:
        i = self.piece_to_id.get(piece)
        if i is None:
            i = self.reserved.get(piece, self.unk_id)
        # UNUSED merged pieces are split back into the pair that formed them (the library's rev_merge)
        if self.pieces[i].type == UNUSED and len(piece) > 1:
            for k in range(1, len(piece)):
                if piece[:k] in self.piece_to_id and piece[k:] in self.piece_to_id:
                    return self._resegment(piece[:k]) + self._resegment(piece[k:])
        return [(piece, i)]

    def encode_pieces(self, text: str) -> list[tuple[str, int]]:
        """(piece, id) pairs before byte fallback."""
        s = self.normalize(text)
        seg = self._viterbi if self.model_type == UNIGRAM else self._bpe
        out: list[tuple[str, int]] = []
        cache = self._word_cache
        for w in self._words(s):
            r = cache.get(w)
            if r is None:
                r = seg(w)
                if len(cache) > 200_000:
                    cache.clear()
                cache[w] = r
            if out and r and out[-1][1] == self.unk_id and r[0][1] == self.unk_id:
                out[-1] = (out[-1][0] + r[0][0], self.unk_id)
                r = r[1:]
            out.extend(r)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids, equal to ``SentencePieceProcessor.encode(text)``."""
        ids: list[int] = []
        for piece, i in self.encode_pieces(text):
            if i == self.unk_id and self.byte_ids is not None:
                ids.extend(self.byte_ids[c] for c in piece.encode("utf-8"))
            else:
                ids.append(i)
        return ids

    def encode_as_pieces(self, text: str) -> list[str]:
        return [self.pieces[i].piece for i in self.encode(text)]

    # ------------------------------------------------------------ decoding
    def decode(self, ids: list[int]) -> str:
        """Text of ids, equal to ``SentencePieceProcessor.decode(ids)``."""
        n = len(self.pieces)
        parts: list[str] = []
        pending = bytearray()
        bos_ws = True

        def flush() -> None:
            nonlocal bos_ws
            if pending:
                t = pending.decode("utf-8", "replace")
                pending.clear()
                if bos_ws and self.add_dummy_prefix and not self.treat_whitespace_as_suffix and t.startswith(" "):
                    t = t[1:]
                if t:
                    parts.append(t)
                    bos_ws = False

        for i in ids:
            if not isinstance(i, int) or not 0 <= i < n:
                raise DodaiError(f"token id {i!r} is outside the vocabulary (0..{n - 1})")
            p = self.pieces[i]
            if p.type == BYTE:
                pending.append(int(p.piece[3:5], 16))
                continue
            flush()
            if p.type == CONTROL:
                continue
            if p.type == UNKNOWN:
                t = self.unk_surface
            else:
                t = p.piece
                if bos_ws and self.add_dummy_prefix and not self.treat_whitespace_as_suffix:
                    t = t.removeprefix(SPACE)
                t = t.replace(SPACE, " ")
            if t:
                parts.append(t)
                bos_ws = False
        flush()
        return "".join(parts)

    def save(self, path):
        raise DodaiError("a sentencepiece model read by dodai cannot be re-saved as tokenizer.json yet")


def _fuse_unk(seg: list[tuple[str, int]], unk: int) -> list[tuple[str, int]]:
    """Adjacent unknown pieces become one (the library reports one <unk> per unknown run)."""
    out: list[tuple[str, int]] = []
    for piece, i in seg:
        if i == unk and out and out[-1][1] == unk:
            out[-1] = (out[-1][0] + piece, unk)
        else:
            out.append((piece, i))
    return out


def load_spm(path: str | os.PathLike) -> SentencePieceModel:
    return SentencePieceModel.load(path)
