"""Compare tokenizers on one text (R4.6): ``dodai tokenizer compare``.

Each tokenizer is trained on the first 90 % of the text and measured on the last 10 %:

- **bytes/token**: UTF-8 bytes of the held-out text per token (higher = better compression);
- **tokens/char**: tokens per character of the held-out text (lower = shorter sequences);
- **vocab used**: the fraction of the vocabulary that occurs in the held-out encoding;
- **encode MB/s**: held-out megabytes (10^6 bytes) per second of one ``encode`` call on the whole
  held-out text, the first call after training (word caches start cold for everyone).

The table has dodai's byte-level BPE, Unigram and WordPiece. dodai never imports a reference library: the
rows of HF ``tokenizers`` (byte-level BPE, Unigram and WordPiece trainers) and ``sentencepiece`` (unigram) are
added by ``benchmarks/tokenizer_compare.py``, which passes its own trainers as ``references``.

Caveats when reading the table: WordPiece lower-cases, strips accents and drops whitespace (BERT's
normaliser), so its tokens cover less information than the lossless byte-level BPE's; Unigram rows
count byte-fallback and specials in their vocabulary; timings are single runs on whatever machine runs
the command (no warm-up), so treat MB/s as a rough guide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dodai.errors import DodaiError


@dataclass
class Row:
    name: str
    library: str
    vocab_size: int
    bytes_per_token: float
    tokens_per_char: float
    vocab_used: float
    encode_mb_s: float
    train_s: float


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """First ``train_fraction`` of the characters for training, the rest held out."""
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def _measure(name: str, library: str, train: Callable[[], tuple[Callable[[str], list[int]], int]],
             held_out: str) -> Row:
    t0 = time.perf_counter()
    encode, vocab_size = train()
    t1 = time.perf_counter()
    ids = encode(held_out)
    t2 = time.perf_counter()
    n_bytes = len(held_out.encode("utf-8"))
    n = max(len(ids), 1)
    return Row(name, library, vocab_size, n_bytes / n, len(ids) / max(len(held_out), 1),
               len(set(ids)) / max(vocab_size, 1), n_bytes / 1e6 / max(t2 - t1, 1e-9), t1 - t0)


# -- dodai ---------------------------------------------------------------------------------------------

def _dodai_bpe(text: str, vocab_size: int):
    from dodai.tokenizers.bpe import ByteLevelBPE

    tok = ByteLevelBPE.train(text, vocab_size, special_tokens=["<|endoftext|>"])
    return tok.encode, tok.vocab_size


def _dodai_unigram(text: str, vocab_size: int):
    from dodai.tokenizers.unigram import UnigramTokenizer

    tok = UnigramTokenizer.train(text, vocab_size)
    return tok.encode, tok.vocab_size


def _dodai_wordpiece(text: str, vocab_size: int):
    from dodai.tokenizers.wordpiece_trainer import train

    tok = train(text, vocab_size)
    return (lambda s: tok.encode(s, add_special_tokens=False)), tok.vocab_size


DODAI = [("BPE (byte-level)", _dodai_bpe), ("Unigram", _dodai_unigram), ("WordPiece", _dodai_wordpiece)]


def compare(text: str, vocab_size: int = 2000, references=(), log=None) -> list[Row]:
    """Train dodai's tokenizers (and any ``references``: ``(name, library, train_fn)`` triples, where
    ``train_fn(text, vocab_size)`` returns ``(encode, vocab_size)``) on the first 90 % of ``text``; measure on
    the rest."""
    if vocab_size < 300:
        raise DodaiError(f"--vocab-size {vocab_size} is too small to compare (byte-level BPE and "
                         f"byte-fallback Unigram need 256 byte tokens + merges): use at least 300")
    train_text, held_out = split_text(text)
    if len(text) < 1000 or not held_out.strip():
        raise DodaiError(f"the text is too short to compare tokenizers ({len(text)} characters; it needs at "
                         f"least 1000, with some words in its last 10 %)")
    jobs = [(name, "dodai", fn) for name, fn in DODAI]
    jobs += [(name, lib, fn) for name, lib, fn in (references or ())]
    rows = []
    for name, lib, fn in jobs:
        if log:
            log(f"training {lib} {name} (vocab {vocab_size}) …")
        try:
            rows.append(_measure(name, lib, lambda fn=fn: fn(train_text, vocab_size), held_out))
        except DodaiError as e:
            raise DodaiError(f"{lib} {name}: {e}") from None
    return rows


def markdown_table(rows: list[Row]) -> str:
    head = ("| tokenizer | library | vocab | bytes/token | tokens/char | vocab used | encode MB/s | train s |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r.name} | {r.library} | {r.vocab_size} | {r.bytes_per_token:.3f} | {r.tokens_per_char:.4f} | "
            f"{r.vocab_used:.1%} | {r.encode_mb_s:.2f} | {r.train_s:.2f} |" for r in rows]
    return "\n".join([head, *body])

