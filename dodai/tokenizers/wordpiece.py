"""WordPiece tokenization as BERT does it (R4.6, encode side).

WordPiece (Schuster & Nakajima 2012; Wu et al. 2016, "Google's Neural Machine Translation System")
splits a word greedily into the longest vocabulary entry first, then the longest continuation piece
(written with a ``##`` prefix), and so on; a word that cannot be covered at all becomes ``[UNK]``.
BERT (Devlin et al. 2019) puts a *basic tokenizer* in front of it. The pipeline, in order:

1. **special tokens** written literally in the text (``[CLS]``, ``[MASK]`` …) are cut out first and
   kept whole, as HF ``tokenizers`` does for its "added tokens" (matched on the raw text, longest
   first);
2. **clean text**: drop NUL, U+FFFD and control/format characters (categories Cc, Cf, Co; tab, LF and
   CR count as whitespace), then turn every whitespace character into a plain space;
3. **CJK ideographs** (the CJK Unified Ideographs blocks, *not* kana or hangul) get a space on each
   side, so each one becomes its own word;
4. **strip accents** (NFD, then drop non-spacing marks, category Mn) — by default whenever
   lower-casing is on — then **lower-case** character by character (so a final Σ becomes σ, not ς:
   the reference lower-cases per character, without Python's final-sigma rule);
5. **pre-tokenize**: split on whitespace and cut every punctuation character out as its own word
   (Unicode P* categories plus every printable non-alphanumeric ASCII character such as ``$ + < ^``);
6. **WordPiece** each word (words longer than ``max_input_chars_per_word`` characters → ``[UNK]``);
7. **post-process**: ``[CLS] A [SEP]`` (token type 0), or ``[CLS] A [SEP] B [SEP]`` with B's token
   types 1.

Conventions chosen to match HF ``BertTokenizerFast`` (the Rust ``tokenizers`` library) exactly, where
it differs from the original Python BERT code: whitespace is Unicode ``White_Space`` (so U+001C–U+001F
are control characters and are dropped, while U+2028 becomes a space); unassigned code points are
*kept*; the character classes are those of Unicode 8.0, the tables the reference was built with (see
``_U8_*`` below), while NFD and lower-casing use Python's ``unicodedata``.

The tokenizer is pure Python (no torch). ``encode_batch`` pads and returns the attention mask.
Training a vocabulary: :func:`dodai.tokenizers.wordpiece_trainer.train`.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import atomic_write_json, read_user_bytes

_MAX_VOCAB_FILE_BYTES = 512 << 20  # vocab.txt / tokenizer.json / tokenizer_config.json read for a WordPiece model

# ---------------------------------------------------------------------------------------------------
# Character classes (BERT's basic tokenizer, as the Rust reference defines them)

# Unicode White_Space (what Rust's char::is_whitespace tests) plus tab/LF/CR.
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                        "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# CJK Unified Ideographs and their extension/compatibility blocks, as in BERT's _is_chinese_char, with
# one deviation that the reference has: Extension E starts at U+2B920 there (U+2B820 in BERT's code).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

# The Unicode tables of the reference implementation are those of Unicode 8.0 (its category crate),
# not the newer ones in Python's unicodedata; for identical ids on any text, the three classes BERT
# needs are spelled out here as Unicode 8.0 code-point ranges (hex, "start-end"):
#   _U8_REMOVED  what clean-text drops: Cc (but tab, LF, CR), Cf, Co, plus U+FFFD;
#   _U8_PUNCT    punctuation: categories Pc Pd Pe Pf Pi Po Ps, plus the ASCII symbols BERT adds ($+<=>^`|~);
#   _U8_MN       non-spacing marks (Mn), dropped by accent stripping after NFD.
# (Checked code point by code point against HF tokenizers' BertNormalizer/BertPreTokenizer.)
_U8_REMOVED = (
    "0-8,b-c,e-1f,7f-9f,ad,600-605,61c,6dd,70f,180e,200b-200f,202a-202e,2060-2064,2066-206f,e000-f8ff,feff,"
    "fff9-fffb,fffd,110bd,1bca0-1bca3,1d173-1d17a,e0001,e0020-e007f,f0000-ffffd,100000-10fffd"
)
_U8_PUNCT = (
    "21-2f,3a-40,5b-60,7b-7e,a1,a7,ab,b6-b7,bb,bf,37e,387,55a-55f,589-58a,5be,5c0,5c3,5c6,5f3-5f4,609-60a,"
    "60c-60d,61b,61e-61f,66a-66d,6d4,700-70d,7f7-7f9,830-83e,85e,964-965,970,af0,df4,e4f,e5a-e5b,f04-f12,f14,"
    "f3a-f3d,f85,fd0-fd4,fd9-fda,104a-104f,10fb,1360-1368,1400,166d-166e,169b-169c,16eb-16ed,1735-1736,"
    "17d4-17d6,17d8-17da,1800-180a,1944-1945,1a1e-1a1f,1aa0-1aa6,1aa8-1aad,1b5a-1b60,1bfc-1bff,1c3b-1c3f,"
    "1c7e-1c7f,1cc0-1cc7,1cd3,2010-2027,2030-2043,2045-2051,2053-205e,207d-207e,208d-208e,2308-230b,"
    "2329-232a,2768-2775,27c5-27c6,27e6-27ef,2983-2998,29d8-29db,29fc-29fd,2cf9-2cfc,2cfe-2cff,2d70,"
    "2e00-2e2e,2e30-2e42,3001-3003,3008-3011,3014-301f,3030,303d,30a0,30fb,a4fe-a4ff,a60d-a60f,a673,a67e,"
    "a6f2-a6f7,a874-a877,a8ce-a8cf,a8f8-a8fa,a8fc,a92e-a92f,a95f,a9c1-a9cd,a9de-a9df,aa5c-aa5f,aade-aadf,"
    "aaf0-aaf1,abeb,fd3e-fd3f,fe10-fe19,fe30-fe52,fe54-fe61,fe63,fe68,fe6a-fe6b,ff01-ff03,ff05-ff0a,"
    "ff0c-ff0f,ff1a-ff1b,ff1f-ff20,ff3b-ff3d,ff3f,ff5b,ff5d,ff5f-ff65,10100-10102,1039f,103d0,1056f,10857,"
    "1091f,1093f,10a50-10a58,10a7f,10af0-10af6,10b39-10b3f,10b99-10b9c,11047-1104d,110bb-110bc,110be-110c1,"
    "11140-11143,11174-11175,111c5-111c9,111cd,111db,111dd-111df,11238-1123d,112a9,114c6,115c1-115d7,"
    "11641-11643,1173c-1173e,12470-12474,16a6e-16a6f,16af5,16b37-16b3b,16b44,1bc9f,1da87-1da8b"
)
_U8_MN = (
    "300-33f,342,345-36f,483-487,591-5bd,5bf,5c1-5c2,5c4-5c5,5c7,610-61a,64b-65f,670,6d6-6dc,6df-6e4,6e7-6e8,"
    "6ea-6ed,711,730-74a,7a6-7b0,7eb-7f3,816-819,81b-823,825-827,829-82d,859-85b,8e3-902,93a,93c,941-948,94d,"
    "951-957,962-963,981,9bc,9c1-9c4,9cd,9e2-9e3,a01-a02,a3c,a41-a42,a47-a48,a4b-a4d,a51,a70-a71,a75,a81-a82,"
    "abc,ac1-ac5,ac7-ac8,acd,ae2-ae3,b01,b3c,b3f,b41-b44,b4d,b56,b62-b63,b82,bc0,bcd,c00,c3e-c40,c46-c47,"
    "c4a-c4d,c55-c56,c62-c63,c81,cbc,cbf,cc6,ccc-ccd,ce2-ce3,d01,d41-d44,d4d,d62-d63,dca,dd2-dd4,dd6,e31,"
    "e34-e3a,e47-e4e,eb1,eb4-eb9,ebb-ebc,ec8-ecd,f18-f19,f35,f37,f39,f71-f72,f74,f77,f79-f7e,f80,f82-f84,"
    "f86-f87,f8d-f92,f94-f97,f99-f9c,f9e-fa1,fa3-fa6,fa8-fab,fad-fb8,fba-fbc,fc6,102d-1030,1032-1037,"
    "1039-103a,103d-103e,1058-1059,105e-1060,1071-1074,1082,1085-1086,108d,109d,135d-135f,1712-1714,"
    "1732-1734,1752-1753,1772-1773,17b4-17b5,17b7-17bd,17c6,17c9-17d3,17dd,180b-180d,18a9,1920-1922,"
    "1927-1928,1932,1939-193b,1a17-1a18,1a1b,1a56,1a58-1a5e,1a60,1a62,1a65-1a6c,1a73-1a7c,1a7f,1ab0-1abd,"
    "1b00-1b03,1b34,1b36-1b3a,1b3c,1b42,1b6b-1b73,1b80-1b81,1ba2-1ba5,1ba8-1ba9,1bab-1bad,1be6,1be8-1be9,"
    "1bed,1bef-1bf1,1c2c-1c33,1c36-1c37,1cd0-1cd2,1cd4-1ce0,1ce2-1ce8,1ced,1cf4,1cf8-1cf9,1dc0-1df5,"
    "1dfc-1dff,20d0-20dc,20e1,20e5-20f0,2cef-2cf1,2d7f,2de0-2dff,302a-302d,3099-309a,a66f,a674-a67d,"
    "a69e-a69f,a6f0-a6f1,a802,a806,a80b,a825-a826,a8c4,a8e0-a8f1,a926-a92d,a947-a951,a980-a982,a9b3,"
    "a9b6-a9b9,a9bc,a9e5,aa29-aa2e,aa31-aa32,aa35-aa36,aa43,aa4c,aa7c,aab0,aab2-aab4,aab7-aab8,aabe-aabf,"
    "aac1,aaec-aaed,aaf6,abe5,abe8,abed,fb1e,fe00-fe0f,fe20-fe2f,101fd,102e0,10376-1037a,10a01-10a03,"
    "10a05-10a06,10a0c-10a0f,10a38-10a3a,10a3f,10ae5-10ae6,11001,11038-11046,1107f-11081,110b3-110b6,"
    "110b9-110ba,11100-11102,11127-1112b,1112d,11130-11134,11173,11180-11181,111b6-111be,111ca-111cc,"
    "1122f-11231,11234,11236-11237,112df,112e3-112ea,11300-11301,1133c,11340,11366-1136c,11370-11374,"
    "114b3-114b8,114ba,114bf-114c0,114c2-114c3,115b2-115b5,115bc-115bd,115bf-115c0,115dc-115dd,11633-1163a,"
    "1163d,1163f-11640,116ab,116ad,116b0-116b5,116b7,1171d-1171f,11722-11725,11727-1172b,16af0-16af4,"
    "16b30-16b36,16f8f-16f92,1bc9d-1bc9e,1d167-1d169,1d17b-1d182,1d185-1d18b,1d1aa-1d1ad,1d242-1d244,"
    "1da00-1da36,1da3b-1da6c,1da75,1da84,1da9b-1da9f,1daa1-1daaf,1e8d0-1e8d6,e0100-e01ef"
)


def _parse_ranges(spec: str) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for item in spec.split(","):
        a, _, b = item.partition("-")
        starts.append(int(a, 16))
        ends.append(int(b or a, 16))
    return starts, ends


class _RangeSet:
    """Membership in a sorted list of code-point ranges, by bisection (for the reference functions)."""

    def __init__(self, spec: str):
        self.starts, self.ends = _parse_ranges(spec)

    def __contains__(self, c: str) -> bool:
        i = bisect.bisect_right(self.starts, ord(c)) - 1
        return i >= 0 and ord(c) <= self.ends[i]


def _class_re(spec: str) -> str:
    """The ranges as the body of a regex character class."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in zip(*_parse_ranges(spec)))


# -- the plain per-character reference (the oracle the fast path below is tested against) --------------

def normalize_reference(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                        clean_text: bool = True, handle_chinese_chars: bool = True) -> str:
    """Stages 2–4 one character at a time, exactly as described in the module docstring."""
    removed, marks = _RangeSet(_U8_REMOVED), _RangeSet(_U8_MN)
    if clean_text:
        text = "".join(" " if c in _WHITESPACE else c for c in text if c not in removed)
    if handle_chinese_chars:
        text = "".join(f" {c} " if any(lo <= ord(c) <= hi for lo, hi in _CJK_RANGES) else c for c in text)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if c not in marks)
    if lowercase:
        text = "".join(c.lower() for c in text)
    return text


def pre_tokenize_reference(text: str) -> list[str]:
    """Stage 5 one character at a time: whitespace ends a word, punctuation is a word of its own."""
    punct = _RangeSet(_U8_PUNCT)
    words: list[str] = []
    buf: list[str] = []
    for c in text:
        if c in _WHITESPACE or c in punct:
            if buf:
                words.append("".join(buf))
                buf = []
            if c in punct:
                words.append(c)
        else:
            buf.append(c)
    if buf:
        words.append("".join(buf))
    return words


# -- the fast path: the same classes compiled into regexes (built on first use) -----------------------

class _Patterns:
    def __init__(self):
        ws = "".join(re.escape(c) for c in sorted(_WHITESPACE))
        punct = _class_re(_U8_PUNCT)
        self.removed = re.compile(f"[{_class_re(_U8_REMOVED)}]+")
        self.to_space = str.maketrans({c: " " for c in _WHITESPACE})
        self.cjk = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "]")
        self.marks = re.compile(f"[{_class_re(_U8_MN)}]+")
        self.words = re.compile(f"[{punct}]|[^{punct}{ws}]+")


_PATTERNS: _Patterns | None = None


def _patterns() -> _Patterns:
    global _PATTERNS
    if _PATTERNS is None:
        _PATTERNS = _Patterns()
    return _PATTERNS


# ASCII text needs none of the Unicode tables: clean-text maps tab/LF/CR to a space and drops the other
# ASCII control characters (U+0000–U+001F and U+007F; \v and \f are Cc, so they are *dropped*:
# clean-text filters control characters before it maps whitespace), and every printable
# non-alphanumeric ASCII character is punctuation.
_ASCII_CLEAN = {i: None for i in list(range(0, 32)) + [127]}
_ASCII_CLEAN.update({9: " ", 10: " ", 13: " "})
_ASCII_WORDS = re.compile(r"[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~\t\n\v\f\r ]+")  # punctuation | run of the rest


@dataclass
class BatchEncoding:
    """Padded batch: lists of rows, every row of length max(len) in the batch."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]  # 1 for real tokens, 0 for padding
    token_type_ids: list[list[int]]


class WordPieceTokenizer:
    """BERT's tokenizer: basic tokenization + greedy longest-match-first WordPiece.

    ``vocab`` maps token → id (ids need not be contiguous but usually are ``0..V-1``).
    """

    def __init__(self, vocab: dict[str, int], *, lowercase: bool = True, strip_accents: bool | None = None,
                 clean_text: bool = True, handle_chinese_chars: bool = True, unk_token: str = "[UNK]",
                 cls_token: str = "[CLS]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 mask_token: str = "[MASK]", prefix: str = "##", max_input_chars_per_word: int = 100,
                 model_max_length: int = 512, decode_cleanup: bool = True,
                 extra_special_tokens: tuple[str, ...] = ()):
        if not vocab:
            raise DodaiError("WordPiece: the vocabulary is empty")
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        if len(self.id_to_token) != len(self.vocab):
            raise DodaiError("WordPiece: two vocabulary entries share an id")
        self.lowercase = lowercase
        self.strip_accents = strip_accents  # None: strip when lower-casing (BERT's default)
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.prefix = prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.model_max_length = model_max_length
        self.decode_cleanup = decode_cleanup
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        named = {"unk": unk_token, "cls": cls_token, "sep": sep_token, "pad": pad_token, "mask": mask_token}
        for role in ("unk", "cls", "sep", "pad"):
            if named[role] not in self.vocab:
                raise DodaiError(f"WordPiece: the {role} token {named[role]!r} is not in the vocabulary")
        self.unk_id = self.vocab[unk_token]
        self.cls_id, self.sep_id, self.pad_id = self.vocab[cls_token], self.vocab[sep_token], self.vocab[pad_token]
        specials = [t for t in (pad_token, unk_token, cls_token, sep_token, mask_token, *extra_special_tokens)
                    if t in self.vocab]
        self.special_tokens: dict[str, int] = {t: self.vocab[t] for t in specials}
        # Special tokens are matched literally in the raw text, longest first (leftmost-longest).
        alts = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(t) for t in alts)) if alts else None
        self._special_first = {t[0] for t in alts if t}  # cheap pre-check: BERT's all start with "["
        self._max_piece = max(len(t) for t in self.vocab)
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # -- the common tokenizer interface ------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return max(self.id_to_token) + 1

    @property
    def eos_id(self) -> int | None:
        # An encoder has no end-of-generation token; [SEP] only closes a segment.
        return None

    # -- stages --------------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """Stages 2–4: clean text, space out CJK ideographs, strip accents, lower-case
        (the compiled form of :func:`normalize_reference`)."""
        if text.isascii():
            if self.clean_text and not text.isprintable():  # printable ASCII has nothing to clean
                text = text.translate(_ASCII_CLEAN)
            return text.lower() if self.lowercase else text
        pat = _patterns()
        if self.clean_text:
            text = pat.removed.sub("", text).translate(pat.to_space)
        if self.handle_chinese_chars:
            text = pat.cjk.sub(r" \g<0> ", text)
        strip = self.lowercase if self.strip_accents is None else self.strip_accents
        if strip:
            text = pat.marks.sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            # Per character (no final-sigma context rule); str.lower() only differs on Σ.
            text = "".join(c.lower() for c in text) if "Σ" in text else text.lower()
        return text

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        """Stage 5: split on whitespace, every punctuation character a word of its own
        (the compiled form of :func:`pre_tokenize_reference`)."""
        if text.isascii():
            return _ASCII_WORDS.findall(text)
        return _patterns().words.findall(text)

    def wordpiece(self, word: str) -> tuple[int, ...]:
        """Stage 6: greedy longest-match-first; the whole word is [UNK] if any part cannot be matched."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        ids: list[int] = []
        n = len(word)
        if n > self.max_input_chars_per_word:
            ids = [self.unk_id]
            n = 0  # skip the loop
        start = 0
        while start < n:
            end = min(n, start + self._max_piece)
            piece_id = None
            while start < end:
                sub = word[start:end] if start == 0 else self.prefix + word[start:end]
                piece_id = self.vocab.get(sub)
                if piece_id is not None:
                    break
                end -= 1
            if piece_id is None:
                ids = [self.unk_id]
                break
            ids.append(piece_id)
            start = end
        out = tuple(ids)
        if len(self._word_cache) > 200_000:  # bounded memory on endless streams of new words
            self._word_cache.clear()
        self._word_cache[word] = out
        return out

    def _segments(self, text: str) -> list[tuple[str, bool]]:
        """Stage 1: cut literal special tokens out of the raw text → [(piece, is_special)]."""
        if self._special_re is None or not any(c in text for c in self._special_first):
            return [(text, False)]
        out, pos = [], 0
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                out.append((text[pos:m.start()], False))
            out.append((m.group(), True))
            pos = m.end()
        if pos < len(text):
            out.append((text[pos:], False))
        return out

    def _ids_no_special(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, special in self._segments(text):
            if special:
                ids.append(self.special_tokens[piece])
                continue
            cache = self._word_cache
            ids += [i for w in self.pre_tokenize(self.normalize(piece)) for i in (cache.get(w) or self.wordpiece(w))]
        return ids

    # -- public encode/decode ----------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """The token strings (no [CLS]/[SEP])."""
        return [self.id_to_token[i] for i in self._ids_no_special(text)]

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of ``text``: ``[CLS] … [SEP]`` by default; ``max_length`` truncates (specials included)."""
        ids = self._ids_no_special(text)
        n_special = 2 if add_special_tokens else 0
        if max_length is not None:
            if max_length < n_special:
                raise DodaiError(f"WordPiece: max_length {max_length} leaves no room for [CLS]/[SEP]")
            ids = ids[:max_length - n_special]
        return [self.cls_id, *ids, self.sep_id] if add_special_tokens else ids

    def encode_pair(self, text_a: str, text_b: str, add_special_tokens: bool = True,
                    max_length: int | None = None) -> tuple[list[int], list[int]]:
        """``[CLS] A [SEP] B [SEP]`` → (ids, token_type_ids); truncation is longest-first."""
        a, b = self._ids_no_special(text_a), self._ids_no_special(text_b)
        n_special = 3 if add_special_tokens else 0
        if max_length is not None:
            if max_length < n_special:
                raise DodaiError(f"WordPiece: max_length {max_length} leaves no room for the special tokens")
            na, nb = _longest_first(len(a), len(b), max_length - n_special)
            a, b = a[:na], b[:nb]
        if not add_special_tokens:
            return a + b, [0] * len(a) + [1] * len(b)
        ids = [self.cls_id, *a, self.sep_id, *b, self.sep_id]
        return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)

    def encode_batch(self, texts: list[str], max_length: int | None = None,
                     add_special_tokens: bool = True) -> BatchEncoding:
        """Encode each text, pad to the longest (with [PAD]), and return ids, attention mask, token types."""
        rows = [self.encode(t, add_special_tokens=add_special_tokens, max_length=max_length) for t in texts]
        return self.pad(rows)

    def pad(self, rows: list[list[int]]) -> BatchEncoding:
        """Right-pad id rows to a common length."""
        width = max((len(r) for r in rows), default=0)
        ids = [r + [self.pad_id] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        types = [[0] * width for _ in rows]
        return BatchEncoding(ids, mask, types)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Join the pieces: ``##`` continuations glue to the previous piece, others get a space.

        With ``decode_cleanup`` (BERT's default), spaces before ``. ? ! ,`` and in English contractions
        are removed, as the reference WordPiece decoder does.
        """
        toks = []
        for i in ids:
            t = self.id_to_token.get(int(i))
            if t is None:
                raise DodaiError(f"WordPiece: id {i} is outside the vocabulary (size {self.vocab_size})")
            if skip_special_tokens and t in self.special_tokens:
                continue
            toks.append(t)
        parts = []
        for k, t in enumerate(toks):
            if k > 0:
                t = t[len(self.prefix):] if t.startswith(self.prefix) else " " + t
            if self.decode_cleanup:
                t = _cleanup(t)
            parts.append(t)
        return "".join(parts)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    # -- files -------------------------------------------------------------------------------------

    @classmethod
    def from_vocab_txt(cls, path: str | os.PathLike, lower: bool = True, strip_accents: bool | None = None,
                       handle_chinese_chars: bool = True, **kw) -> WordPieceTokenizer:
        """BERT's ``vocab.txt``: one token per line, the id is the line number."""
        p = Path(path)
        try:
            text = read_user_bytes(p, _MAX_VOCAB_FILE_BYTES).decode("utf-8")  # a regular file, size capped
        except UnicodeDecodeError as e:
            raise DodaiError(f"{p}: cannot read vocab.txt ({type(e).__name__})") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for i, tok in enumerate(lines):
            tok = tok.rstrip("\r")
            vocab.setdefault(tok, i)  # a duplicate keeps its first id
        try:
            return cls(vocab, lowercase=lower, strip_accents=strip_accents,
                       handle_chinese_chars=handle_chinese_chars, **kw)
        except DodaiError as e:
            raise DodaiError(f"{p}: {e}") from None

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """An HF ``tokenizer.json`` with a WordPiece model (BertNormalizer, BertPreTokenizer, BERT template)."""
        p = Path(path)
        try:
            obj = json.loads(read_user_bytes(p, _MAX_VOCAB_FILE_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise DodaiError(f"{p}: not a readable tokenizer.json ({type(e).__name__})") from None
        try:
            return cls._from_tokenizer_obj(obj)
        except DodaiError as e:
            raise DodaiError(f"{p}: {e}") from None

    @classmethod
    def _from_tokenizer_obj(cls, obj) -> WordPieceTokenizer:
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise DodaiError("tokenizer.json has no model section")
        model = obj["model"]
        if model.get("type", "WordPiece") != "WordPiece":
            raise DodaiError(f"tokenizer model is {model.get('type')!r}, not WordPiece")
        vocab = model.get("vocab")
        if not isinstance(vocab, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0
                                                  for k, v in vocab.items()):
            raise DodaiError("WordPiece vocab must map strings to non-negative integer ids")
        kw: dict = {"unk_token": model.get("unk_token", "[UNK]"),
                    "prefix": model.get("continuing_subword_prefix", "##"),
                    "max_input_chars_per_word": model.get("max_input_chars_per_word", 100)}
        if not isinstance(kw["unk_token"], str) or not isinstance(kw["prefix"], str):
            raise DodaiError("WordPiece unk_token and continuing_subword_prefix must be strings")
        if type(kw["max_input_chars_per_word"]) is not int or kw["max_input_chars_per_word"] < 1:
            raise DodaiError("WordPiece max_input_chars_per_word must be a positive integer")
        norm = obj.get("normalizer")
        if norm is None:
            kw.update(lowercase=False, strip_accents=False, clean_text=False, handle_chinese_chars=False)
        elif isinstance(norm, dict) and norm.get("type") == "BertNormalizer":
            kw.update(lowercase=bool(norm.get("lowercase", True)), strip_accents=norm.get("strip_accents"),
                      clean_text=bool(norm.get("clean_text", True)),
                      handle_chinese_chars=bool(norm.get("handle_chinese_chars", True)))
            if kw["strip_accents"] is not None and not isinstance(kw["strip_accents"], bool):
                raise DodaiError("BertNormalizer strip_accents must be true, false or null")
        else:
            raise DodaiError(f"unsupported normalizer {_type_of(norm)!r} (dodai reads BertNormalizer)")
        pre = obj.get("pre_tokenizer")
        if not (isinstance(pre, dict) and pre.get("type") == "BertPreTokenizer"):
            raise DodaiError(f"unsupported pre_tokenizer {_type_of(pre)!r} (dodai reads BertPreTokenizer)")
        post = obj.get("post_processor")
        if isinstance(post, dict) and post.get("type") == "BertProcessing":
            try:
                kw["cls_token"], kw["sep_token"] = str(post["cls"][0]), str(post["sep"][0])
            except (KeyError, IndexError, TypeError):
                raise DodaiError("BertProcessing needs cls and sep as [token, id]") from None
        elif isinstance(post, dict) and post.get("type") == "TemplateProcessing":
            kw["cls_token"], kw["sep_token"] = _bert_template(post)
        elif post is not None:
            raise DodaiError(f"unsupported post_processor {_type_of(post)!r}")
        dec = obj.get("decoder")
        if isinstance(dec, dict) and dec.get("type") == "WordPiece":
            kw["decode_cleanup"] = bool(dec.get("cleanup", True))
        extra = []
        for at in obj.get("added_tokens") or []:
            if not isinstance(at, dict) or not isinstance(at.get("content"), str) or type(at.get("id")) is not int:
                raise DodaiError("added_tokens entries need a string content and an integer id")
            if vocab.get(at["content"], at["id"]) != at["id"]:
                raise DodaiError(f"added token {at['content']!r} has id {at['id']}, the vocabulary says "
                                 f"{vocab[at['content']]}")
            vocab.setdefault(at["content"], at["id"])
            if at.get("special", False):
                extra.append(at["content"])
        pad = (obj.get("padding") or {}).get("pad_token") if isinstance(obj.get("padding"), dict) else None
        if isinstance(pad, str) and pad in vocab:
            kw["pad_token"] = pad
        return cls(vocab, extra_special_tokens=tuple(extra), **kw)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """A tokenizer.json, a vocab.txt, or a folder holding either (tokenizer.json preferred; a
        folder's tokenizer_config.json supplies do_lower_case etc. for vocab.txt)."""
        p = Path(path)
        if p.is_dir():
            if (p / "tokenizer.json").is_file():
                return cls.from_tokenizer_json(p / "tokenizer.json")
            if (p / "vocab.txt").is_file():
                cfg = {}
                if (p / "tokenizer_config.json").is_file():
                    try:
                        cfg = json.loads(read_user_bytes(p / "tokenizer_config.json", _MAX_VOCAB_FILE_BYTES)
                                         .decode("utf-8"))
                    except (UnicodeDecodeError, ValueError, RecursionError, DodaiError):
                        raise DodaiError(f"{p / 'tokenizer_config.json'}: not valid JSON") from None
                    if not isinstance(cfg, dict):
                        raise DodaiError(f"{p / 'tokenizer_config.json'}: not a JSON object")
                return cls.from_vocab_txt(p / "vocab.txt", lower=bool(cfg.get("do_lower_case", True)),
                                          strip_accents=cfg.get("strip_accents"),
                                          handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)))
            raise DodaiError(f"{p}: no tokenizer.json or vocab.txt in this folder")
        if p.suffix == ".txt":
            return cls.from_vocab_txt(p)
        return cls.from_tokenizer_json(p)

    def to_json_obj(self) -> dict:
        """The HF ``tokenizer.json`` structure for this tokenizer."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True}
                             for t, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])],
            "normalizer": {"type": "BertNormalizer", "clean_text": self.clean_text,
                           "handle_chinese_chars": self.handle_chinese_chars,
                           "strip_accents": self.strip_accents, "lowercase": self.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": self.cls_token, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": self.sep_token, "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": self.cls_token, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": self.sep_token, "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": self.sep_token, "type_id": 1}}],
                "special_tokens": {t: {"id": t, "ids": [self.vocab[t]], "tokens": [t]}
                                   for t in (self.cls_token, self.sep_token)},
            },
            "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": self.decode_cleanup},
            "model": {"type": "WordPiece", "unk_token": self.unk_token,
                      "continuing_subword_prefix": self.prefix,
                      "max_input_chars_per_word": self.max_input_chars_per_word,
                      "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1]))},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write an HF ``tokenizer.json`` (a folder path gets ``tokenizer.json`` inside it)."""
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, self.to_json_obj())
        return p


def _type_of(obj) -> str:
    return obj.get("type", "?") if isinstance(obj, dict) else type(obj).__name__


def _bert_template(post: dict) -> tuple[str, str]:
    """Check that a TemplateProcessing is BERT's ``[CLS] $A [SEP]`` and return (cls, sep)."""
    single = post.get("single")
    try:
        first, seq, last = single
        cls_tok, sep_tok = first["SpecialToken"]["id"], last["SpecialToken"]["id"]
        ok = seq["Sequence"]["id"] == "A"
    except (TypeError, ValueError, KeyError):
        ok = False
    if not ok or not isinstance(cls_tok, str) or not isinstance(sep_tok, str):
        raise DodaiError("unsupported TemplateProcessing: dodai reads BERT's '[CLS] $A [SEP]' template")
    return cls_tok, sep_tok


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Lengths to keep of a pair under ``budget`` tokens, trimming the longer side first (HF's rule:
    if both must be cut, they share the budget, the odd token going to the second)."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


def _cleanup(t: str) -> str:
    """The WordPiece decoder's English clean-up of spaces before punctuation and contractions."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        t = t.replace(a, b)
    return t
