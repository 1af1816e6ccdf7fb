"""Count-based n-gram language models over token ids (R1.1).

``NGramLM(n, smoothing)`` estimates p(w | h) for a history h of the previous n-1 tokens:

- ``"mle"``: maximum likelihood, c(h, w) / c(h). A history never seen in training backs off to its longest
  seen suffix (still MLE), so every distribution sums to 1; a token never seen after that history gets
  probability 0, and a held-out text containing one has infinite perplexity (reported as ``inf``).
- ``"add_k"``: additive (Lidstone) smoothing, (c(h, w) + k) / (c(h) + k V); k = 1 is Laplace.
- ``"kn"``: interpolated Kneser-Ney (Kneser & Ney 1995; the interpolated form of Chen & Goodman 1998)::

      p(w | h) = max(c(h, w) - D, 0) / c(h)  +  D N1+(h .) / c(h) * p(w | h')

  where h' drops the oldest token of h and D is the absolute discount. The highest order uses raw counts;
  every lower order uses *continuation counts* N1+(. h w), the number of distinct tokens seen before the
  (h, w) n-gram, so a token that is frequent only after one history gets little lower-order mass. The
  recursion ends at the uniform distribution 1/V, so unseen tokens keep a positive probability. A history
  with c(h) = 0 passes straight to p(w | h').

Boundaries: each training document is left-padded with n-1 BOS symbols (an internal id outside the
vocabulary that is never predicted), so the first tokens of a document are predicted from "start of
document" contexts rather than from the end of the previous document.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from dodai.errors import DodaiError

SMOOTHINGS = ("mle", "add_k", "kn")
BOS = -1  # padding symbol; never a token to predict


class _Table:
    """counts[h][w] for one order, with per-history totals and the number of distinct followers N1+(h .)."""

    def __init__(self, counts: dict[tuple, Counter]):
        self.counts = counts
        self.total = {h: sum(c.values()) for h, c in counts.items()}
        self.distinct = {h: len(c) for h, c in counts.items()}


class NGramLM:
    """An n-gram LM over ids 0..vocab_size-1. Fit with :meth:`fit` (a list of id sequences = documents)."""

    def __init__(self, n: int, smoothing: str = "kn", k: float = 1.0, discount: float = 0.75,
                 vocab_size: int | None = None):
        if not isinstance(n, int) or n < 1:
            raise DodaiError(f"n-gram order must be an integer >= 1, got {n!r}")
        if smoothing not in SMOOTHINGS:
            raise DodaiError(f"unknown smoothing {smoothing!r}; choose one of {', '.join(SMOOTHINGS)}")
        if smoothing == "add_k" and not k > 0:
            raise DodaiError(f"add-k smoothing needs k > 0, got {k}")
        if smoothing == "kn" and not 0 < discount < 1:
            raise DodaiError(f"Kneser-Ney discount must be in (0, 1), got {discount}")
        if vocab_size is not None and vocab_size < 1:
            raise DodaiError(f"vocab_size must be >= 1, got {vocab_size}")
        self.n, self.smoothing, self.k, self.discount = n, smoothing, float(k), float(discount)
        self.vocab_size = vocab_size
        self.tables: list[_Table] = []  # tables[m-1] holds m-gram counts (history length m-1)

    # ------------------------------------------------------------------ training
    def fit(self, docs: Sequence[int] | Iterable[Sequence[int]]) -> NGramLM:
        docs = _as_docs(docs)
        if not any(docs):
            raise DodaiError("cannot fit an n-gram model on empty data")
        top = max(max(d) for d in docs if d)
        if min(min(d) for d in docs if d) < 0:
            raise DodaiError("token ids must be >= 0")
        if self.vocab_size is None:
            self.vocab_size = top + 1
        elif top >= self.vocab_size:
            raise DodaiError(f"token id {top} out of range for vocab_size {self.vocab_size}")
        n = self.n
        raw: list[dict[tuple, Counter]] = [defaultdict(Counter) for _ in range(n)]
        # For KN lower orders: the set of distinct left neighbours of each m-gram.
        left: list[dict[tuple, set]] = [defaultdict(set) for _ in range(n)]
        for d in docs:
            s = [BOS] * (n - 1) + list(d)
            for i in range(n - 1, len(s)):
                w = s[i]
                for m in range(1, n + 1):
                    h = tuple(s[i - m + 1:i])
                    raw[m - 1][h][w] += 1
                    if m < n:
                        left[m - 1][h + (w,)].add(s[i - m])
        if self.smoothing == "kn":
            tables = []
            for m in range(1, n):
                cont: dict[tuple, Counter] = defaultdict(Counter)
                for g, preds in left[m - 1].items():
                    cont[g[:-1]][g[-1]] = len(preds)
                tables.append(_Table(dict(cont)))
            tables.append(_Table(dict(raw[n - 1])))
            self.tables = tables
        else:
            self.tables = [_Table(dict(r)) for r in raw]
        return self

    def _check_fitted(self):
        if not self.tables:
            raise DodaiError("the n-gram model is not fitted yet (call fit first)")

    def _history(self, context: Sequence[int]) -> tuple:
        """The last n-1 tokens of context, BOS-padded on the left."""
        ctx = list(context)[-(self.n - 1):] if self.n > 1 else []
        for t in ctx:
            if t != BOS and not 0 <= t < self.vocab_size:
                raise DodaiError(f"token id {t} out of range for vocab_size {self.vocab_size}")
        return tuple([BOS] * (self.n - 1 - len(ctx)) + ctx)

    # ------------------------------------------------------------------ probabilities
    def prob(self, context: Sequence[int], token: int) -> float:
        """p(token | context); context may be shorter than n-1 (then it is the start of a document)."""
        self._check_fitted()
        if not 0 <= token < self.vocab_size:
            raise DodaiError(f"token id {token} out of range for vocab_size {self.vocab_size}")
        return self._prob(self._history(context), token)

    def _prob(self, h: tuple, w: int) -> float:
        V = self.vocab_size
        if self.smoothing == "add_k":
            t = self.tables[self.n - 1]
            return (t.counts.get(h, {}).get(w, 0) + self.k) / (t.total.get(h, 0) + self.k * V)
        if self.smoothing == "mle":
            for m in range(len(h), -1, -1):  # longest seen suffix of the history
                hs = h[len(h) - m:]
                t = self.tables[m]
                if t.total.get(hs, 0) > 0:
                    return t.counts[hs].get(w, 0) / t.total[hs]
            return 0.0  # unreachable after a successful fit (the unigram history () is always seen)
        p = 1.0 / V  # Kneser-Ney: start from uniform and interpolate upward through the orders
        D = self.discount
        for m in range(0, len(h) + 1):
            hs = h[len(h) - m:]
            t = self.tables[m]
            tot = t.total.get(hs, 0)
            if tot == 0:
                continue  # unseen history: pass the lower-order estimate through unchanged
            c = t.counts[hs].get(w, 0)
            p = max(c - D, 0.0) / tot + D * t.distinct[hs] / tot * p
        return p

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """p(. | context) as a float64 array of shape (V,) (the vectorised form of :meth:`prob`)."""
        self._check_fitted()
        h = self._history(context)
        V = self.vocab_size

        def dense(counter) -> np.ndarray:
            a = np.zeros(V)
            if counter:
                a[np.fromiter(counter.keys(), dtype=np.int64)] = np.fromiter(counter.values(), dtype=np.float64)
            return a

        if self.smoothing == "add_k":
            t = self.tables[self.n - 1]
            return (dense(t.counts.get(h)) + self.k) / (t.total.get(h, 0) + self.k * V)
        if self.smoothing == "mle":
            for m in range(len(h), -1, -1):
                hs = h[len(h) - m:]
                t = self.tables[m]
                if t.total.get(hs, 0) > 0:
                    return dense(t.counts[hs]) / t.total[hs]
        p = np.full(V, 1.0 / V)
        D = self.discount
        for m in range(0, len(h) + 1):
            hs = h[len(h) - m:]
            t = self.tables[m]
            tot = t.total.get(hs, 0)
            if tot == 0:
                continue
            p = np.maximum(dense(t.counts[hs]) - D, 0.0) / tot + D * t.distinct[hs] / tot * p
        return p

    def logprob_sequence(self, ids: Sequence[int], context: Sequence[int] = ()) -> float:
        """Sum of ln p(ids[i] | preceding tokens) in nats. ``context``: tokens before ids (not scored);
        empty means ids start a document. -inf if some token has probability 0."""
        self._check_fitted()
        ids = list(ids)
        s = list(context) + ids
        off = len(s) - len(ids)
        total = 0.0
        for i in range(off, len(s)):
            p = self.prob(s[max(0, i - self.n + 1):i], s[i])
            if p <= 0.0:
                return -math.inf
            total += math.log(p)
        return total

    def perplexity(self, ids: Sequence[int], context: Sequence[int] = ()) -> float:
        """exp(-mean ln p) over ids; ``inf`` (not an error) when the model gives an event probability 0."""
        if len(ids) == 0:
            raise DodaiError("perplexity of an empty sequence is undefined")
        lp = self.logprob_sequence(ids, context)
        return math.inf if lp == -math.inf else math.exp(-lp / len(ids))

    # ------------------------------------------------------------------ sampling
    def sample(self, n_tokens: int, seed: int | None = None, context: Sequence[int] = ()) -> list[int]:
        """n_tokens ids drawn one at a time from p(. | history), starting from ``context`` (default: the
        start of a document). Seeded by a private numpy Generator."""
        self._check_fitted()
        if n_tokens < 0:
            raise DodaiError(f"n_tokens must be >= 0, got {n_tokens}")
        rng = np.random.default_rng(seed)
        hist = list(context)
        out = []
        for _ in range(n_tokens):
            p = self.distribution(hist)
            w = int(rng.choice(self.vocab_size, p=p / p.sum()))
            out.append(w)
            hist.append(w)
        return out

    def __repr__(self) -> str:
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}, vocab_size={self.vocab_size})"


def _as_docs(docs) -> list[list[int]]:
    """A single id sequence or a list of them -> list of lists of ints (numpy/torch accepted)."""
    if hasattr(docs, "tolist"):
        docs = docs.tolist()
    docs = [d.tolist() if hasattr(d, "tolist") else d for d in docs]
    if docs and all(isinstance(x, (int, np.integer)) for x in docs):
        return [[int(x) for x in docs]]
    out = []
    for d in docs:
        if isinstance(d, (int, np.integer)):
            raise DodaiError("mixed ints and sequences in the training data")
        out.append([int(x) for x in d])
    return out
