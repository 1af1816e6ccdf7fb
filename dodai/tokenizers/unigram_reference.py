"""The plain, obviously-correct Unigram algorithms: the oracle the fast paths in unigram.py are tested against.

A segmentation of a word ``w`` is a sequence of vocabulary pieces whose concatenation is ``w``; its
score is the sum of the pieces' log-probabilities (Kudo 2018, "Subword Regularization"). A character
that no piece covers becomes an unknown node scoring ``unk_score``.

``viterbi``: best[j] = max over i < j of best[i] + score(w[i:j]); among equal scores the smallest i
wins (the order sentencepiece and HF tokenizers scan the lattice in).
``all_segmentations``: every segmentation with its score, for tests on tiny words.
"""

from __future__ import annotations


def viterbi(word: str, scores: dict[str, float], unk_score: float) -> list[tuple[int, int, bool]]:
    """Best segmentation of word -> [(start, end, is_unknown)], O(len(word)^2) substring look-ups."""
    n = len(word)
    best: list[float | None] = [0.0] + [None] * n
    back: list[tuple[int, bool]] = [(0, False)] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            if best[i] is None:
                continue
            piece = word[i:j]
            if piece in scores:
                cand, unk = best[i] + scores[piece], False
            elif j == i + 1:
                cand, unk = best[i] + unk_score, True
            else:
                continue
            if best[j] is None or cand > best[j]:
                best[j], back[j] = cand, (i, unk)
    out = []
    j = n
    while j > 0:
        i, unk = back[j]
        out.append((i, j, unk))
        j = i
    return out[::-1]


def all_segmentations(word: str, scores: dict[str, float], unk_score: float) -> list[tuple[float, list[str]]]:
    """Every segmentation of word (exponential: tiny words only) with its total score."""
    if not word:
        return [(0.0, [])]
    out = []
    for j in range(1, len(word) + 1):
        piece = word[:j]
        if piece in scores:
            s = scores[piece]
        elif j == 1:
            s = unk_score
        else:
            continue
        for rest_score, rest in all_segmentations(word[j:], scores, unk_score):
            out.append((s + rest_score, [piece] + rest))
    return out
