"""Character-level tokenizer, as in nanoGPT's shakespeare_char: one id per distinct character.

The vocabulary is ``sorted(set(text))`` (code-point order), so ids match nanoGPT's ``prepare.py``
on the same text. A character outside the vocabulary is an error (there is no unknown token).
Saved as a tokenizer.json that HF ``tokenizers`` also loads: a BPE model with no merges and no
pre-tokenizer encodes character by character, and the ``Fuse`` decoder joins without spaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dodai.errors import DodaiError


class CharTokenizer:
    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if not chars:
            raise DodaiError("a char tokenizer needs at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise DodaiError("char vocabulary must be distinct single characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.special_tokens: dict[str, int] = {}
        self.eos_id: int | None = None

    @classmethod
    def train(cls, text: str | Iterable[str]) -> CharTokenizer:
        """Vocabulary = the sorted set of characters of the training text."""
        if isinstance(text, str):
            text = [text]
        seen: set[str] = set()
        for t in text:
            seen.update(t)
        if not seen:
            raise DodaiError("no training text (empty corpus)")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise DodaiError(f"character {c!r} (U+{ord(c):04X}) at position {text.index(c)} is not in the "
                             f"char tokenizer's vocabulary of {len(self.chars)}") from None

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        out = []
        for i in ids:
            try:
                if i < 0:
                    raise IndexError
                out.append(chars[i])
            except (IndexError, TypeError):
                raise DodaiError(f"token id {i!r} is not in the vocabulary (size {len(chars)})") from None
        return "".join(out)

    def to_hf_dict(self) -> dict:
        from dodai.tokenizers.hf_json import char_to_dict

        return char_to_dict(self.chars)

    def save(self, path: str | os.PathLike) -> Path:
        from dodai.tokenizers.hf_json import write_tokenizer_json

        return write_tokenizer_json(path, self.to_hf_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        from dodai.tokenizers.hf_json import char_from_dict, read_tokenizer_json

        d = read_tokenizer_json(path)
        try:
            return cls(char_from_dict(d))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DodaiError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {e})") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
