"""Sentence-aware chunking with overlap; every chunk remembers its source and character offsets.

A document is cut into *pieces* — sentences (a ``.``, ``!`` or ``?`` followed by whitespace, or a
blank line, ends one), and a sentence longer than the budget is cut further into words, and a word
longer than the budget (characters mode only) into characters. Pieces are then packed greedily into
chunks of at most ``max_size`` units; the next chunk starts with the trailing pieces of the previous
one that fit in ``overlap`` units, so a fact cut by a boundary is still whole in one of the two
chunks (the common "recursive splitter" idea of LangChain/LlamaIndex, written from scratch).

Units are characters, or tokens when a ``count`` function (text → number of tokens) is given. Sizes
are measured on the chunk's exact text ``doc[start:end]`` (leading/trailing whitespace trimmed), so
``chunk.text == document[chunk.start:chunk.end]`` always holds. In token mode a single word longer
than the budget stays whole (cutting inside a word would make tokens that the document never has).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dodai.errors import DodaiError

# A sentence ends after . ! ? (optionally followed by closing quotes/brackets) and whitespace, or at a
# blank line. The lookbehind keeps the punctuation with its sentence.
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    source: int | str  # the id of the document it comes from
    index: int  # position of this chunk within its document
    start: int  # character offsets in the document: text == document[start:end]
    end: int
    text: str


def _spans(pattern_split: re.Pattern, text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """Non-empty trimmed spans of text[lo:hi] between the separators matched by ``pattern_split``."""
    out, pos = [], lo
    for m in pattern_split.finditer(text, lo, hi):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, hi))
    return [s for s in (_trim(text, a, b) for a, b in out) if s[0] < s[1]]


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``, trimmed, in order."""
    return _spans(_SENT_END, text, 0, len(text))


def _pieces(text: str, max_size: int, size: Callable[[str], int], by_chars: bool) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sentences(text):
        if size(text[a:b]) <= max_size:
            out.append((a, b))
            continue
        for m in _WORD.finditer(text, a, b):  # a long sentence: its words
            wa, wb = m.start(), m.end()
            if by_chars and wb - wa > max_size:  # a very long word: fixed-size character slices
                out.extend((i, min(i + max_size, wb)) for i in range(wa, wb, max_size))
            else:
                out.append((wa, wb))
    return out


def chunk_text(text: str, max_size: int = 800, overlap: int = 100, source: int | str = 0,
               count: Callable[[str], int] | None = None) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_size`` characters (or tokens, with ``count``).

    ``overlap`` (same unit, ``0 <= overlap < max_size``) is the most that a chunk repeats of the
    previous one; only whole pieces are repeated. Empty or all-whitespace text gives no chunks.
    """
    if not isinstance(text, str):
        raise DodaiError(f"chunking needs text, got {type(text).__name__}")
    if max_size < 1:
        raise DodaiError(f"chunk size must be positive, got {max_size}")
    if not 0 <= overlap < max_size:
        raise DodaiError(f"chunk overlap must be in [0, chunk size), got {overlap} (size {max_size})")
    size = count or len
    pieces = _pieces(text, max_size, size, by_chars=count is None)
    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        # greedy packing from piece i; the span from the first piece's start to the last one's end is measured
        j = i + 1
        while j < len(pieces) and size(text[pieces[i][0]:pieces[j][1]]) <= max_size:
            j += 1
        a, b = pieces[i][0], pieces[j - 1][1]
        chunks.append(Chunk(source, len(chunks), a, b, text[a:b]))
        if j >= len(pieces):
            break
        # the next chunk starts with the last pieces of this one that fit in `overlap`, but always moves on
        k = j
        while k - 1 > i and size(text[pieces[k - 1][0]:b]) <= overlap:
            k -= 1
        # ... and still leave room for the next new piece, or that chunk would lie inside this one
        while k < j and size(text[pieces[k][0]:pieces[j][1]]) > max_size:
            k += 1
        i = k
    return chunks


def chunk_documents(docs: Sequence[str], max_size: int = 800, overlap: int = 100,
                    ids: Sequence[int | str] | None = None,
                    count: Callable[[str], int] | None = None) -> list[Chunk]:
    """Chunk every document; chunk.source is the document's id (its position unless ``ids`` is given)."""
    if ids is not None and len(ids) != len(docs):
        raise DodaiError(f"{len(ids)} ids for {len(docs)} documents")
    out: list[Chunk] = []
    for n, d in enumerate(docs):
        out.extend(chunk_text(d, max_size, overlap, source=n if ids is None else ids[n], count=count))
    return out
