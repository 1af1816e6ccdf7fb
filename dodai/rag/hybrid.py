"""Fusing rankings from several retrievers (here BM25 and dense).

- :func:`reciprocal_rank_fusion` (Cormack, Clarke & Büttcher 2009, "Reciprocal Rank Fusion
  outperforms Condorcet and individual Rank Learning Methods"): ``RRF(d) = Σ_r 1 / (k + rank_r(d))``
  with ranks from 1 and ``k = 60`` as in the paper; a document missing from a ranking gets nothing
  from it. Only ranks are used, so scores on different scales (BM25's unbounded sums, cosines in
  [-1, 1]) need no calibration.
- :func:`weighted_fusion`: min–max normalise each retriever's scores over its own result list to
  [0, 1], then ``Σ_r w_r · norm_r(d)`` (a document absent from a list gets 0 there). This is the
  "convex combination" of Bruch, Gai & Ingber 2023 ("An Analysis of Fusion Functions for Hybrid
  Retrieval"), which also compares it with RRF.

Each input is a ranking: a list of (doc id, score), best first. Output: the same, best first, ties
broken by the doc id so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from dodai.errors import DodaiError

Ranking = Sequence[tuple[Hashable, float]]


def _sorted(scores: dict) -> list[tuple[Hashable, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def reciprocal_rank_fusion(rankings: Sequence[Ranking], k: float = 60.0,
                           weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """RRF over ``rankings``; optional per-ranking weights multiply each 1 / (k + rank) term."""
    if k < 0:
        raise DodaiError(f"RRF k must be >= 0, got {k}")
    w = _weights(rankings, weights)
    fused: dict = {}
    for wr, ranking in zip(w, rankings):
        seen = set()
        for rank, (doc, _) in enumerate(ranking, start=1):
            if doc in seen:  # a document listed twice counts at its best rank only
                continue
            seen.add(doc)
            fused[doc] = fused.get(doc, 0.0) + wr / (k + rank)
    return _sorted(fused)


def weighted_fusion(rankings: Sequence[Ranking], weights: Sequence[float] | None = None
                    ) -> list[tuple[Hashable, float]]:
    """Convex combination of min–max normalised scores (a list whose scores are all equal maps to 1)."""
    w = _weights(rankings, weights)
    fused: dict = {}
    for wr, ranking in zip(w, rankings):
        if not ranking:
            continue
        best: dict = {}
        for doc, s in ranking:
            best[doc] = max(s, best.get(doc, s))
        lo, hi = min(best.values()), max(best.values())
        for doc, s in best.items():
            norm = 1.0 if hi == lo else (s - lo) / (hi - lo)
            fused[doc] = fused.get(doc, 0.0) + wr * norm
    return _sorted(fused)


def _weights(rankings: Sequence[Ranking], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise DodaiError(f"{len(weights)} weights for {len(rankings)} rankings")
    if any(x < 0 for x in weights):
        raise DodaiError("fusion weights must be >= 0")
    return [float(x) for x in weights]
