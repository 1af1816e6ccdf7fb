"""A tokenizer from a GGUF file's metadata (llama.cpp's ``tokenizer.ggml.*`` keys), through dodai's BPE.

What a GGUF file of a byte-level BPE model (``tokenizer.ggml.model = "gpt2"``) carries:

- ``tokenizer.ggml.tokens``: the vocabulary, token id = index, in GPT-2's byte-to-unicode form
  (space is ``Ġ``), exactly the strings of the original HF tokenizer.json;
- ``tokenizer.ggml.merges``: ranked merges as ``"left right"`` strings;
- ``tokenizer.ggml.token_type``: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
  Control tokens (``<|im_start|>`` …) become dodai special tokens (matched before pre-tokenization,
  never merged); user-defined ones are matched whole too but are not "special" (HF's
  ``special=false`` added tokens);
- ``tokenizer.ggml.{bos,eos,unknown,padding}_token_id``;
- ``tokenizer.ggml.pre``: *which* pre-tokenization regex the model was trained with, by name. llama.cpp
  keeps a table of these (llama-vocab.cpp); the ones dodai knows are in :data:`PRE_TOKENIZERS`.
  SmolLM2 says ``"smollm"``: split every digit on its own (\\p{N}), then GPT-2's regex, which is
  what SmolLM2's original tokenizer.json does (``Digits(individual_digits=true)`` then
  ``ByteLevel(use_regex=true)``).
- ``tokenizer.chat_template``: the Jinja chat template (see dodai/chat_template.py).

The returned :class:`~dodai.tokenizers.bpe.ByteLevelBPE` gets five extra attributes: ``bos_id``,
``pad_id`` (int or None), ``add_bos`` / ``add_eos`` (bool: whether a raw prompt should start with BOS / end
with EOS; ``encode`` never adds them) and ``chat_template`` (str or None).

SentencePiece vocabularies (``tokenizer.ggml.model = "llama"``: Gemma, Llama 2, …) become a
:class:`dodai.tokenizers.gguf_spm.GGUFSentencePiece` with the same attributes.
"""

from __future__ import annotations

import os

from dodai.errors import DodaiError
from dodai.tokenizers.pretokenize import PreTokenizer

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.pre name -> pre-tokenizer steps (facts from llama.cpp's llama-vocab.cpp table).
_DIGITS_THEN_GPT2 = [("digits", True), ("regex", "gpt2")]
PRE_TOKENIZERS: dict[str, list] = {
    "default": [("regex", "gpt2")],
    "gpt-2": [("regex", "gpt2")],
    "gpt2": [("regex", "gpt2")],
    "smollm": _DIGITS_THEN_GPT2,
    "starcoder": _DIGITS_THEN_GPT2,
    "refact": _DIGITS_THEN_GPT2,
}


def _list_of(md: dict, key: str, kind: type, n: int | None = None) -> list:
    v = md.get(key)
    if not isinstance(v, list) or not all(isinstance(x, kind) and not isinstance(x, bool) for x in v):
        raise DodaiError(f"GGUF metadata {key} is missing or not a list of {kind.__name__}")
    if n is not None and len(v) != n:
        raise DodaiError(f"GGUF metadata {key} has {len(v)} entries, expected {n}")
    return v


def _token_id(md: dict, key: str, n: int) -> int | None:
    v = md.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
        raise DodaiError(f"GGUF metadata {key}={v!r} is not a token id below {n}")
    return v


def tokenizer_from_metadata(md: dict):
    """GGUF metadata dict -> ByteLevelBPE (with ``bos_id``, ``pad_id``, ``chat_template``)."""
    from dodai.tokenizers.bpe import ByteLevelBPE

    model = md.get("tokenizer.ggml.model")
    if model is None:
        raise DodaiError("GGUF file has no tokenizer (tokenizer.ggml.model is absent)")
    if model == "llama":
        return sentencepiece_from_metadata(md)
    if model != "gpt2":
        raise DodaiError(f"GGUF tokenizer model {model!r} is not supported yet (dodai reads byte-level BPE, "
                         f"'gpt2', and SentencePiece, 'llama')")
    pre_name = md.get("tokenizer.ggml.pre", "default")
    if pre_name not in PRE_TOKENIZERS:
        raise DodaiError(f"GGUF pre-tokenizer {pre_name!r} is not supported yet "
                         f"(known: {', '.join(sorted(PRE_TOKENIZERS))})")
    tokens = _list_of(md, "tokenizer.ggml.tokens", str)
    n = len(tokens)
    types = md.get("tokenizer.ggml.token_type")
    types = _list_of(md, "tokenizer.ggml.token_type", int, n) if types is not None else [TOKEN_NORMAL] * n
    merges = _list_of(md, "tokenizer.ggml.merges", str)
    vocab: dict[str, int] = {}
    specials: dict[str, int] = {}
    user_defined: list[str] = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_CONTROL or ty == TOKEN_USER_DEFINED:
            if tok in specials:
                raise DodaiError(f"GGUF vocabulary repeats the special token {tok!r}")
            specials[tok] = i
            if ty == TOKEN_USER_DEFINED:
                user_defined.append(tok)
        else:
            vocab.setdefault(tok, i)  # a duplicate string keeps its first id (as HF's vocab dict would)
    eos = _token_id(md, "tokenizer.ggml.eos_token_id", n)
    pre = PreTokenizer(PRE_TOKENIZERS[pre_name], add_prefix_space=bool(md.get("tokenizer.ggml.add_space_prefix")))
    # allow_missing_bytes: SmolLM2 has no token for 21 byte values (e.g. 0x04, 0xC0, 0xFF); HF drops them.
    tok = ByteLevelBPE.from_vocab_merges(vocab, merges, pre, specials, eos_id=eos, nonspecial_added=user_defined,
                                         allow_missing_bytes=True)
    tok.bos_id = _token_id(md, "tokenizer.ggml.bos_token_id", n)
    tok.pad_id = _token_id(md, "tokenizer.ggml.padding_token_id", n)
    tok.add_bos = _flag(md, "tokenizer.ggml.add_bos_token", False)
    tok.add_eos = _flag(md, "tokenizer.ggml.add_eos_token", False)
    tok.chat_template = _template(md)
    return tok


def _flag(md: dict, key: str, default: bool) -> bool:
    v = md.get(key, default)
    if isinstance(v, int) and v in (0, 1):  # bool, or a 0/1 integer some writers use
        return bool(v)
    raise DodaiError(f"GGUF metadata {key} must be a bool, got {type(v).__name__} {v!r}")


def _template(md: dict) -> str | None:
    tmpl = md.get("tokenizer.chat_template")
    return tmpl if isinstance(tmpl, str) and tmpl.strip() else None


def sentencepiece_from_metadata(md: dict):
    """GGUF metadata of a SentencePiece vocabulary -> GGUFSentencePiece (ids equal to HF's GGUF tokenizer)."""
    from dodai.tokenizers.gguf_spm import GEMMA_ARCHS, GEMMA_TURNS, GGUFSentencePiece

    tokens = _list_of(md, "tokenizer.ggml.tokens", str)
    n = len(tokens)
    types = md.get("tokenizer.ggml.token_type")
    types = _list_of(md, "tokenizer.ggml.token_type", int, n) if types is not None else [TOKEN_NORMAL] * n
    arch = md.get("general.architecture")
    gemma = arch in GEMMA_ARCHS
    scores = None
    if not gemma:  # Gemma's ranks are positions; other vocabularies rank by their scores
        scores = md.get("tokenizer.ggml.scores")
        if not isinstance(scores, list) or len(scores) != n or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores):
            raise DodaiError(f"GGUF metadata tokenizer.ggml.scores is missing or not {n} numbers")
    unk = _token_id(md, "tokenizer.ggml.unknown_token_id", n)
    tok = GGUFSentencePiece(
        tokens, scores, types, rank_by_position=gemma, respell_spaces=gemma,
        # llama.cpp prepends a space to SentencePiece text unless the file says otherwise; Gemma's never does
        add_space_prefix=False if gemma else _flag(md, "tokenizer.ggml.add_space_prefix", True),
        bos_id=_token_id(md, "tokenizer.ggml.bos_token_id", n), eos_id=_token_id(md, "tokenizer.ggml.eos_token_id", n),
        unk_id=unk, pad_id=_token_id(md, "tokenizer.ggml.padding_token_id", n),
        add_bos=_flag(md, "tokenizer.ggml.add_bos_token", True),
        add_eos=_flag(md, "tokenizer.ggml.add_eos_token", False),
        chat_template=_template(md))
    if tok.chat_template is None and gemma:
        tok.chat_template = GEMMA_TURNS  # the file has none: Gemma's turn format (chat_template_from_file False)
    return tok


def tokenizer_from_gguf(path: str | os.PathLike, gguf=None):
    """The tokenizer stored in a GGUF file (``gguf``: an already open GGUFFile, to avoid re-parsing)."""
    if gguf is not None:
        return tokenizer_from_metadata(gguf.metadata)
    from dodai.weights.gguf import GGUFFile

    with GGUFFile(path) as g:
        return tokenizer_from_metadata(g.metadata)
