"""Okapi BM25 over a sparse inverted index (Robertson & Zaragoza 2009, "The Probabilistic Relevance
Framework: BM25 and Beyond").

For a query q and a document d of length |d| (in terms), with avgdl the mean document length, N the
number of documents and n(t) the number of documents that contain term t::

    score(q, d) = Σ_{t ∈ q}  idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl))

Two idf variants (``idf=``):

- ``"robertson"``: ``log((N − n + 0.5) / (n + 0.5))`` — the Robertson–Spärck Jones weight of the
  paper; it is *negative* for a term in more than half of the documents (such a term then lowers the
  score), which is why libraries patch it;
- ``"lucene"`` (default): ``log(1 + (N − n + 0.5) / (n + 0.5))`` — Lucene/Elasticsearch's always-positive form.

A query term repeated in the query counts once per occurrence (as in the formula's sum over query
tokens, and as ``rank_bm25`` does). Tokenisation (:func:`tokenize`) is identifier-aware, because the
collections here are about code: runs of letters/digits, with ``snake_case`` and ``camelCase`` split
into their parts, lower-cased — ``os.path.join`` → ``os path join``, ``getEffectiveLevel`` → ``get
effective level``; no stemming, no stop list. (On the R7.1 docstring retrieval set this split
raised MRR over plain ``\\w+`` words from 0.58 to 0.61 on 300 pairs, 0.43 to 0.44 on all 1,649.)

The index holds one posting list per term: (document ids, term frequencies) as NumPy arrays. A query
touches only the posting lists of its terms, and the top k come from ``argpartition`` — exact.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from dodai.errors import DodaiError

_WORD = re.compile(r"[^\W_]+")  # letters and digits; "_" separates parts of an identifier
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # getEffective|Level


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``, identifiers split at ``_`` and camelCase boundaries."""
    return [part.lower() for w in _WORD.findall(text) for part in _CAMEL.split(w) if part]


class BM25:
    """An inverted index over ``docs`` (strings, tokenised by ``tokenizer``, or lists of terms)."""

    def __init__(self, docs: Sequence[str] | Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
                 idf: str = "lucene", tokenizer: Callable[[str], list[str]] = tokenize):
        if k1 < 0:
            raise DodaiError(f"BM25 k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise DodaiError(f"BM25 b must be in [0, 1], got {b}")
        if idf not in ("lucene", "robertson"):
            raise DodaiError(f"unknown BM25 idf variant {idf!r} (lucene, robertson)")
        if len(docs) == 0:
            raise DodaiError("BM25 needs at least one document")
        self.k1, self.b, self.idf_kind, self.tokenizer = k1, b, idf, tokenizer
        postings: dict[str, tuple[list[int], list[int]]] = {}
        lengths = np.zeros(len(docs), dtype=np.float64)
        for i, d in enumerate(docs):
            terms = tokenizer(d) if isinstance(d, str) else list(d)
            lengths[i] = len(terms)
            for t, c in Counter(terms).items():
                ids, tfs = postings.setdefault(t, ([], []))
                ids.append(i)
                tfs.append(c)
        self.n_docs = len(docs)
        self.doc_len = lengths  # (N,)
        self.avgdl = float(lengths.mean()) or 1.0  # all-empty documents: any positive value gives score 0
        # term -> (doc ids (n,), term frequencies (n,)), ids ascending
        self.postings = {t: (np.asarray(ids, dtype=np.int64), np.asarray(tfs, dtype=np.float64))
                         for t, (ids, tfs) in postings.items()}
        # the length-normalisation part of the denominator, once per document: k1 · (1 − b + b·|d|/avgdl)
        self._norm = k1 * (1.0 - b + b * self.doc_len / self.avgdl)

    def idf(self, term: str) -> float:
        n = len(self.postings[term][0]) if term in self.postings else 0
        ratio = (self.n_docs - n + 0.5) / (n + 0.5)
        return math.log(1.0 + ratio) if self.idf_kind == "lucene" else math.log(ratio)

    def _terms(self, query: str | Sequence[str]) -> list[str]:
        return self.tokenizer(query) if isinstance(query, str) else list(query)

    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """BM25 score of every document for ``query``: (N,) float64."""
        out = np.zeros(self.n_docs, dtype=np.float64)
        for t in self._terms(query):  # repeated query terms count each time (the sum is over query tokens)
            if t not in self.postings:
                continue
            ids, tf = self.postings[t]
            out[ids] += self.idf(t) * tf * (self.k1 + 1.0) / (tf + self._norm[ids])
        return out

    def score_reference(self, query: str | Sequence[str], doc: int) -> float:
        """The formula term by term for one document, with no index (the oracle for :meth:`scores`)."""
        total = 0.0
        for t in self._terms(query):
            if t not in self.postings:
                continue
            ids, tfs = self.postings[t]
            hit = np.nonzero(ids == doc)[0]
            tf = float(tfs[hit[0]]) if len(hit) else 0.0
            dl = float(self.doc_len[doc])
            total += self.idf(t) * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * dl / self.avgdl))
        return total

    def search(self, query: str | Sequence[str], k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best (doc id, score), best first; only documents sharing a term with the query.

        Ties are broken by the lower document id, so the result is deterministic.
        """
        if k < 1:
            raise DodaiError(f"k must be positive, got {k}")
        s = self.scores(query)
        hits = np.nonzero(s != 0.0)[0]
        return top_k(s, k, hits)


def top_k(scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``k`` highest of ``scores`` (over ``candidates``, default all) as (index, score), best first;
    equal scores in index order."""
    idx = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(idx) == 0:
        return []
    vals = scores[idx]
    if len(idx) > k:
        # argpartition finds the k-th largest value; keep everything >= it so ties are settled by the sort
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        keep = vals >= kth
        idx, vals = idx[keep], vals[keep]
    order = np.lexsort((idx, -vals))[:k]  # score descending, then index ascending
    return [(int(idx[i]), float(vals[i])) for i in order]
