"""Normalisation and whitespace handling for dodai's Unigram tokenizer (SentencePiece style).

What dodai's own Unigram tokenizer does to text, in order (and what it writes into tokenizer.json so
HF ``tokenizers`` does exactly the same):

1. NFKC (``unicodedata.normalize``; HF: ``NFKC``). sentencepiece's default ``nmt_nfkc`` adds a few
   rules on top (control characters dropped or mapped to a space, some spaces unified); dodai does not
   add them: only NFKC, then step 2. (Reading a sentencepiece ``.model`` file uses its exact rules:
   see ``spm_model.py``.)
2. Runs of ASCII whitespace ``[ \\t\\n\\r\\f\\v]`` become one space, and leading/trailing ones are
   dropped (sentencepiece's ``remove_extra_whitespaces``; HF: two ``Replace`` normalizers with the
   regexes ``\\A[ws]+|[ws]+\\z`` -> "" and ``[ws]+`` -> " ").
3. Spaces become ``"▁"`` (U+2581) and a ``"▁"`` is prepended unless the text already starts with one
   (the dummy prefix); the text is split
   into words before each ``"▁"`` (HF: ``Metaspace(prepend_scheme="always", split=True)``).
"""

from __future__ import annotations

import re
import unicodedata

SPACE = "\u2581"
WS_CLASS = "[ \\t\\n\\r\\f\\v]"
_WS_RUN = re.compile(WS_CLASS + "+")


def normalize(text: str) -> str:
    """Steps 1-2: NFKC, whitespace runs -> one space, no leading/trailing whitespace."""
    return _WS_RUN.sub(" ", unicodedata.normalize("NFKC", text)).strip(" ")


def to_words(normalized: str) -> list[str]:
    """Step 3: ``"a b▁c"`` -> ``["▁a", "▁b", "▁c"]`` (every word starts with "▁"; "" -> [])."""
    if not normalized:
        return []
    s = normalized.replace(" ", SPACE)
    if s[0] != SPACE:  # HF's Metaspace prepends only when the text does not already start with "▁"
        s = SPACE + s
    out, start = [], 0
    for i in range(1, len(s)):
        if s[i] == SPACE:
            out.append(s[start:i])
            start = i
    out.append(s[start:])
    return out


def words(text: str) -> list[str]:
    return to_words(normalize(text))


_SCRIPT_CACHE: dict[str, str] = {}


def script(c: str) -> str:
    """A coarse Unicode script class for the trainer's "no piece mixes scripts" rule.

    sentencepiece forbids pieces that mix Unicode scripts (``split_by_unicode_script``) and treats
    Hiragana, Katakana and the long-vowel mark as Han. Python has no script property, so dodai
    approximates: Han+kana -> "han"; other letters -> the first word of their Unicode name
    (LATIN, GREEK, CYRILLIC, HANGUL...); combining marks -> "inherited"; everything else
    (digits, punctuation, symbols) -> "common". Digits and punctuation may join each other.
    """
    r = _SCRIPT_CACHE.get(c)
    if r is not None:
        return r
    o = ord(c)
    if (0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F or 0x4E00 <= o <= 0x9FFF
            or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3FFFF or o == 0x3005):
        r = "han"
    else:
        cat = unicodedata.category(c)
        if cat.startswith("L"):
            name = unicodedata.name(c, "")
            r = name.split(" ", 1)[0] if name else "other"
        elif cat.startswith("M"):
            r = "inherited"
        else:
            r = "common"
    _SCRIPT_CACHE[c] = r
    return r
