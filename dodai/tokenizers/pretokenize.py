"""Pre-tokenization for byte-level BPE: the GPT-2 byte<->unicode map, split regexes, special tokens.

BPE never merges across pre-token boundaries, so the regex decides what a token *can* be: GPT-2
(Radford et al., 2019) splits off English contractions, letter runs, digit runs, punctuation runs
and whitespace, each optionally led by one space; GPT-4's cl100k pattern (as published with OpenAI's
tiktoken) also caps digit runs at three, keeps contractions case-insensitive, lets one non-letter
prefix a word and glues newlines to the preceding punctuation run. Both use the third-party
``regex`` module for ``\\p{L}``/``\\p{N}``; HF ``tokenizers`` runs the same patterns with Oniguruma.

Conventions (mirroring HF ``tokenizers`` so that tokenizer.json files mean the same in both):

- A :class:`PreTokenizer` is a sequence of steps; each step re-splits every piece the previous
  step produced (HF ``Sequence``). ``("regex", pattern)`` is ``Split(Regex, behavior=Isolated)``:
  matches *and* the gaps between them become pieces. ``("digits", individual)`` is HF ``Digits``.
- ``("prefix_space", True)`` is HF ``ByteLevel(add_prefix_space=true)``: it prepends one space to
  every piece that does not already start with one. HF applies it where ByteLevel stands in the
  sequence (before ByteLevel's own GPT-2 regex when ``use_regex`` is true); the constructor's
  ``add_prefix_space=True`` puts it first, which is what a lone ``ByteLevel`` pre-tokenizer does.
- Special tokens are matched *before* pre-tokenization, leftmost first and longest first at the
  same position (HF added-token matching); they are never split or merged.
"""

from __future__ import annotations

import re as _re
from collections.abc import Iterable

import regex

from dodai.errors import DodaiError

# The published split patterns: GPT-2's (encoder.py), and a spelling of tiktoken's cl100k_base
# pattern with possessive quantifiers that splits identically (checked on English and Japanese text).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
# Patterns known to match every character of any text, so that findall() alone loses nothing.
_COVERING = {GPT2_PATTERN, GPT4_PATTERN}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
    (controls, space, soft hyphen...) are shifted to U+0100 onwards in byte order. This is how
    byte-level BPE vocabularies are written in tokenizer.json: space is 'Ġ', newline 'Ċ'.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


BYTE_ENCODER: dict[int, str] = bytes_to_unicode()
BYTE_DECODER: dict[str, int] = {c: b for b, c in BYTE_ENCODER.items()}


def bytes_to_symbol(b: bytes) -> str:
    """Token bytes -> the byte-unicode string tokenizer.json stores ('Ġthe' for b' the')."""
    return "".join(BYTE_ENCODER[x] for x in b)


def symbol_to_bytes(s: str) -> bytes:
    """Inverse of :func:`bytes_to_symbol`; DodaiError for a character outside the 256-symbol map."""
    try:
        return bytes(BYTE_DECODER[c] for c in s)
    except KeyError as e:
        raise DodaiError(f"token {s!r} is not in GPT-2 byte-level form (character {e.args[0]!r})") from None


def resolve_pattern(pattern: str) -> str:
    """'gpt2' / 'gpt4' -> the published regex; any other string is taken as a regex and checked."""
    p = PATTERNS.get(pattern, pattern)
    try:
        rx = regex.compile(p)
    except (regex.error, TypeError) as e:
        raise DodaiError(f"invalid pre-tokenization regex {pattern!r}: {e}") from None
    if rx.fullmatch("") is not None:
        # A pattern that can match nothing yields empty pieces; almost surely a mistake.
        raise DodaiError(f"pre-tokenization regex {pattern!r} matches the empty string")
    return p


class PreTokenizer:
    """A sequence of split steps applied to a special-token-free string (see module docstring).

    steps: ``[("regex", pattern), ("digits", individual_digits: bool), ("prefix_space", True), ...]``
    in order; ``add_prefix_space=True`` prepends a ``("prefix_space", True)`` step.
    """

    def __init__(self, steps: Iterable[tuple[str, object]], add_prefix_space: bool = False):
        steps = list(steps)
        if add_prefix_space:
            steps.insert(0, ("prefix_space", True))
        self.steps: list[tuple[str, object]] = []
        self._fns = []
        for kind, arg in steps:
            if kind == "regex":
                p = resolve_pattern(str(arg))
                self.steps.append(("regex", p))
                self._fns.append(self._regex_fn(p))
            elif kind == "digits":
                self.steps.append(("digits", bool(arg)))
                # Rust's char::is_numeric is the Unicode N categories, i.e. \p{N}.
                self._fns.append(self._regex_fn(r"\p{N}" if arg else r"\p{N}+"))
            elif kind == "prefix_space":
                if arg:
                    self.steps.append(("prefix_space", True))
                    self._fns.append(lambda p: [p if p.startswith(" ") else " " + p])
            else:
                raise DodaiError(f"unknown pre-tokenizer step {kind!r}")
        kinds = [k for k, _ in self.steps]
        self.add_prefix_space = "prefix_space" in kinds
        # Fast path: [prefix_space,] one regex known to cover every character -> a single findall().
        rest = self.steps[1:] if kinds[:1] == ["prefix_space"] else self.steps
        fast = len(rest) == 1 and rest[0][0] == "regex" and rest[0][1] in _COVERING
        self._findall = regex.compile(rest[0][1]).findall if fast else None
        self._prefix_first = kinds[:1] == ["prefix_space"]

    @classmethod
    def from_pattern(cls, pattern: str = "gpt4", add_prefix_space: bool = False) -> PreTokenizer:
        return cls([("regex", pattern)], add_prefix_space=add_prefix_space)

    @staticmethod
    def _regex_fn(pattern: str):
        """Split(Regex, Isolated): matches and the gaps between them, in order, none empty."""
        rx = regex.compile(pattern)
        findall, finditer = rx.findall, rx.finditer

        def split(text: str) -> list[str]:
            pieces = findall(text)
            if sum(map(len, pieces)) == len(text):
                return pieces  # the matches cover the text: no gaps to add (the common case)
            out, last = [], 0
            for m in finditer(text):
                s, e = m.span()
                if s > last:
                    out.append(text[last:s])
                if e > s:
                    out.append(text[s:e])
                last = e
            if last < len(text):
                out.append(text[last:])
            return out

        return split

    def split(self, text: str) -> list[str]:
        """One special-token-free segment -> its pre-tokens, which concatenate back to it."""
        if self._findall is not None:
            if self._prefix_first and text and not text.startswith(" "):
                text = " " + text
            return self._findall(text)
        pieces = [text] if text else []
        for fn in self._fns:
            pieces = [q for p in pieces for q in fn(p)]
        return pieces

    def describe(self) -> str:
        names = {v: k for k, v in PATTERNS.items()}
        parts = [names.get(a, "regex") if k == "regex" else k if k == "prefix_space" else f"digits({a})"
                 for k, a in self.steps]
        return "+".join(parts) or "none"


class SpecialSplitter:
    """Splits text at special tokens: leftmost match first, the longest one at the same position."""

    def __init__(self, tokens: Iterable[str]):
        toks = sorted({t for t in tokens if t}, key=lambda t: (-len(t), t))
        self._rx = _re.compile("(" + "|".join(map(_re.escape, toks)) + ")") if toks else None

    def split(self, text: str) -> list[str]:
        """-> [text, special, text, special, ..., text]: odd positions are special tokens."""
        if self._rx is None:
            return [text]
        return self._rx.split(text)
