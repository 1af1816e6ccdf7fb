"""Compare tokenizers on one text (R4.6): ``dodai tokenizer compare``.

Each tokenizer is trained on the first 90 % of the text and measured on the last 10 %:

- **bytes/token**: UTF-8 bytes of the held-out text per token (higher = better compression);
- **tokens/char**: tokens per character of the held-out text (lower = shorter sequences);
- **vocab used**: the fraction of the vocabulary that occurs in the held-out encoding;
- **encode MB/s**: held-out megabytes (10^6 bytes) per second of one ``encode`` call on the whole
  held-out text, the first call after training (word caches start cold for everyone).

dodai's byte-level BPE, Unigram and WordPiece are always in the table. HF ``tokenizers`` (byte-level
BPE, Unigram and WordPiece trainers) and ``sentencepiece`` (unigram) rows are added beside them
**when those libraries are importable**: they are optional extras, not runtime dependencies, so they
are imported only here, inside functions, at call time, behind ``try/except ImportError``.

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


# -- references (optional) ------------------------------------------------------------------------------

def _hf_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return (lambda s: tok.encode(s).ids), tok.get_vocab_size()


def _hf_unigram(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(text.splitlines(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False))
    return (lambda s: tok.encode(s).ids), tok.get_vocab_size()


def _hf_wordpiece(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([text], trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False))
    return (lambda s: tok.encode(s, add_special_tokens=False).ids), tok.get_vocab_size()


def _spm_unigram(text: str, vocab_size: int):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line for line in text.splitlines() if line.strip()]), model_writer=model,
        vocab_size=vocab_size, model_type="unigram", byte_fallback=True, hard_vocab_limit=False,
        max_sentence_length=1 << 16, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return sp.encode, sp.get_piece_size()


DODAI = [("BPE (byte-level)", _dodai_bpe), ("Unigram", _dodai_unigram), ("WordPiece", _dodai_wordpiece)]
REFERENCES = [("BPE (byte-level)", "HF tokenizers", "tokenizers", _hf_bpe),
              ("Unigram", "HF tokenizers", "tokenizers", _hf_unigram),
              ("WordPiece", "HF tokenizers", "tokenizers", _hf_wordpiece),
              ("Unigram", "sentencepiece", "sentencepiece", _spm_unigram)]


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def compare(text: str, vocab_size: int = 2000, references: bool = True, log=None) -> list[Row]:
    """Train every available tokenizer on the first 90 % of ``text``, measure on the rest."""
    if vocab_size < 300:
        raise DodaiError(f"--vocab-size {vocab_size} is too small to compare (byte-level BPE and "
                         f"byte-fallback Unigram need 256 byte tokens + merges): use at least 300")
    train_text, held_out = split_text(text)
    if len(text) < 1000 or not held_out.strip():
        raise DodaiError(f"the text is too short to compare tokenizers ({len(text)} characters; it needs at "
                         f"least 1000, with some words in its last 10 %)")
    jobs = [(name, "dodai", fn) for name, fn in DODAI]
    if references:
        jobs += [(name, lib, fn) for name, lib, module, fn in REFERENCES if _importable(module)]
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

