"""UTF-8-safe incremental detokenization for streaming output.

A byte-level tokenizer can split one character across tokens (a Japanese character is 3 UTF-8 bytes,
often 2 tokens). Decoding the ids so far then ends in U+FFFD (the replacement character for an
incomplete byte sequence); printing it would show garbage that a later token "repairs". So
:class:`StreamDecoder` decodes all ids seen so far and emits only the new text that is final: it holds
back trailing U+FFFD characters, and holds everything back if the decode is not an extension of what was
already emitted. :meth:`StreamDecoder.flush` emits the rest, so the concatenation of everything emitted
equals ``tokenizer.decode(all_ids)`` whenever the tokenizer's decode is prefix-consistent
(decode(a) is a prefix of decode(a + b) once a ends on a character boundary), which holds for byte-level
BPE, char and WordPiece/SentencePiece-style decoders.

Cost: one decode of the whole sequence per token, O(n^2) characters over a generation, negligible next to
the model for the context lengths dodai generates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

REPLACEMENT = "\ufffd"


class StreamDecoder:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        """Add one id; return the newly final text (possibly empty)."""
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids)
        stable = text.rstrip(REPLACEMENT)  # a trailing U+FFFD may be a character still arriving
        if not stable.startswith(self.emitted):
            return ""  # the decoder rewrote earlier text (e.g. a prefix-sensitive rule): wait for flush
        new = stable[len(self.emitted):]
        self.emitted = stable
        return new

    def flush(self) -> str:
        """Return whatever is left: decode(all ids) minus what was emitted."""
        text = self.tokenizer.decode(self.ids)
        new = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text if text.startswith(self.emitted) else self.emitted
        return new


def stream_text(tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Yield text pieces for a stream of ids (non-empty pieces only), ending with the flushed rest."""
    dec = StreamDecoder(tokenizer)
    for i in ids:
        piece = dec.push(i)
        if piece:
            yield piece
    rest = dec.flush()
    if rest:
        yield rest
