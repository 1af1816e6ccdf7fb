"""Byte-level BPE (R4.6): train, encode, decode, and HF ``tokenizer.json`` in and out.

Byte-pair encoding (Sennrich et al., 2016) learns merges of frequent adjacent symbol pairs; GPT-2
(Radford et al., 2019) runs it on UTF-8 *bytes* so that every string is encodable with a base
vocabulary of 256 and no unknown token, after splitting text with a regex (see
:mod:`dodai.tokenizers.pretokenize`) so merges never cross word/space/punctuation boundaries.

Training (:meth:`ByteLevelBPE.train`):
  1. split out special tokens (they never take part in merges), pre-tokenize, count distinct
     pre-tokens: a corpus of millions of words becomes tens of thousands of weighted words;
  2. count adjacent pairs once, remembering which words hold each pair;
  3. repeat: pop the best pair from a heap (count, then smallest ``(left id, right id)``), merge it
     only in the words that hold it (words are strings of ``chr(id)``, so finding and replacing a
     pair runs in C), and update only the pairs beside each occurrence (``(L, a) -> (L, new)``,
     ``(b, R) -> (new, R)``, as HF's trainer does).
  Step 3's heap is lazy: a pair's count only falls until the pair itself is merged, except for pairs
  touching the new token, which are pushed afresh; a popped entry whose count is stale is pushed
  back with its true count. The result equals the textbook loop in
  :mod:`dodai.tokenizers.bpe_reference` exactly (tested), including its tie-break.
  Ids: bytes are 0..255, learned tokens 256... in merge order, special tokens after them.

Encoding (:meth:`ByteLevelBPE.encode`): special tokens are matched first (all of them by default,
as HF ``tokenizers`` does with added tokens; ``allowed_special="none"`` encodes their text as plain
text, or pass a set to allow only some). Each remaining segment is pre-tokenized and every pre-token
is looked up in a cache; a miss runs the rank loop (merge the lowest-ranked adjacent pair until none
is mergeable), which for a trained merge list equals applying the merges in order.

Decoding joins token bytes and decodes UTF-8 with ``errors="replace"``: an arbitrary id sequence can
cut a character in half. Round trip: ``decode(encode(s)) == s`` for every string of Unicode scalar
values. Python strings may also hold lone surrogates (U+D800..U+DFFF), which have no UTF-8 form;
``encode`` rejects them with a DodaiError rather than altering the text silently.
"""

from __future__ import annotations

import heapq
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from dodai.errors import DodaiError
from dodai.tokenizers.pretokenize import (
    BYTE_ENCODER,
    PreTokenizer,
    SpecialSplitter,
    bytes_to_symbol,
    symbol_to_bytes,
)

DEFAULT_SPECIALS = ("<|endoftext|>",)
_EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>")
_CACHE_MAX = 200_000  # distinct pre-tokens cached before the cache is dropped (bounded memory)


def count_words(texts: Iterable[str] | str, pretokenizer: PreTokenizer, specials: Iterable[str] = ()) -> Counter:
    """Pre-tokenize ``texts`` (special tokens cut out first) -> ``Counter({pre-token bytes: count})``."""
    if isinstance(texts, str):
        texts = [texts]
    splitter = SpecialSplitter(specials)
    counts: Counter = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise DodaiError(f"training texts must be str, got {type(text).__name__}")
        for seg in splitter.split(text)[::2]:
            counts.update(pretokenizer.split(seg))
    out: Counter = Counter()
    for s, n in counts.items():
        out[_utf8(s)] += n
    return out


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DodaiError(f"text holds a lone surrogate {s[e.start]!r} (U+{ord(s[e.start]):04X}), which has no "
                         f"UTF-8 form; fix the text's decoding") from None


def train_fast(word_counts: Mapping[bytes, int], n_new_tokens: int, min_frequency: int = 2, progress: bool = False):
    """Incremental BPE training; same inputs, outputs and tie-break as ``bpe_reference.train_reference``.

    progress: show a tqdm bar of merges on stderr.

    Each word is held as a ``str`` with one character per symbol, ``chr(id)`` (so a word starts as
    its bytes decoded as Latin-1): finding a pair is then ``str.find`` and merging it everywhere is
    ``str.replace``, both in C and both left to right without overlaps, as the textbook loop merges.
    Ids stay below ``chr``'s limit because vocabularies are capped at 1,000,000.
    """
    vocab = [bytes([i]) for i in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    words = [w.decode("latin-1") for w in word_counts]
    freqs = list(word_counts.values())
    counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> words that hold it (or did: checked on use)
    for wi, wb in enumerate(word_counts):
        f = freqs[wi]
        for pair in zip(wb, wb[1:]):
            counts[pair] = counts.get(pair, 0) + f
            s = where.get(pair)
            if s is None:
                where[pair] = {wi}
            else:
                s.add(wi)
    # Heap of (-count, left, right): the best pair is the smallest entry.
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    merges = []
    target = 256 + n_new_tokens
    min_frequency = max(min_frequency, 1)
    get = counts.get
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=n_new_tokens, unit="tok", desc="bpe merges", file=sys.stderr, leave=False)
    while len(vocab) < target and heap:
        neg, a, b = heapq.heappop(heap)
        pair = (a, b)
        c = get(pair, 0)
        if c != -neg:  # stale entry: put it back with its true count
            if c > 0:
                heapq.heappush(heap, (-c, a, b))
            continue
        if c < min_frequency:
            break
        merged = vocab[a] + vocab[b]
        new = index.get(merged)
        if new is None:
            new = len(vocab)
            vocab.append(merged)
            index[merged] = new
        merges.append((a, b, new))
        if bar is not None and new == len(vocab) - 1:
            bar.update(1)
        touched = set()
        pat, cnew = chr(a) + chr(b), chr(new)
        for wi in where.pop(pair, ()):
            w = words[wi]
            i = w.find(pat)
            if i < 0:
                continue  # a stale entry of `where`: this word lost the pair to an earlier merge
            f = freqs[wi]
            n = len(w)
            # Update only the pairs around each occurrence (as HF's Word::merge does): with left
            # neighbour L (the new token itself if the previous occurrence ends right here) and
            # right neighbour R:   (L, a) -> (L, new)   and   (b, R) -> (new, R).
            end = -1
            while i >= 0:
                if i > 0:
                    left = new if i == end else ord(w[i - 1])
                    counts[(left, a)] -= f
                    p = (left, new)
                    counts[p] = get(p, 0) + f
                    touched.add(p)
                    wh = where.get(p)
                    if wh is None:
                        where[p] = {wi}
                    else:
                        wh.add(wi)
                end = i + 2
                if end < n:
                    right = ord(w[end])
                    counts[(b, right)] -= f
                    p = (new, right)
                    counts[p] = get(p, 0) + f
                    touched.add(p)
                    wh = where.get(p)
                    if wh is None:
                        where[p] = {wi}
                    else:
                        wh.add(wi)
                i = w.find(pat, end)
            words[wi] = w.replace(pat, cnew)
        counts.pop(pair, None)
        for p in touched:
            cnt = get(p, 0)
            if cnt > 0:
                heapq.heappush(heap, (-cnt, p[0], p[1]))
    if bar is not None:
        bar.close()
    return merges, vocab


_HEAP_MIN_LEN = 8  # pre-tokens longer than this (in bytes) merge with the heap; shorter ones with the loop


def _merge_heap(ids: list[int], ranks: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """The rank loop's result in O(n log n), for long pre-tokens (e.g. CJK runs without spaces).

    As HF's ``Word::merge_all``: a heap of ``(rank, position, new id)`` over adjacent pairs; the
    lowest rank merges first, the leftmost among equal ranks (which is the rank loop's "every
    occurrence, left to right"); symbols live in a linked list, and a popped entry whose pair has
    changed since it was pushed is skipped. Tested against the rank loop and the reference.
    """
    n = len(ids)
    ids = list(ids)
    nxt = list(range(1, n + 1))  # n means "no next symbol"
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = ranks.get((ids[i], ids[i + 1]))
        if r is not None:
            heap.append((r[0], i, r[1]))
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, i, new = pop(heap)
        a = ids[i]
        j = nxt[i]
        if a < 0 or j >= n or ranks.get((a, ids[j])) != (rank, new):
            continue  # stale: a symbol of this pair was merged away since
        ids[i] = new
        ids[j] = -1
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            r = ranks.get((new, ids[k]))
            if r is not None:
                push(heap, (r[0], i, r[1]))
        h = prv[i]
        if h >= 0:
            r = ranks.get((ids[h], new))
            if r is not None:
                push(heap, (r[0], h, r[1]))
    out, i = [], 0
    while i < n:
        out.append(ids[i])
        i = nxt[i]
    return out


class ByteLevelBPE:
    """A byte-level BPE tokenizer (see the module docstring for conventions).

    token_bytes: ``{id: bytes}`` for every regular token; each of the 256 single bytes must be one.
    merges: ``[(left_id, right_id, new_id), ...]`` in rank order (rank 0 merges first).
    special_tokens: ``{text: id}`` matched before pre-tokenization and never merged.
    """

    def __init__(self, token_bytes: Mapping[int, bytes], merges: Iterable[tuple[int, int, int]],
                 pretokenizer: PreTokenizer | None = None, special_tokens: Mapping[str, int] | None = None,
                 eos_id: int | None = None, ignore_merges: bool = False, normalizer: str | None = None,
                 nonspecial_added: Iterable[str] = (), allow_missing_bytes: bool = False):
        self.pretokenizer = pretokenizer or PreTokenizer.from_pattern("gpt4")
        specials_all = dict(special_tokens or {})
        # Added tokens HF marks special=false still split text like specials; they are not "special".
        self._nonspecial = set(nonspecial_added)
        ids = list(token_bytes) + list(specials_all.values())
        if not ids:
            raise DodaiError("empty vocabulary")
        if min(ids) < 0:
            raise DodaiError(f"negative token id {min(ids)}")
        self.vocab_size = max(ids) + 1
        if self.vocab_size > 10_000_000:
            raise DodaiError(f"token id {self.vocab_size - 1} is implausibly large for a vocabulary")
        table: list[bytes | None] = [None] * self.vocab_size
        self._bytes_to_id: dict[bytes, int] = {}
        for i, b in token_bytes.items():
            table[i] = bytes(b)
            self._bytes_to_id.setdefault(bytes(b), i)
        byte_ids = [self._bytes_to_id.get(bytes([x])) for x in range(256)]
        missing = [x for x in range(256) if byte_ids[x] is None]
        # allow_missing_bytes: some real vocabularies (SmolLM2's) lack a few byte tokens; HF then
        # drops those bytes before merging (BPE without unk_token), and so do we.
        self._missing_bytes = bool(missing)
        if missing and not allow_missing_bytes:
            raise DodaiError(f"byte-level vocabulary lacks {len(missing)} of the 256 single-byte tokens "
                             f"(e.g. byte {missing[0]}); cannot encode arbitrary text")
        self.byte_ids: list[int] = byte_ids
        self._specials_all = specials_all
        for s, i in specials_all.items():
            table[i] = s.encode("utf-8")
        self._id_bytes = table
        self.merges: list[tuple[int, int, int]] = [tuple(m) for m in merges]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for r, (a, b, c) in enumerate(self.merges):
            for x in (a, b, c):
                if not (0 <= x < self.vocab_size) or table[x] is None:
                    raise DodaiError(f"merge {r} refers to unknown token id {x}")
            self._ranks[(a, b)] = (r, c)  # a later duplicate wins, as in HF tokenizers
        self.ignore_merges = bool(ignore_merges)
        if normalizer not in (None, "NFC", "NFD", "NFKC", "NFKD"):
            raise DodaiError(f"unsupported normalizer {normalizer!r}")
        self.normalizer = normalizer
        self._special_ids = {i for s, i in specials_all.items() if s not in self._nonspecial}
        if eos_id is None:
            eos_id = next((specials_all[n] for n in _EOS_NAMES if n in specials_all), None)
        self.eos_id = eos_id
        self._special_splitter = SpecialSplitter(specials_all)
        self._splitters: dict[frozenset, SpecialSplitter] = {}
        self._cache: dict[str, tuple[int, ...]] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int, special_tokens: Iterable[str] = DEFAULT_SPECIALS,
              pattern: str = "gpt4", min_frequency: int = 2, reference: bool = False,
              progress: bool = False) -> ByteLevelBPE:
        """Learn a tokenizer of at most ``vocab_size`` ids (256 bytes + merges + specials).

        pattern: ``"gpt4"``, ``"gpt2"`` or a regex (``regex`` module syntax, Isolated split).
        min_frequency: stop once the best pair occurs fewer times (as HF's trainer option; default 2,
        so the vocabulary may come out smaller than asked on a small corpus).
        reference: train with the slow textbook loop instead (for tests and the benchmark).
        progress: show a progress bar of the merges on stderr.
        """
        specials = list(dict.fromkeys(special_tokens))
        if any(not isinstance(s, str) or not s for s in specials):
            raise DodaiError("special tokens must be non-empty strings")
        n_new = int(vocab_size) - 256 - len(specials)
        if n_new < 0:
            raise DodaiError(f"vocab size {vocab_size} is too small: byte-level BPE needs 256 byte tokens "
                             f"+ {len(specials)} special token(s) at least")
        if vocab_size > 1_000_000:
            raise DodaiError(f"vocab size {vocab_size} is too large (at most 1,000,000)")
        pre = PreTokenizer.from_pattern(pattern)
        word_counts = count_words(texts, pre, specials)
        if not word_counts:
            raise DodaiError("no training text (empty corpus)")
        if reference:
            from dodai.tokenizers.bpe_reference import train_reference

            merges, vocab = train_reference(word_counts, n_new, min_frequency)
        else:
            merges, vocab = train_fast(word_counts, n_new, min_frequency, progress=progress)
        token_bytes = dict(enumerate(vocab))
        spec = {s: len(vocab) + k for k, s in enumerate(specials)}
        return cls(token_bytes, merges, pre, spec)

    @classmethod
    def from_vocab_merges(cls, vocab: Mapping[str, int], merges: Iterable[tuple[str, str] | str],
                          pattern: str | PreTokenizer = "gpt4", special_tokens: Mapping[str, int] | None = None,
                          eos_id: int | None = None, ignore_merges: bool = False, add_prefix_space: bool = False,
                          normalizer: str | None = None, nonspecial_added: Iterable[str] = (),
                          allow_missing_bytes: bool = False) -> ByteLevelBPE:
        """Build from an existing vocabulary in GPT-2 byte-unicode form (``{'Ġthe': 262, ...}``).

        merges: ranked pairs of vocabulary strings (``("Ġ", "t")`` or ``"Ġ t"``); their
        concatenation must be in ``vocab``. special_tokens: ``{text: id}``; their entries in
        ``vocab``, if any, are taken as specials, not as byte strings. Ids may be arbitrary.
        """
        special_tokens = dict(special_tokens or {})
        pre = pattern if isinstance(pattern, PreTokenizer) else PreTokenizer.from_pattern(pattern, add_prefix_space)
        token_bytes: dict[int, bytes] = {}
        special_ids = set(special_tokens.values())
        for s, i in vocab.items():
            if not isinstance(s, str) or not isinstance(i, int) or isinstance(i, bool):
                raise DodaiError(f"vocabulary entry {s!r}: {i!r} is not text -> integer id")
            if s in special_tokens or i in special_ids:
                continue
            token_bytes[i] = symbol_to_bytes(s)
        ids = {}
        for i, b in token_bytes.items():
            ids.setdefault(b, i)
        merge_ids = []
        for r, m in enumerate(merges):
            if isinstance(m, str):
                parts = m.split(" ")
                if len(parts) != 2:
                    raise DodaiError(f"merge {r} {m!r} is not two space-separated tokens")
            else:
                parts = list(m)
            if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                raise DodaiError(f"merge {r} {m!r} is not a pair of tokens")
            a, b = parts
            try:
                merge_ids.append((vocab[a], vocab[b], vocab[a + b]))
            except KeyError as e:
                raise DodaiError(f"merge {r} ({a!r}, {b!r}) uses {e.args[0]!r}, which is not in the vocabulary") \
                    from None
        return cls(token_bytes, merge_ids, pre, special_tokens, eos_id=eos_id, ignore_merges=ignore_merges,
                   normalizer=normalizer, nonspecial_added=nonspecial_added,
                   allow_missing_bytes=allow_missing_bytes)

    # ----------------------------------------------------------------- properties
    @property
    def special_tokens(self) -> dict[str, int]:
        """``{text: id}`` of the special tokens (HF added tokens with special=true)."""
        return {s: i for s, i in self._specials_all.items() if s not in self._nonspecial}

    @property
    def special_tokens_all(self) -> dict[str, int]:
        """All tokens matched before pre-tokenization (special or not)."""
        return dict(self._specials_all)

    def id_to_token(self, i: int) -> str:
        """An id -> its tokenizer.json string (byte-unicode form, or the special token's text)."""
        b = self._id_bytes[i] if 0 <= i < self.vocab_size else None
        if b is None:
            raise DodaiError(f"token id {i} is not in the vocabulary (size {self.vocab_size})")
        for s, j in self._specials_all.items():
            if j == i:
                return s
        return bytes_to_symbol(b)

    def token_bytes(self, i: int) -> bytes:
        b = self._id_bytes[i] if 0 <= i < self.vocab_size else None
        if b is None:
            raise DodaiError(f"token id {i} is not in the vocabulary (size {self.vocab_size})")
        return b

    # ----------------------------------------------------------------- encode / decode
    def _normalize(self, text: str) -> str:
        return unicodedata.normalize(self.normalizer, text) if self.normalizer else text

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """One pre-token -> ids (cache miss path): the rank loop."""
        b = _utf8(piece)
        if self.ignore_merges:
            whole = self._bytes_to_id.get(b)
            if whole is not None:
                out = (whole,)
                self._cache[piece] = out
                return out
        byte_ids = self.byte_ids
        ids = [byte_ids[x] for x in b]
        if self._missing_bytes:
            ids = [i for i in ids if i is not None]
        ranks = self._ranks
        if len(ids) > _HEAP_MIN_LEN:
            ids = _merge_heap(ids, ranks)
        while len(ids) > 1:
            # The adjacent pair with the lowest merge rank; none -> done.
            best, best_rank, new = None, None, 0
            for i in range(len(ids) - 1):
                r = ranks.get((ids[i], ids[i + 1]))
                if r is not None and (best_rank is None or r[0] < best_rank):
                    best, best_rank, new = i, r[0], r[1]
            if best is None:
                break
            a, c = ids[best], ids[best + 1]
            merged, i, n = ids[:best], best, len(ids)
            while i < n:  # every occurrence of that pair, left to right, from the first one on
                if i + 1 < n and ids[i] == a and ids[i + 1] == c:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        out = tuple(ids)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[piece] = out
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ignoring special tokens (their text is encoded like any other text)."""
        if self.normalizer:
            text = self._normalize(text)
        out: list[int] = []
        ext = out.extend
        get = self._cache.get
        bpe = self._bpe
        for piece in self.pretokenizer.split(text):
            ids = get(piece)
            if ids is None:
                ids = bpe(piece)
            ext(ids)
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = "all") -> list[int]:
        """Text -> ids. allowed_special: "all" (default, HF behaviour), "none", or a set of specials."""
        if not isinstance(text, str):
            raise DodaiError(f"encode expects str, got {type(text).__name__}")
        if allowed_special == "all":
            splitter = self._special_splitter
        elif allowed_special == "none":
            return self.encode_ordinary(text)
        else:
            key = frozenset(allowed_special)
            unknown = key - set(self._specials_all)
            if unknown:
                raise DodaiError(f"not special tokens of this tokenizer: {sorted(unknown)}")
            splitter = self._splitters.get(key)
            if splitter is None:
                splitter = self._splitters[key] = SpecialSplitter(key)
        parts = splitter.split(text)
        if len(parts) == 1:
            return self.encode_ordinary(text)
        out: list[int] = []
        specials = self._specials_all
        for i, part in enumerate(parts):
            if i % 2:
                out.append(specials[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._id_bytes
        ids = list(ids)
        try:
            if ids and min(ids) < 0:
                raise IndexError
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next((i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size
                        or table[i] is None), None)
            raise DodaiError(f"token id {bad!r} is not in the vocabulary (size {self.vocab_size})") from None

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD."""
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------- tokenizer.json
    def to_hf_dict(self) -> dict:
        from dodai.tokenizers.hf_json import bpe_to_dict

        return bpe_to_dict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an HF ``tokenizer.json`` (a folder gets ``tokenizer.json`` inside). Returns the file."""
        from dodai.tokenizers.hf_json import write_tokenizer_json

        return write_tokenizer_json(path, self.to_hf_dict())

    @classmethod
    def from_hf_dict(cls, d: dict) -> ByteLevelBPE:
        """The tokenizer.json object of a byte-level BPE -> a tokenizer."""
        from dodai.tokenizers.hf_json import bpe_parts

        p = bpe_parts(d)
        return cls.from_vocab_merges(p.pop("vocab"), p.pop("merges"), p.pop("pre"), p.pop("specials"), **p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ByteLevelBPE:
        """Read a byte-level BPE ``tokenizer.json`` (dodai's or one written by HF tokenizers)."""
        from dodai.tokenizers.hf_json import read_tokenizer_json

        d = read_tokenizer_json(path)
        try:
            return cls.from_hf_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise DodaiError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {e})") from None

    def __repr__(self) -> str:
        return (f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"pre={self.pretokenizer.describe()}, specials={len(self._specials_all)})")


__all__ = ["ByteLevelBPE", "count_words", "train_fast", "BYTE_ENCODER"]
