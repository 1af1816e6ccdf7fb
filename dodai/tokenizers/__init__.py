"""Tokenizers (R4.6): byte-level BPE, char-level, WordPiece, Unigram.

Every tokenizer has the same small interface:

- ``encode(text: str) -> list[int]`` and ``decode(ids: list[int]) -> str``
- ``vocab_size: int``; ``special_tokens: dict[str, int]``; ``eos_id: int | None``
- ``save(path)`` writes an HF-compatible ``tokenizer.json``

``load_tokenizer(spec)`` accepts a path (a tokenizer.json, or a folder holding one, or a GGUF
file) or a registry model name (``smollm2-135m-instruct``, ``all-minilm-l6-v2``).
"""

from __future__ import annotations

import os
from pathlib import Path

from dodai.errors import DodaiError

# Names that choose a tokenizer *algorithm* to train (e.g. for `dodai pretrain`), not one to load.
TRAINABLE = ("char", "bpe")


def _from_tokenizer_json(path: Path):
    from dodai.tokenizers.hf_json import model_kind, read_tokenizer_json

    d = read_tokenizer_json(path)
    kind = model_kind(d)
    try:
        if kind == "byte-bpe":
            from dodai.tokenizers.bpe import ByteLevelBPE

            return ByteLevelBPE.from_hf_dict(d)
        if kind == "char":
            from dodai.tokenizers.char import CharTokenizer
            from dodai.tokenizers.hf_json import char_from_dict

            return CharTokenizer(char_from_dict(d))
        if kind == "WordPiece":
            from dodai.tokenizers.wordpiece import WordPieceTokenizer

            return WordPieceTokenizer.from_tokenizer_json(path)
        if kind == "Unigram":
            from dodai.tokenizers.unigram import UnigramTokenizer

            return UnigramTokenizer.from_tokenizer_json(path)
    except ImportError as e:
        raise DodaiError(f"{path}: {kind} tokenizers are not available in this dodai build ({e})") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise DodaiError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {e})") from None
    raise DodaiError(f"{path}: unsupported tokenizer model {kind!r} "
                     f"(dodai reads byte-level BPE, char, WordPiece, Unigram)")


def _from_gguf(path: Path):
    try:
        from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf
    except ImportError as e:
        raise DodaiError(f"{path}: reading tokenizers from GGUF is not available ({e})") from None
    return tokenizer_from_gguf(path)


def load_tokenizer(spec: str | os.PathLike):
    """A tokenizer from a path (tokenizer.json, a folder holding one, a .gguf) or a registry model name."""
    s = str(spec)
    if s in TRAINABLE:
        raise DodaiError(f"{s!r} names a tokenizer algorithm to train (e.g. `dodai pretrain --tokenizer {s}`), "
                         f"not a tokenizer to load; give a tokenizer.json, a folder holding one, a .gguf file "
                         f"or a registry model name")
    from dodai.weights import registry

    if s in registry.MODELS:
        kind = registry.MODELS[s].kind
        p = registry.resolve(s)
        if kind.endswith("-gguf"):  # a causal LM in one GGUF file (its tokenizer inside)
            return _from_gguf(p)
        return _from_tokenizer_json(p if p.is_file() else p / "tokenizer.json")
    p = Path(s).expanduser()
    if not p.exists():
        raise DodaiError(f"tokenizer {s!r} is neither an existing path nor a registry model "
                         f"({', '.join(registry.MODELS)})")
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF" or p.suffix == ".gguf":
            return _from_gguf(p)
        if p.suffix == ".model":  # a sentencepiece ModelProto
            from dodai.tokenizers.spm_model import SentencePieceModel

            return SentencePieceModel.load(p)
        return _from_tokenizer_json(p)
    if (p / "tokenizer.json").is_file():
        return _from_tokenizer_json(p / "tokenizer.json")
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return _from_gguf(ggufs[0])
    raise DodaiError(f"{p}: folder holds no tokenizer.json")


__all__ = ["load_tokenizer", "TRAINABLE"]
