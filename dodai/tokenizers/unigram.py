"""Unigram language-model tokenizer: the SentencePiece algorithm (trainer, Viterbi encoder, sampling).

Kudo 2018, "Subword Regularization: Improving Neural Network Translation Models with Multiple
Subword Candidates"; Kudo & Richardson 2018, "SentencePiece". A text is segmented into pieces x_1..x_M
from a vocabulary V with probabilities p(x); a segmentation's log-likelihood is sum_i log p(x_i).

Text handling (``normalize.py``): NFKC, whitespace runs -> one space, strip, " " -> "▁" with a
dummy "▁" prefix; words start at each "▁" and pieces never cross them (HF: Metaspace split).

Training (``UnigramTokenizer.train``), as in sentencepiece's unigram trainer:
1. Seed vocabulary: every required character (the most frequent characters covering
   ``character_coverage`` of the text), plus frequent substrings: sentencepiece finds them with a
   suffix array; dodai counts every substring of up to ``max_piece_length`` characters that occurs
   at least twice and is followed by at least two different characters (right-branching, like the
   internal nodes of sentencepiece's suffix tree), keeps the ``seed_size`` best by count x length,
   and (as sentencepiece does) never lets a piece mix Unicode scripts (coarse classes, see
   ``normalize.script``), carry "▁" after its first character, or hold a non-required character.
   Initial log p = log(score / sum of scores).
2. EM, ``num_sub_iterations`` rounds per pruning step. E-step: forward-backward over each word's
   lattice gives the expected count c(x) of every piece,
   alpha[j] = logsumexp_{i: w[i:j] in V} alpha[i] + log p(w[i:j]); beta symmetric;
   c(x) += freq(w) * exp(alpha[i] + log p(x) + beta[j] - alpha[n]).
   M-step (sentencepiece's Bayesian variant): drop pieces with c(x) < 0.5, then
   log p(x) = digamma(c(x)) - digamma(sum c).
3. Pruning: for each piece x, its alternative segmentation is the Viterbi segmentation of x without x
   (if x does not win its own lattice it is dropped); with Viterbi counts f over the corpus and
   F(x) = share of words (by frequency) whose best segmentation uses x, the loss of removing x is
   F(x) * [ (log f(x) - log sum f) - sum_{a in alt(x)} (log(f(a)+f(x)) - log(sum f + f(x)(|alt|-1))) ];
   keep the max(1.1 x target, shrinking_factor x size) pieces with the largest loss (single characters
   always stay). Repeat 2-3 until at most 1.1 x target pieces, then keep the best-scoring ones.
4. Ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2 (sentencepiece's defaults), then the 256 byte pieces
   ``<0x00>``..``<0xFF>`` when ``byte_fallback``, then pieces by descending score.

Encoding: Viterbi (best path; unknown characters score min(score) - 10 like sentencepiece and HF;
adjacent unknowns fuse, then become their UTF-8 byte pieces under byte fallback, else ``<unk>``).
The plain O(n^2) oracle is ``unigram_reference.viterbi``. ``encode`` runs the same Viterbi in C
(``_native/unigram.c``: a code-point trie of the pieces, compiled on first use with the system C
compiler, loaded with ctypes) when a compiler exists, else the Python/numpy path ``encode_python``;
both are tested equal to the oracle. ``sample_encode`` draws a segmentation
with probability proportional to P(x)^alpha: forward-filtering backward-sampling over the whole
lattice (nbest <= 0), or sampling among the n best paths (nbest > 0).

Semantics follow HF ``tokenizers``' Unigram model so that our tokenizer.json encodes identically there:
every vocabulary entry (bytes included) is a candidate piece; special tokens in the input text are
split out before normalisation; decoding skips special tokens.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from pathlib import Path

from dodai.errors import DodaiError
from dodai.tokenizers.normalize import SPACE, WS_CLASS, normalize, script, to_words

UNK_PENALTY = 10.0
SPECIALS = ("<unk>", "<s>", "</s>")
_NEG_INF = float("-inf")


def digamma(x: float) -> float:
    """psi(x) for x > 0: recurrence psi(x) = psi(x+1) - 1/x up to x >= 7, then the asymptotic series."""
    r = 0.0
    while x < 7.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _Lattice:
    """Piece look-up for lattices: score by piece, the set of all piece prefixes (to stop early)."""

    def __init__(self, scores: dict[str, float]):
        self.scores = scores
        self.max_len = max((len(p) for p in scores), default=1)
        self.prefixes = {p[:k] for p in scores for k in range(1, len(p) + 1)}

    def edges(self, w: str, unk_score: float, skip_whole: bool = False) -> list[tuple[int, int, float, bool]]:
        """All lattice edges (start, end, score, is_unknown), by ascending start then end."""
        n, out = len(w), []
        scores, prefixes = self.scores, self.prefixes
        for st in range(n):
            single = False
            for e in range(st + 1, min(n, st + self.max_len) + 1):
                sub = w[st:e]
                if sub not in prefixes:
                    break
                sc = scores.get(sub)
                if sc is None or (skip_whole and st == 0 and e == n):
                    continue
                out.append((st, e, sc, False))
                if e == st + 1:
                    single = True
            if not single:
                out.append((st, st + 1, unk_score, True))
        return out

    def viterbi(self, w: str, unk_score: float, skip_whole: bool = False) -> list[tuple[int, int, bool]]:
        """Best path [(start, end, is_unknown)]; equal to unigram_reference.viterbi (same tie order)."""
        n = len(w)
        best = [0.0] + [_NEG_INF] * n
        back: list = [None] * (n + 1)
        scores, prefixes, max_len = self.scores, self.prefixes, self.max_len
        for st in range(n):
            b = best[st]
            single = False
            for e in range(st + 1, min(n, st + max_len) + 1):
                sub = w[st:e]
                if sub not in prefixes:
                    break
                sc = scores.get(sub)
                if sc is None or (skip_whole and st == 0 and e == n):
                    continue
                c = b + sc
                if back[e] is None or c > best[e]:
                    best[e], back[e] = c, (st, False)
                if e == st + 1:
                    single = True
            if not single:
                c = b + unk_score
                if back[st + 1] is None or c > best[st + 1]:
                    best[st + 1], back[st + 1] = c, (st, True)
        out = []
        j = n
        while j > 0:
            i, unk = back[j]
            out.append((i, j, unk))
            j = i
        return out[::-1]


class _NativeEncoder:
    """The compiled Viterbi encoder (``_native/unigram.c``) over one tokenizer's pieces.

    The C code builds a trie of the pieces over code points and runs the same lattice, tie order and
    unknown handling as ``_Lattice.viterbi`` + ``UnigramTokenizer._ids_of_path`` on the whole text.
    """

    def __init__(self, lib, tok: UnigramTokenizer):
        import ctypes
        import weakref

        import numpy as np

        self.lib, self.np = lib, np
        cps = np.frombuffer("".join(tok.pieces).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        offsets = np.zeros(len(tok.pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in tok.pieces], out=offsets[1:])
        scores = np.array([s for _, s in tok.vocab], dtype=np.float64)
        ids = np.arange(len(tok.pieces), dtype=np.int32)
        self.trie = lib.dodai_trie_new(cps.ctypes.data, offsets.ctypes.data, scores.ctypes.data, ids.ctypes.data,
                                       len(tok.pieces))
        if not self.trie:
            raise MemoryError("dodai: out of memory building the Unigram trie")
        weakref.finalize(self, lib.dodai_trie_free, ctypes.c_void_p(self.trie))
        self.byte_ids = np.array(tok._byte_ids, dtype=np.int32) if tok._byte_ids is not None else None
        self.unk_id = -1 if tok.unk_id is None else tok.unk_id
        self.unk_score = tok.unk_score

    def encode(self, nfkc_text: str) -> list[int] | None:
        """Ids of NFKC-normalised text (the C code does the whitespace steps of ``normalize`` and
        ``to_words``), or None when the C path cannot encode it (see UnigramTokenizer.encode)."""
        try:
            buf = nfkc_text.encode("utf-32-le")
        except UnicodeEncodeError:
            return None
        n = len(nfkc_text)
        out = self.np.empty(4 * (n + 1), dtype=self.np.int32)
        bids = self.byte_ids.ctypes.data if self.byte_ids is not None else None
        k = self.lib.dodai_unigram_encode(self.trie, buf, n, ord(SPACE), self.unk_score, bids, self.unk_id,
                                          out.ctypes.data)
        return out[:k].tolist() if k >= 0 else None


_NFKC_CHUNK = 1 << 15


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster on long texts that are mostly normalised already.

    CPython normalises the whole string as soon as one character fails its quick check; here only the
    lines that fail it are normalised. Cutting before a line feed is safe: "\n" is a starter that
    never composes with a neighbour, so NFKC(a + "\n" + b) = NFKC(a) + "\n" + NFKC(b) (UAX #15,
    stable code points).
    """
    import unicodedata

    if len(text) <= _NFKC_CHUNK or unicodedata.is_normalized("NFKC", text):
        return unicodedata.normalize("NFKC", text)
    out, pos, n = [], 0, len(text)
    while pos < n:
        cut = text.find("\n", pos + _NFKC_CHUNK)
        end = n if cut < 0 else cut + 1
        chunk = text[pos:end]
        if unicodedata.is_normalized("NFKC", chunk):
            out.append(chunk)
        else:
            out.append("\n".join([unicodedata.normalize("NFKC", line) for line in chunk.split("\n")]))
        pos = end
    return "".join(out)


class UnigramTokenizer:
    """A Unigram LM tokenizer: ``vocab`` is [(piece, log-probability)], id = position."""

    def __init__(self, vocab: list[tuple[str, float]], unk_id: int | None = 0, byte_fallback: bool = False,
                 special_tokens: list[str] | None = None):
        if not vocab:
            raise DodaiError("a Unigram vocabulary needs at least one piece")
        self.vocab = [(str(p), float(s)) for p, s in vocab]
        self.pieces = [p for p, _ in self.vocab]
        self.index: dict[str, int] = {}
        for i, p in enumerate(self.pieces):
            if not p:
                raise DodaiError(f"Unigram piece {i} is empty")
            if p in self.index:
                raise DodaiError(f"Unigram piece {p!r} appears twice")
            self.index[p] = i
        if unk_id is not None and not 0 <= unk_id < len(self.pieces):
            raise DodaiError(f"unk_id {unk_id} is outside the vocabulary (0..{len(self.pieces) - 1})")
        self.unk_id = unk_id
        self.byte_fallback = bool(byte_fallback)
        if special_tokens is None:
            special_tokens = [p for p in SPECIALS if p in self.index]
        for t in special_tokens:
            if t not in self.index:
                raise DodaiError(f"special token {t!r} is not in the vocabulary")
        self.special_tokens = {t: self.index[t] for t in special_tokens}
        self._special_ids = set(self.special_tokens.values())
        self.min_score = min(s for _, s in self.vocab)
        self.unk_score = self.min_score - UNK_PENALTY
        self._lattice = _Lattice({p: s for p, s in self.vocab})
        ids = [self.index.get(f"<0x{b:02X}>") for b in range(256)]
        self._byte_ids = ids if self.byte_fallback and all(i is not None for i in ids) else None
        self._cache: dict[str, list[int]] = {}
        self._special_re = None
        self._native: _NativeEncoder | bool | None = None  # built on first encode(); False: unavailable
        self.use_native = True  # False: encode() takes the Python path (tests compare the two)

    # ------------------------------------------------------------ interface
    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @property
    def eos_id(self) -> int | None:
        return self.special_tokens.get("</s>")

    def _split_specials(self, text: str) -> list[tuple[str, int | None]]:
        """Special tokens in the text are cut out first (HF's added tokens), longest first."""
        if not self.special_tokens:
            return [(text, None)]
        if self._special_re is None:
            import re

            order = sorted(self.special_tokens, key=len, reverse=True)
            self._special_re = re.compile("(" + "|".join(map(re.escape, order)) + ")")
        out: list[tuple[str, int | None]] = []
        for k, part in enumerate(self._special_re.split(text)):
            if k % 2:
                out.append((part, self.special_tokens[part]))
            elif part:
                out.append((part, None))
        return out

    def _ids_of_path(self, w: str, path: list[tuple[int, int, bool]]) -> list[int]:
        ids: list[int] = []
        k = 0
        while k < len(path):
            st, e, unk = path[k]
            if not unk:
                ids.append(self.index[w[st:e]])
                k += 1
                continue
            while k + 1 < len(path) and path[k + 1][2]:  # fuse adjacent unknowns
                k += 1
                e = path[k][1]
            if self._byte_ids is not None:
                ids.extend(self._byte_ids[b] for b in w[st:e].encode("utf-8"))
            elif self.unk_id is not None:
                ids.append(self.unk_id)
            else:
                raise DodaiError(f"cannot encode {w[st:e]!r}: no <unk> and no byte fallback")
            k += 1
        return ids

    def _encode_word(self, w: str) -> list[int]:
        r = self._cache.get(w)
        if r is None:
            r = self._ids_of_path(w, self._lattice.viterbi(w, self.unk_score))
            if len(self._cache) > 500_000:
                self._cache.clear()
            self._cache[w] = r
        return r

    def encode(self, text: str) -> list[int]:
        """Token ids of text (best segmentation of every word).

        Uses the compiled Viterbi (``_native/unigram.c``) when a C compiler is available, else the
        Python/numpy path ``encode_python``; both give identical ids (tested).
        """
        nat = self._native_encoder() if self.use_native else None
        if nat is None:
            return self.encode_python(text)
        ids: list[int] = []
        for seg, sid in self._split_specials(text):
            if sid is not None:
                ids.append(sid)
                continue
            got = nat.encode(nfkc(seg))
            # None: text the C path does not take (lone surrogates, nothing to encode an unknown
            # character with); the Python path encodes it or raises the usual error
            ids.extend(self.encode_python(seg) if got is None else got)
        return ids

    def _native_encoder(self) -> _NativeEncoder | None:
        if self._native is None:
            from dodai.tokenizers import _native

            lib = _native.unigram()
            self._native = _NativeEncoder(lib, self) if lib is not None else False
        return self._native or None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_native"] = None  # a C pointer: rebuilt on first use after unpickling
        return state

    def encode_python(self, text: str) -> list[int]:
        """encode() without the compiled path: per-word Viterbi in Python, batched numpy Viterbi for
        many new words, and a per-word cache."""
        segs = [(seg, sid, to_words(normalize(seg)) if sid is None else None)
                for seg, sid in self._split_specials(text)]
        self._warm([w for *_, ws in segs if ws for w in ws])
        ids: list[int] = []
        for _, sid, ws in segs:
            if sid is not None:
                ids.append(sid)
                continue
            for w in ws:
                ids.extend(self._encode_word(w))
        return ids

    def _warm(self, ws: list[str], min_chars: int = 4096) -> None:
        """Viterbi for many new words at once on flat numpy lattices (long texts, e.g. Japanese lines)."""
        cache = self._cache
        new = list(dict.fromkeys(w for w in ws if w not in cache))
        if sum(map(len, new)) < min_chars:
            return
        import numpy as np

        lat = _CorpusLattice([(w, 1) for w in new], self.pieces)
        score = np.array([s for _, s in self.vocab] + [self.unk_score])
        if len(cache) + len(new) > 500_000:
            cache.clear()
        # the lattice's piece ids are token ids; only words with unknown characters need _ids_of_path
        wid, edge = lat.best_edges(score)
        pid = lat.pid[edge]
        has_unk = set(wid[pid == lat.unk].tolist())
        cuts = np.searchsorted(wid, np.arange(1, len(new))).tolist()
        for k, (w, ids) in enumerate(zip(new, np.split(pid, cuts))):
            if k in has_unk:
                path = [(int(a), int(b), bool(u)) for a, b, u in
                        zip(lat.src[edge[wid == k]] - lat.bases[k], lat.dst[edge[wid == k]] - lat.bases[k],
                            ids == lat.unk)]
                cache[w] = self._ids_of_path(w, path)
            else:
                cache[w] = ids.tolist()

    def encode_as_pieces(self, text: str) -> list[str]:
        return [self.pieces[i] for i in self.encode(text)]

    def sample_encode(self, text: str, alpha: float = 0.1, nbest: int = -1, seed: int | None = None,
                      rng: random.Random | None = None) -> list[int]:
        """One segmentation sampled with probability ~ P(x)^alpha (subword regularisation).

        nbest <= 0: forward-filtering backward-sampling over the full lattice; nbest > 0: a draw
        among the nbest best segmentations of each word.
        """
        if not alpha >= 0:
            raise DodaiError(f"alpha must be >= 0, got {alpha}")
        rng = rng or random.Random(seed)
        ids: list[int] = []
        for seg, sid in self._split_specials(text):
            if sid is not None:
                ids.append(sid)
                continue
            for w in to_words(normalize(seg)):
                path = self._sample_ffbs(w, alpha, rng) if nbest <= 0 else self._sample_nbest(w, alpha, nbest, rng)
                ids.extend(self._ids_of_path(w, path))
        return ids

    def _sample_ffbs(self, w: str, alpha: float, rng: random.Random) -> list[tuple[int, int, bool]]:
        n = len(w)
        edges = self._lattice.edges(w, self.unk_score)
        fwd = [0.0] + [_NEG_INF] * n
        into: list[list] = [[] for _ in range(n + 1)]
        for st, e, sc, unk in edges:  # ascending start: fwd[st] is final when used
            fwd[e] = _logaddexp(fwd[e], fwd[st] + alpha * sc)
            into[e].append((st, sc, unk))
        out = []
        j = n
        while j > 0:
            r = rng.random()
            acc = 0.0
            choice = into[j][-1]
            for cand in into[j]:
                acc += math.exp(fwd[cand[0]] + alpha * cand[1] - fwd[j])
                if r < acc:
                    choice = cand
                    break
            out.append((choice[0], j, choice[2]))
            j = choice[0]
        return out[::-1]

    def nbest(self, w: str, n: int) -> list[tuple[float, list[tuple[int, int, bool]]]]:
        """The n best segmentations of one word (k-best dynamic programme), best first."""
        size = len(w)
        # kbest[j] = up to n entries (score, start, rank-at-start, is_unknown), best first
        kbest: list[list] = [[(0.0, -1, -1, False)]] + [[] for _ in range(size)]
        for st, e, sc, unk in self._lattice.edges(w, self.unk_score):
            kbest[e].extend((s + sc, st, r, unk) for r, (s, *_rest) in enumerate(kbest[st]))
            kbest[e].sort(key=lambda t: -t[0])
            del kbest[e][n:]
        out = []
        for s, st, r, unk in kbest[size]:
            path = []
            j, entry = size, (s, st, r, unk)
            while j > 0:
                _, pst, pr, punk = entry
                path.append((pst, j, punk))
                j, entry = pst, kbest[pst][pr] if pst > 0 else None
            out.append((s, path[::-1]))
        return out

    def _sample_nbest(self, w: str, alpha: float, n: int, rng: random.Random) -> list[tuple[int, int, bool]]:
        cands = self.nbest(w, n)
        top = cands[0][0]
        weights = [math.exp(alpha * (s - top)) for s, _ in cands]
        return rng.choices([p for _, p in cands], weights=weights)[0]

    def decode(self, ids: list[int]) -> str:
        """Text of ids: HF's decoder chain Replace("▁", " "), ByteFallback, Fuse, Strip(1 leading space)."""
        n = len(self.pieces)
        parts: list[str] = []
        pending = bytearray()

        def flush() -> None:
            if pending:
                try:
                    parts.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    parts.append("\ufffd" * len(pending))
                pending.clear()

        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise DodaiError(f"token id {i!r} is outside the vocabulary (0..{n - 1})")
            if i in self._special_ids:
                continue
            p = self.pieces[i]
            if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                try:
                    pending.append(int(p[3:5], 16))
                    continue
                except ValueError:
                    pass
            flush()
            parts.append(p.replace(SPACE, " "))
        flush()
        s = "".join(parts)
        return s[1:] if s.startswith(" ") else s

    # ------------------------------------------------------------ tokenizer.json
    def to_dict(self) -> dict:
        ws = WS_CLASS
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for t, i in self.special_tokens.items()],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": f"\\A{ws}+|{ws}+\\z"}, "content": ""},
                {"type": "Replace", "pattern": {"Regex": f"{ws}+"}, "content": " "}]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True},
            "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "Unigram", "unk_id": self.unk_id, "vocab": [[p, s] for p, s in self.vocab],
                      "byte_fallback": self.byte_fallback},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write an HF tokenizer.json (a folder gets tokenizer.json inside); returns the file path."""
        from dodai.tokenizers.hf_json import write_tokenizer_json

        return write_tokenizer_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict, where: str = "tokenizer.json") -> UnigramTokenizer:
        m = d.get("model")
        if not isinstance(m, dict) or m.get("type") != "Unigram":
            raise DodaiError(f"{where}: not a Unigram model")
        ours = cls([("a", 0.0)]).to_dict()
        for key in ("normalizer", "pre_tokenizer"):
            if d.get(key) != ours[key]:
                raise DodaiError(f"{where}: Unigram {key} {json.dumps(d.get(key))[:120]} is not the one dodai "
                                 f"writes; dodai reads its own Unigram tokenizer.json (use the .model file for "
                                 f"sentencepiece models)")
        vocab = m.get("vocab")
        if not isinstance(vocab, list) or not all(
                isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], (int, float))
                and not isinstance(v[1], bool) and math.isfinite(v[1]) for v in vocab):
            raise DodaiError(f"{where}: Unigram vocab must be a list of [piece, finite score] pairs")
        unk = m.get("unk_id")
        if unk is not None and (isinstance(unk, bool) or not isinstance(unk, int)):
            raise DodaiError(f"{where}: unk_id must be an integer or null")
        specials = [t["content"] for t in d.get("added_tokens") or [] if isinstance(t, dict) and t.get("special")]
        return cls([(p, s) for p, s in vocab], unk_id=unk, byte_fallback=bool(m.get("byte_fallback", False)),
                   special_tokens=specials)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> UnigramTokenizer:
        from dodai.tokenizers.hf_json import read_tokenizer_json

        return cls.from_dict(read_tokenizer_json(path), str(path))

    load = from_tokenizer_json

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, text: str, vocab_size: int, *, byte_fallback: bool = True, character_coverage: float = 0.9995,
              max_piece_length: int = 16, seed_size: int = 1_000_000, shrinking_factor: float = 0.75,
              num_sub_iterations: int = 2, progress: bool = False, fast: bool = True) -> UnigramTokenizer:
        """Train on text (see the module docstring); vocab_size counts specials and byte pieces.

        fast=True runs EM and the pruning Viterbi on flat numpy lattices (``_CorpusLattice``);
        fast=False runs the plain per-word Python loops (the reference; same results up to float rounding).
        """
        meta = list(SPECIALS) + ([f"<0x{b:02X}>" for b in range(256)] if byte_fallback else [])
        target = vocab_size - len(meta)
        if not 0 < character_coverage <= 1:
            raise DodaiError(f"character_coverage must be in (0, 1], got {character_coverage}")
        if not 0 < shrinking_factor < 1:
            raise DodaiError(f"shrinking_factor must be in (0, 1), got {shrinking_factor}")
        counts = Counter(to_words(normalize(text)))
        if not counts:
            raise DodaiError("no training text: the text is empty after normalisation")
        log = (lambda msg: print(f"unigram: {msg}", file=__import__("sys").stderr)) if progress else (lambda m: None)

        # 1. required characters and seed pieces
        chars: Counter = Counter()
        for w, f in counts.items():
            for c in w:
                chars[c] += f
        total = sum(chars.values())
        required: dict[str, int] = {}
        acc = 0
        for c, f in sorted(chars.items(), key=lambda t: (-t[1], t[0])):
            if acc / total >= character_coverage:
                break
            required[c] = f
            acc += f
        if target < len(required):
            raise DodaiError(f"vocab size {vocab_size} is too small: {len(meta)} special/byte pieces and "
                             f"{len(required)} required characters need at least {len(meta) + len(required)}")
        reserved = set(meta)
        cls_of = {c: script(c) for c in required if c != SPACE}
        subs = (_seed_counts_hashed(list(counts.items()), cls_of, max_piece_length, SPACE in required) if fast
                else _count_substrings(counts, cls_of, max_piece_length, SPACE in required))
        seeds = sorted(((f * len(s), s) for s, f in subs.items() if f >= 2 and s not in reserved),
                       key=lambda t: (-t[0], t[1]))[:seed_size]
        if len(required) + len(seeds) < target:
            raise DodaiError(f"vocab size {vocab_size} is too large for this text: it supports at most "
                             f"{len(meta) + len(required) + len(seeds)} pieces")
        init = {c: float(f) for c, f in required.items()}
        for v, s in seeds:
            init[s] = float(v)
        logz = math.log(sum(init.values()))
        scores = {p: math.log(v) - logz for p, v in init.items()}
        log(f"{len(counts):,} distinct words, {len(required)} required characters, {len(seeds):,} seed pieces")

        words = list(counts.items())
        vsum = float(sum(counts.values()))
        desired = int(target * 1.1)
        lattice = _CorpusLattice(words, list(scores)) if fast else None

        pos = {p: k for k, p in enumerate(lattice.pieces)} if fast else {}

        def arrays():  # log p per candidate piece (-inf = dead) + the unknown score, for the fast path
            import numpy as np

            sc = np.full(len(pos) + 1, -np.inf)
            sc[[pos[p] for p in scores]] = list(scores.values())
            sc[-1] = min(scores.values()) - UNK_PENALTY
            return sc

        while True:
            for _ in range(num_sub_iterations):
                if fast:
                    counts_arr, objective = lattice.expected_counts(arrays())
                    expected = {p: float(counts_arr[pos[p]]) for p in scores}
                else:
                    expected, objective = _e_step(words, scores)
                scores = _m_step(expected, required, target)
                log(f"EM: {len(scores):,} pieces, objective {objective / total:.4f} nats/char")
            if len(scores) <= desired:
                break
            if fast:
                f_arr, inv_arr = lattice.viterbi_counts(arrays())
                freq = {p: float(f_arr[pos[p]]) for p in scores}
                inverted = {p: float(inv_arr[pos[p]]) for p in scores}
            else:
                freq, inverted = _viterbi_counts(words, scores)
            scores = _prune(scores, required, max(desired, int(shrinking_factor * len(scores))), freq, inverted,
                            vsum)
            if fast:
                import numpy as np

                lattice.compact(np.array([p in scores for p in lattice.pieces]))
        # 4. the final vocabulary: all required characters, then the best-scoring pieces
        others = sorted((p for p in scores if p not in required), key=lambda p: (-scores[p], p))
        keep = list(required) + others[:max(0, target - len(required))]
        if len(keep) < target:
            raise DodaiError(f"vocab size {vocab_size} is too large for this text: training kept only "
                             f"{len(meta) + len(keep)} pieces")
        floor = min(scores.values())
        final = sorted(((scores.get(p, floor), p) for p in keep), key=lambda t: (-t[0], t[1]))
        vocab = [(p, 0.0) for p in meta] + [(p, s) for s, p in final]
        return cls(vocab, unk_id=0, byte_fallback=byte_fallback, special_tokens=list(SPECIALS))


def _hashed_edges(words: list[tuple[str, int]], pieces: list[str]):
    """All lattice edges of all words at once: (n_nodes, bases, ends, freq, src, dst, pid); an unknown
    character's edge has pid = len(pieces). Same edges as _Lattice.edges (tested)."""
    import numpy as np

    _, cps, bases, _ = _layout(words)
    n = len(cps)
    max_len = max(len(p) for p in pieces)
    by_len: dict[int, tuple] = {}
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(pieces):
        groups.setdefault(len(p), []).append(k)
    for L, ids in groups.items():
        if ids:
            hs = np.array([_piece_hash(pieces[k]) for k in ids], dtype=np.uint64)
            order = np.argsort(hs)
            by_len[L] = (hs[order], np.array(ids, dtype=np.int64)[order])
    # prefix hashes by length: a position stays a candidate only while its substring is a piece prefix
    hp: list[set] = [set() for _ in range(max_len + 1)]
    for p in pieces:
        x = 0
        for i, c in enumerate(p, 1):
            x = (x * _HASH_BASE + ord(c)) & _MASK64
            hp[i].add(x)
    prefix_sets = {L: np.array(sorted(hp[L]), dtype=np.uint64) for L in range(1, max_len + 1)}
    pad = np.concatenate([cps, np.zeros(max_len + 1, dtype=np.uint64)])
    cand = np.flatnonzero(cps != 0)
    h = np.zeros(len(cand), dtype=np.uint64)
    base = np.uint64(_HASH_BASE)
    srcs, dsts, pids = [], [], []
    single = np.zeros(n, dtype=bool)
    for L in range(1, max_len + 1):
        nxt = pad[cand + L - 1]
        ok = nxt != 0  # a NUL (word end) never belongs to a piece
        cand, h, nxt = cand[ok], h[ok], nxt[ok]
        with np.errstate(over="ignore"):
            h = h * base + nxt
        if L in by_len:
            hs, ids = by_len[L]
            j = np.minimum(np.searchsorted(hs, h), len(hs) - 1)
            hit = hs[j] == h
            srcs.append(cand[hit])
            dsts.append(cand[hit] + L)
            pids.append(ids[j[hit]])
            if L == 1:
                single[cand[hit]] = True
        ps = prefix_sets[L]
        k = np.minimum(np.searchsorted(ps, h), len(ps) - 1)
        keep = ps[k] == h
        cand, h = cand[keep], h[keep]
        if not len(cand):
            break
    unk = np.flatnonzero(~single & (cps != 0))
    srcs.append(unk)
    dsts.append(unk + 1)
    pids.append(np.full(len(unk), len(pieces), dtype=np.int64))
    ends = bases + np.array([len(w) for w, _ in words], dtype=np.int64)
    return (n, bases, ends, np.array([f for _, f in words], dtype=np.float64), np.concatenate(srcs),
            np.concatenate(dsts), np.concatenate(pids))


class _CorpusLattice:
    """Every word's lattice over a fixed candidate piece list, as flat numpy arrays: the fast EM path.

    Nodes are word positions laid end to end (word k owns nodes base[k] .. base[k]+len(w_k)); an edge
    (src, dst, pid) is a candidate piece or an unknown character (pid = n_pieces). The forward pass
    walks end positions 1, 2, ... and reduces all words at once; the backward pass walks start
    positions downwards. Dead pieces score -inf, and ``compact`` drops their edges. Tested equal to
    the plain per-word ``_e_step`` / ``_Lattice.viterbi``.
    """

    def __init__(self, words: list[tuple[str, int]], pieces: list[str]):
        import numpy as np

        self.np = np
        self.pieces = pieces
        self.unk = len(pieces)
        self.n_nodes, self.bases, self.ends, self.freq, self.src, self.dst, self.pid = _hashed_edges(words, pieces)
        self._levels()

    def _levels(self) -> None:
        np = self.np
        word = np.searchsorted(self.bases, self.src, side="right") - 1
        self.word = word
        pos_dst = self.dst - self.bases[word]
        pos_src = self.src - self.bases[word]

        def groups(level, node, descending):
            # by level, then node, then source (the tie order of the reference Viterbi)
            order = np.lexsort((self.src, node, -level if descending else level))
            lv = level[order]
            cuts = np.flatnonzero(np.diff(lv)) + 1
            out = []
            for sl in np.split(order, cuts):
                nd = node[sl]
                starts = np.flatnonzero(np.r_[True, nd[1:] != nd[:-1]])
                counts = np.diff(np.r_[starts, len(sl)])
                out.append((sl, starts, counts, nd[starts]))
            return out

        self.fw = groups(pos_dst, self.dst, False)
        self.bw = groups(pos_src, self.src, True)

    def compact(self, alive) -> None:
        """Drop edges of dead pieces (alive: bool per piece; unknown edges always stay)."""
        np = self.np
        keep = np.append(alive, True)[self.pid]
        self.src, self.dst, self.pid = self.src[keep], self.dst[keep], self.pid[keep]
        self._levels()

    def expected_counts(self, score):
        """score: log p per piece (-inf = dead) plus the unknown score last -> (expected counts, -log L)."""
        np = self.np
        src, dst, pid = self.src, self.dst, self.pid
        alpha = np.full(self.n_nodes, -np.inf)
        alpha[self.bases] = 0.0
        for sl, starts, counts, nodes in self.fw:
            v = alpha[src[sl]] + score[pid[sl]]
            m = np.maximum.reduceat(v, starts)
            alpha[nodes] = m + np.log(np.add.reduceat(np.exp(v - np.repeat(m, counts)), starts))
        beta = np.full(self.n_nodes, -np.inf)
        beta[self.ends] = 0.0
        for sl, starts, counts, nodes in self.bw:
            v = beta[dst[sl]] + score[pid[sl]]
            m = np.maximum.reduceat(v, starts)
            beta[nodes] = m + np.log(np.add.reduceat(np.exp(v - np.repeat(m, counts)), starts))
        z = alpha[self.ends]
        with np.errstate(invalid="ignore"):
            post = np.exp(alpha[src] + score[pid] + beta[dst] - z[self.word]) * self.freq[self.word]
        post = np.nan_to_num(post)
        counts = np.bincount(pid, weights=post, minlength=self.unk + 1)[: self.unk]
        return counts, float(-(self.freq * z).sum())

    def best_paths(self, score) -> list[list[tuple[int, int, bool]]]:
        """Viterbi path of every word, [(start, end, is_unknown)], equal to _Lattice.viterbi's."""
        back = self._back(score)
        src, pid, unk = self.src.tolist(), self.pid.tolist(), self.unk
        out = []
        for base, end in zip(self.bases.tolist(), self.ends.tolist()):
            path = []
            cur = end
            while cur > base:
                e = back[cur]
                path.append((src[e] - base, cur - base, pid[e] == unk))
                cur = src[e]
            out.append(path[::-1])
        return out

    def best_edges(self, score):
        """Viterbi of every word at once -> (word index, edge index) of all best-path edges, ordered by
        word and then position (vectorised backtracking)."""
        np = self.np
        back = np.array(self._back(score), dtype=np.int64)
        cur = self.ends.copy()
        wid = np.arange(len(cur))
        ws, es = [], []
        active = cur > self.bases
        while active.any():
            cur, wid = cur[active], wid[active]
            e = back[cur]
            ws.append(wid)
            es.append(e)
            cur = self.src[e]
            active = cur > self.bases[wid]
        if not ws:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        w, e = np.concatenate(ws), np.concatenate(es)
        order = np.lexsort((self.src[e], w))
        return w[order], e[order]

    def _back(self, score):
        """Best incoming edge of every node (first in source order among equal scores)."""
        np = self.np
        src, pid = self.src, self.pid
        best = np.full(self.n_nodes, -np.inf)
        best[self.bases] = 0.0
        back = np.zeros(self.n_nodes, dtype=np.int64)
        for sl, starts, counts, nodes in self.fw:
            v = best[src[sl]] + score[pid[sl]]
            m = np.maximum.reduceat(v, starts)
            hit = v == np.repeat(m, counts)
            first = np.minimum.reduceat(np.where(hit, np.arange(len(v)), len(v)), starts)
            best[nodes] = m
            back[nodes] = sl[first]
        return back.tolist()

    def viterbi_counts(self, score):
        """Viterbi over every word -> (f: count of each piece in the best paths, F: frequency of the words
        whose best path uses it)."""
        np = self.np
        src, pid = self.src, self.pid
        best = np.full(self.n_nodes, -np.inf)
        best[self.bases] = 0.0
        back = np.zeros(self.n_nodes, dtype=np.int64)
        for sl, starts, counts, nodes in self.fw:
            v = best[src[sl]] + score[pid[sl]]
            m = np.maximum.reduceat(v, starts)
            # first edge (in src order) reaching the maximum: the reference's tie order
            hit = v == np.repeat(m, counts)
            idx = np.arange(len(v))
            first = np.minimum.reduceat(np.where(hit, idx, len(v)), starts)
            best[nodes] = m
            back[nodes] = sl[first]
        cur = self.ends.copy()
        wid = np.arange(len(cur))
        used_pid, used_word = [], []
        active = cur > self.bases
        while active.any():
            cur, wid = cur[active], wid[active]
            e = back[cur]
            used_pid.append(pid[e])
            used_word.append(wid)
            cur = src[e]
            active = cur > self.bases[wid]
        p = np.concatenate(used_pid) if used_pid else np.zeros(0, dtype=np.int64)
        wds = np.concatenate(used_word) if used_word else np.zeros(0, dtype=np.int64)
        f = np.bincount(p, weights=self.freq[wds], minlength=self.unk + 1)[: self.unk]
        pairs = np.unique(wds * (self.unk + 1) + p)
        inv = np.bincount(pairs % (self.unk + 1), weights=self.freq[pairs // (self.unk + 1)],
                          minlength=self.unk + 1)[: self.unk]
        return f, inv


_HASH_BASE = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of the polynomial substring hash
_MASK64 = (1 << 64) - 1


def _piece_hash(p: str) -> int:
    h = 0
    for c in p:
        h = (h * _HASH_BASE + ord(c)) & _MASK64
    return h


def _layout(words: list[tuple[str, int]]):
    """Words laid end to end with a NUL after each: code points (uint64), word start offsets, and the
    word frequency at each position. Position i of the layout is lattice node i."""
    import numpy as np

    text = "\0".join(w for w, _ in words) + "\0"
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lens = np.array([len(w) + 1 for w, _ in words], dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(lens)[:-1]])
    weights = np.repeat(np.array([f for _, f in words], dtype=np.float64), lens)
    return text, cps, bases, weights


def _rolling_hashes(cps, max_len: int):
    """Yield (L, h) with h[i] = hash of the L code points from i (zeros past the end), L = 1..max_len."""
    import numpy as np

    n = len(cps)
    pad = np.concatenate([cps, np.zeros(max_len, dtype=np.uint64)])
    h = np.zeros(n, dtype=np.uint64)
    base = np.uint64(_HASH_BASE)
    with np.errstate(over="ignore"):
        for L in range(1, max_len + 1):
            h = h * base + pad[L - 1:L - 1 + n]
            yield L, h


def _seed_counts_hashed(words: list[tuple[str, int]], cls: dict[str, str], max_len: int,
                        space_required: bool = True, right_branching: bool = True) -> Counter:
    """_count_substrings (tested equal), vectorised with 64-bit substring hashes; a hash collision
    could merge two substrings' counts (odds ~ n^2 / 2^64)."""
    import numpy as np

    text, cps, _, weights = _layout(words)
    names = {c: k for k, c in enumerate(sorted(set(cls.values())))}
    table = {ord(c): names[s] for c, s in cls.items()}
    uniq, inv = np.unique(cps, return_inverse=True)
    lut = np.array([table.get(int(u), -1) for u in uniq], dtype=np.int64)
    cl = lut[inv]
    if space_required:
        cl[cps == ord(SPACE)] = -2  # "▁" may only start a piece (it is never a run member)
    n = len(cl)
    # run ids: a new run at every class change and at every non-member position
    starts = np.r_[True, (cl[1:] != cl[:-1]) | (cl[1:] < 0)]
    rid = np.cumsum(starts)
    rid_pad = np.concatenate([rid, np.full(max_len + 1, -1)])
    cl_pad = np.concatenate([cl, np.full(max_len + 1, -1)])
    idx = np.arange(n)
    out: Counter = Counter()
    for L, h in _rolling_hashes(cps, max_len):
        if L < 2:
            continue
        last = idx + L - 1
        inner = (cl_pad[idx + 1] >= 0) & (rid_pad[idx + 1] == rid_pad[last])
        valid = inner & ((cl >= 0) & (rid == rid_pad[idx + 1]) | (cl == -2))
        pos = np.flatnonzero(valid)
        if not len(pos):
            continue
        u, first, inv2 = np.unique(h[pos], return_index=True, return_inverse=True)
        inv2 = inv2.ravel()
        cnt = np.bincount(inv2, weights=weights[pos])
        keep = cnt >= 2
        if right_branching:
            nxt = np.concatenate([cps, np.zeros(max_len + 1, dtype=np.uint64)])[pos + L].astype(np.int64)
            pairs = np.unique(inv2.astype(np.int64) * 0x110000 + nxt)
            keep &= np.bincount(pairs // 0x110000, minlength=len(u)) >= 2
        for k in np.flatnonzero(keep):
            i = int(pos[first[k]])
            out[text[i:i + L]] = int(round(cnt[k]))
    return out


def _count_substrings(counts: Counter, cls: dict[str, str], max_len: int, space_required: bool = True,
                      right_branching: bool = True) -> Counter:
    """Seed candidates, the plain way: substrings of 2..max_len characters made of required characters
    of one script class (``cls``), optionally after the word's leading "▁", seen at least twice and
    (right_branching) followed by at least two different characters (end of word counts as one), as
    the internal nodes of sentencepiece's suffix tree are."""
    subs: Counter = Counter()
    nexts: dict[str, set] = {}
    for w, f in counts.items():
        n = len(w)
        for st in range(n):
            for e in range(st + 2, min(n, st + max_len) + 1):
                sub = w[st:e]
                body = sub[1:] if sub[0] == SPACE and space_required else sub
                kinds = {cls.get(c) for c in body}
                if len(kinds) != 1 or None in kinds:
                    break  # longer substrings from st are invalid too
                subs[sub] += f
                nexts.setdefault(sub, set()).add(w[e] if e < n else "\0")
    return Counter({k: v for k, v in subs.items()
                    if v >= 2 and (not right_branching or len(nexts[k]) >= 2)})


def _e_step(words: list[tuple[str, int]], scores: dict[str, float]) -> tuple[dict[str, float], float]:
    """Expected piece counts by forward-backward over every word's lattice; returns (counts, -log L)."""
    lat = _Lattice(scores)
    unk_score = min(scores.values()) - UNK_PENALTY
    expected = dict.fromkeys(scores, 0.0)
    objective = 0.0
    exp = math.exp
    for w, f in words:
        n = len(w)
        edges = lat.edges(w, unk_score)
        alpha = [0.0] + [_NEG_INF] * n
        for st, e, sc, _ in edges:
            alpha[e] = _logaddexp(alpha[e], alpha[st] + sc)
        beta = [_NEG_INF] * n + [0.0]
        for st, e, sc, _ in reversed(edges):
            beta[st] = _logaddexp(beta[st], sc + beta[e])
        z = alpha[n]
        objective -= f * z
        for st, e, sc, unk in edges:
            if not unk:
                expected[w[st:e]] += f * exp(alpha[st] + sc + beta[e] - z)
    return expected, objective


def _m_step(expected: dict[str, float], required: dict[str, int], min_size: int) -> dict[str, float]:
    """log p(x) = digamma(c(x)) - digamma(sum c) over pieces with c(x) >= 0.5 (required chars stay;
    on tiny corpora the most expected of the rest stay too, so that min_size pieces remain)."""
    kept = {p: c for p, c in expected.items() if c >= 0.5}
    for c in required:
        kept.setdefault(c, max(expected.get(c, 0.0), 0.1))
    if len(kept) < min_size:
        rest = sorted((p for p in expected if p not in kept), key=lambda p: (-expected[p], p))
        for p in rest[:min_size - len(kept)]:
            kept[p] = max(expected[p], 0.1)
    logsum = digamma(sum(kept.values()))
    return {p: digamma(c) - logsum for p, c in kept.items()}


def _viterbi_counts(words: list[tuple[str, int]], scores: dict[str, float]) -> tuple[dict, dict]:
    """Plain per-word Viterbi -> (f: piece counts in the best paths, F: frequency of words using each piece)."""
    lat = _Lattice(scores)
    unk_score = min(scores.values()) - UNK_PENALTY
    freq = dict.fromkeys(scores, 0.0)
    inverted = dict.fromkeys(scores, 0.0)
    for w, f in words:
        seen = set()
        for st, e, unk in lat.viterbi(w, unk_score):
            if not unk:
                p = w[st:e]
                freq[p] += f
                seen.add(p)
        for p in seen:
            inverted[p] += f
    return freq, inverted


def _prune(scores: dict[str, float], required: dict[str, int], size: int, freq: dict[str, float],
           inverted: dict[str, float], vsum: float) -> dict[str, float]:
    """Keep `size` pieces: those whose removal would cost the most likelihood (module docstring, step 3)."""
    lat = _Lattice(scores)
    unk_score = min(scores.values()) - UNK_PENALTY
    alternatives: dict[str, list[str]] = {}
    for p, sc in scores.items():
        if len(p) == 1 or p in required:
            continue
        alt = lat.viterbi(p, unk_score, skip_whole=True)
        alt_score = sum(unk_score if unk else scores[p[st:e]] for st, e, unk in alt)
        if alt_score <= sc and not any(unk for *_, unk in alt):
            alternatives[p] = [p[st:e] for st, e, _ in alt]
        # else: x never wins its own lattice, so Viterbi never uses it: dropped
    total = sum(freq.values())
    logsum = math.log(total)
    keep = [p for p in scores if len(p) == 1 or p in required]
    cands = []
    for p, alt in alternatives.items():
        fp = freq[p]
        if fp == 0:
            continue
        logsum_alt = math.log(total + fp * (len(alt) - 1))
        logprob_alt = sum(math.log(freq[a] + fp) - logsum_alt for a in alt)
        loss = inverted[p] / vsum * ((math.log(fp) - logsum) - logprob_alt)
        cands.append((loss, p))
    cands.sort(key=lambda t: (-t[0], t[1]))
    keep += [p for _, p in cands[:max(0, size - len(keep))]]
    return {p: scores[p] for p in keep}
