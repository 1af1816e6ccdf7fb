"""A retrieval evaluation set with natural labels, offline: stdlib docstring summary → the rest of it.

PEP 257 asks a docstring to open with a one-line summary, then a blank line, then the details. The
summary is a natural question-like description written by the author ("Return the canonical path of
the specified filename, eliminating any symbolic links"), and the details are the document that
answers it — written by the same author about the same function, but *without* the summary, so the
query is not a substring of its target. Each query has exactly one relevant document.

Construction from the built-in ``python-docs`` corpus (:func:`dodai.data.corpora.corpus_documents`),
deterministic for one Python version:

- a document qualifies when its first paragraph is one line of 4–30 words and the rest (the body)
  has at least ``MIN_BODY`` characters;
- pairs whose summary or body occurs more than once are dropped (ambiguous labels);
- order (and the subset a quick run takes) is fixed by SHA-256 of the summary, so it does not depend
  on file order.

Metrics (:func:`evaluate`): recall@k (the relevant document is among the top k) and MRR (mean of
1/rank of the relevant document, 0 when it is not retrieved within the ranking given).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MIN_BODY = 80


@dataclass(frozen=True)
class QAPair:
    query: str  # the docstring's summary line
    doc: str  # the docstring without it


def pairs_from_documents(docs: Sequence[str]) -> list[QAPair]:
    cands = []
    for d in docs:
        head, sep, body = d.partition("\n\n")
        head, body = head.strip(), body.strip()
        if not sep or "\n" in head or not 4 <= len(head.split()) <= 30 or len(body) < MIN_BODY:
            continue
        cands.append(QAPair(head, body))
    nq, nd = Counter(p.query for p in cands), Counter(p.doc for p in cands)
    kept = [p for p in cands if nq[p.query] == 1 and nd[p.doc] == 1]
    return sorted(kept, key=lambda p: hashlib.sha256(p.query.encode("utf-8")).digest())


def docstring_qa(n: int | None = None) -> list[QAPair]:
    """The python-docs summary→body pairs (the first ``n`` in hash order, or all)."""
    from dodai.data.corpora import corpus_documents

    pairs = pairs_from_documents(corpus_documents("python-docs"))
    return pairs if n is None else pairs[:n]


def evaluate(rankings: Sequence[Sequence], relevant: Sequence, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """recall@k for each k and MRR, given one ranking (doc ids, best first) and one relevant id per query."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} queries")
    n = max(len(relevant), 1)
    ranks = []
    for r, rel in zip(rankings, relevant):
        r = list(r)
        ranks.append(r.index(rel) + 1 if rel in r else None)
    out = {f"recall@{k}": sum(1 for x in ranks if x is not None and x <= k) / n for k in ks}
    out["mrr"] = sum(1.0 / x for x in ranks if x is not None) / n
    return out
