"""dodai's tokenizers beside HF ``tokenizers`` and ``sentencepiece`` on one text (R4.6): the reference rows of
``dodai tokenizer compare``, which dodai itself never imports.

    .venv/bin/python benchmarks/tokenizer_compare.py --data FILE [--vocab-size 2000] [--max-bytes N]

Each reference library is used only when it is installed (the test extras install both).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dodai.tokenizers.compare import compare, markdown_table  # noqa: E402


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


REFERENCES = [("BPE (byte-level)", "HF tokenizers", "tokenizers", _hf_bpe),
              ("Unigram", "HF tokenizers", "tokenizers", _hf_unigram),
              ("WordPiece", "HF tokenizers", "tokenizers", _hf_wordpiece),
              ("Unigram", "sentencepiece", "sentencepiece", _spm_unigram)]


def available_references() -> list[tuple]:
    """(name, library, train_fn) for each reference whose library is installed."""
    return [(n, lib, fn) for n, lib, mod, fn in REFERENCES if importlib.util.find_spec(mod) is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--max-bytes", type=int, default=None)
    a = ap.parse_args()
    text = Path(a.data).read_text(encoding="utf-8")
    if a.max_bytes:
        text = text.encode("utf-8")[:a.max_bytes].decode("utf-8", errors="ignore")
    rows = compare(text, a.vocab_size, references=available_references(), log=lambda m: print(m, file=sys.stderr))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
