"""The textbook BPE loops, kept slow and obvious as the oracle for :mod:`dodai.tokenizers.bpe`.

Training (Sennrich et al., 2016, "Neural Machine Translation of Rare Words with Subword Units",
Algorithm 1, on bytes instead of characters as in GPT-2): count every adjacent pair of symbols over
all words (each weighted by the word's frequency), merge the most frequent pair everywhere, repeat.

Tie-break (shared with the fast trainer, and part of the contract): among pairs of equal count the
one with the smallest ``(left id, right id)`` wins. Ids are byte values 0..255 for single bytes and
256, 257, ... in order of creation for merged tokens. If a merge produces bytes that already are a
token (possible when two merge paths reach the same string, e.g. a+bc and ab+c) the existing id is
reused, as HF ``tokenizers`` does, so every token's bytes are unique.

Encoding: apply the learned merges to each pre-token *in training order*, each one left to right
over non-overlapping occurrences. This is Sennrich's ``apply_bpe``; the fast encoder instead
repeatedly merges the lowest-ranked adjacent pair, which gives the same result for merge lists
learned this way (a merge never precedes the merges that create its parts).
"""

from __future__ import annotations

from collections.abc import Mapping


def merge_word(word: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """Replace every non-overlapping occurrence of ``pair``, scanning left to right."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_reference(word_counts: Mapping[bytes, int], n_new_tokens: int, min_frequency: int = 2):
    """Learn up to ``n_new_tokens`` tokens from ``{pre-token bytes: count}``.

    Returns ``(merges, vocab)``: ``merges`` is ``[(left_id, right_id, new_id), ...]`` in rank order,
    ``vocab`` is the list of token bytes indexed by id (the 256 bytes first).
    Stops early when the best pair occurs fewer than ``min_frequency`` times or no pair is left.
    """
    vocab = [bytes([i]) for i in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    words = [(tuple(w), f) for w, f in word_counts.items()]
    merges = []
    while len(vocab) < 256 + n_new_tokens:
        counts: dict[tuple[int, int], int] = {}
        for w, f in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + f
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < max(min_frequency, 1):
            break
        merged = vocab[best[0]] + vocab[best[1]]
        new_id = index.get(merged)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(merged)
            index[merged] = new_id
        merges.append((best[0], best[1], new_id))
        words = [(merge_word(w, best, new_id), f) for w, f in words]
    return merges, vocab


def encode_word_reference(word: bytes, byte_ids: list[int | None], merges: list[tuple[int, int, int]]) -> list[int]:
    """One pre-token's bytes -> ids by applying every merge in rank order (slow, obviously right)."""
    ids = tuple(byte_ids[b] for b in word if byte_ids[b] is not None)  # a byte without a token is dropped
    for a, b, c in merges:
        if len(ids) < 2:
            break
        ids = merge_word(ids, (a, b), c)
    return list(ids)


def encode_reference(tok, text: str) -> list[int]:
    """Encode ``text`` with a :class:`~dodai.tokenizers.bpe.ByteLevelBPE`'s vocabulary, the slow way."""
    out: list[int] = []
    parts = tok._special_splitter.split(text)
    for i, part in enumerate(parts):
        if i % 2:
            out.append(tok.special_tokens_all[part])
            continue
        for piece in tok.pretokenizer.split(tok._normalize(part)):
            out.extend(encode_word_reference(piece.encode("utf-8"), tok.byte_ids, tok.merges))
    return out
