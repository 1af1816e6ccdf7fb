"""HF ``tokenizer.json`` in and out for byte-level BPE and char-level tokenizers.

The format is that of HF ``tokenizers`` (``Tokenizer.save``): ``model`` (type, vocab, merges),
``added_tokens``, ``normalizer``, ``pre_tokenizer``, ``post_processor``, ``decoder``. Facts about it
(key names, the two merge spellings ``"a b"`` and ``["a", "b"]``) were checked against the
``tokenizers`` sources; the reading code here is dodai's own.

What dodai writes for byte-level BPE:
  pre_tokenizer = Sequence[Split(Regex(pattern), Isolated), ByteLevel(add_prefix_space=false,
  use_regex=false)], decoder = ByteLevel, model = BPE (vocab in GPT-2 byte-unicode form, merges
  as pairs), added_tokens = the special tokens (also listed in the vocab, as HF's trainer does).

What dodai reads: BPE models whose pre-tokenizer is built from ``ByteLevel`` (``use_regex`` true
means the GPT-2 pattern), ``Split`` (Regex or String pattern, Isolated behaviour), ``Digits`` and
``Sequence`` thereof, with ByteLevel last; normalizer null or NFC/NFD/NFKC/NFKD. Post-processors
are ignored: ids equal HF's ``encode(text, add_special_tokens=False)``. Anything else -> DodaiError.

Char-level tokenizers are written as a BPE model with no merges, no pre-tokenizer and a ``Fuse``
decoder, which HF loads and encodes character by character with the same ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dodai.errors import DodaiError
from dodai.tokenizers.pretokenize import GPT2_PATTERN, PreTokenizer, bytes_to_symbol

_MAX_JSON_BYTES = 512 * 1024 * 1024


def tokenizer_json_path(path: str | os.PathLike) -> Path:
    """A tokenizer.json file, or a folder that holds one -> the file's path (DodaiError if absent)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise DodaiError(f"{p}: no such tokenizer file")
    return p


def write_tokenizer_json(path: str | os.PathLike, d: dict) -> Path:
    """Write ``d`` atomically as a tokenizer.json: a folder (or a path not ending in .json) gets
    ``tokenizer.json`` inside it. Returns the file written. Shared by every tokenizer's ``save``."""
    from dodai.io import atomic_write_text

    p = Path(path)
    if p.is_dir() or p.suffix != ".json":
        p = p / "tokenizer.json"
    atomic_write_text(p, json.dumps(d, ensure_ascii=False, indent=2) + "\n")
    return p


def read_tokenizer_json(path: str | os.PathLike) -> dict:
    from dodai.io import read_user_bytes

    p = tokenizer_json_path(path)
    try:
        d = json.loads(read_user_bytes(p, _MAX_JSON_BYTES).decode("utf-8"))  # a regular file, size capped
    except UnicodeDecodeError:
        raise DodaiError(f"{p}: not UTF-8 text; expected a tokenizer.json") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise DodaiError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise DodaiError(f"{p}: not a tokenizer.json (no 'model' object)")
    return d


def model_kind(d: dict) -> str:
    """'byte-bpe', 'char', 'WordPiece', 'Unigram', or another model type name."""
    model = d.get("model") or {}
    mtype = model.get("type")
    if mtype is None and "merges" in model:
        mtype = "BPE"  # very old files omit the type
    if mtype != "BPE":
        return str(mtype)
    if "ByteLevel" in json.dumps([d.get("pre_tokenizer"), d.get("decoder")]):
        return "byte-bpe"
    if not model.get("merges") and d.get("pre_tokenizer") is None:
        return "char"
    return "BPE"


# ------------------------------------------------------------------- byte-level BPE
def _added_token(content: str, i: int, special: bool = True) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def _pre_to_dict(pre: PreTokenizer) -> dict:
    steps = list(pre.steps)
    # HF's ByteLevel comes last and applies add_prefix_space at its own position (before its GPT-2
    # regex if use_regex): a prefix step can only be written there.
    aps = use_regex = False
    if steps[-2:] == [("prefix_space", True), ("regex", GPT2_PATTERN)]:
        aps = use_regex = True
        steps = steps[:-2]
    elif steps[-1:] == [("prefix_space", True)]:
        aps = True
        steps = steps[:-1]
    out = []
    for kind, arg in steps:
        if kind == "regex":
            out.append({"type": "Split", "pattern": {"Regex": arg}, "behavior": "Isolated", "invert": False})
        elif kind == "digits":
            out.append({"type": "Digits", "individual_digits": bool(arg)})
        else:
            raise DodaiError(f"cannot write pre-tokenizer {pre.describe()} as tokenizer.json: HF adds the prefix "
                             f"space only in its final ByteLevel step")
    out.append({"type": "ByteLevel", "add_prefix_space": aps, "trim_offsets": True, "use_regex": use_regex})
    return {"type": "Sequence", "pretokenizers": out}


def bpe_to_dict(tok) -> dict:
    """A :class:`ByteLevelBPE` -> the tokenizer.json object."""
    specials = tok.special_tokens_all
    special_ids = set(specials.values())
    vocab: dict[str, int] = {}
    for i in range(tok.vocab_size):
        b = tok._id_bytes[i]
        if b is not None and i not in special_ids:
            vocab[bytes_to_symbol(b)] = i
    # Specials also go in the model vocab (as HF's trainer writes them) unless the string is taken.
    for s, i in specials.items():
        vocab.setdefault(s, i)
    merges = [[tok.id_to_token(a), tok.id_to_token(b)] for a, b, _ in tok.merges]
    normalizer = {"type": tok.normalizer} if tok.normalizer else None
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(s, i, s not in tok._nonspecial) for s, i in sorted(specials.items(),
                                                                                       key=lambda x: x[1])],
        "normalizer": normalizer,
        "pre_tokenizer": _pre_to_dict(tok.pretokenizer),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": bool(tok.ignore_merges),
            "vocab": vocab,
            "merges": merges,
        },
    }


def _parse_pre(node, steps: list, state: dict) -> None:
    """Flatten an HF pre_tokenizer object into dodai PreTokenizer steps (ByteLevel must come last)."""
    if node is None:
        return
    if not isinstance(node, dict):
        raise DodaiError(f"pre_tokenizer is not an object: {node!r:.80}")
    if state.get("byte_level"):
        raise DodaiError("unsupported tokenizer.json: a pre-tokenizer step after ByteLevel")
    t = node.get("type")
    if t == "Sequence":
        subs = node.get("pretokenizers")
        if not isinstance(subs, list):
            raise DodaiError("pre_tokenizer Sequence without a 'pretokenizers' list")
        for sub in subs:
            _parse_pre(sub, steps, state)
    elif t == "ByteLevel":
        if node.get("add_prefix_space", False):
            steps.append(("prefix_space", True))
        if node.get("use_regex", True):
            steps.append(("regex", GPT2_PATTERN))
        state["byte_level"] = True
    elif t == "Split":
        if node.get("invert") or node.get("behavior", "Isolated") != "Isolated":
            raise DodaiError(f"unsupported Split pre-tokenizer (behavior {node.get('behavior')!r}, "
                             f"invert {node.get('invert')!r}); dodai reads Isolated, non-inverted splits")
        pat = node.get("pattern")
        if isinstance(pat, dict) and isinstance(pat.get("Regex"), str):
            steps.append(("regex", pat["Regex"]))
        elif isinstance(pat, dict) and isinstance(pat.get("String"), str) and pat["String"]:
            import regex

            steps.append(("regex", regex.escape(pat["String"])))
        else:
            raise DodaiError(f"Split pre-tokenizer with an unreadable pattern {pat!r:.80}")
    elif t == "Digits":
        steps.append(("digits", bool(node.get("individual_digits", False))))
    else:
        raise DodaiError(f"unsupported pre-tokenizer {t!r} for byte-level BPE")


def _normalizer_name(node) -> str | None:
    if node is None:
        return None
    if isinstance(node, dict):
        t = node.get("type")
        if t in ("NFC", "NFD", "NFKC", "NFKD"):
            return t
        if t == "Sequence" and isinstance(node.get("normalizers"), list):
            names = [_normalizer_name(n) for n in node["normalizers"]]
            names = [n for n in names if n]
            if len(names) <= 1:
                return names[0] if names else None
    raise DodaiError(f"unsupported normalizer {json.dumps(node)[:80]}")


def _added(d: dict) -> tuple[dict[str, int], list[str]]:
    added = d.get("added_tokens") or []
    if not isinstance(added, list):
        raise DodaiError("'added_tokens' is not a list")
    specials, nonspecial = {}, []
    for t in added:
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or not t["content"] \
                or not isinstance(t.get("id"), int) or isinstance(t.get("id"), bool) or t["id"] < 0:
            raise DodaiError(f"bad added token {t!r:.80}")
        specials[t["content"]] = t["id"]
        if not t.get("special", True):
            nonspecial.append(t["content"])
    return specials, nonspecial


def bpe_parts(d: dict) -> dict:
    """The tokenizer.json object of a byte-level BPE -> the keyword arguments of
    :meth:`dodai.tokenizers.bpe.ByteLevelBPE.from_vocab_merges` (which builds the tokenizer)."""
    kind = model_kind(d)
    if kind != "byte-bpe":
        raise DodaiError(f"not a byte-level BPE tokenizer.json (model kind {kind!r})")
    model = d["model"]
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise DodaiError(f"unsupported BPE option {key}={model[key]!r}")
    if model.get("byte_fallback"):
        raise DodaiError("unsupported BPE option byte_fallback=true (not a byte-level vocabulary)")
    vocab, merges = model.get("vocab"), model.get("merges", [])
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise DodaiError("BPE model needs a 'vocab' object and a 'merges' list")
    steps: list = []
    state: dict = {}
    _parse_pre(d.get("pre_tokenizer"), steps, state)
    pre = PreTokenizer(steps)
    specials, nonspecial = _added(d)
    # allow_missing_bytes: HF loads vocabularies without all 256 byte tokens and drops those bytes.
    return dict(vocab=vocab, merges=merges, pre=pre, specials=specials, ignore_merges=bool(model.get("ignore_merges")),
                normalizer=_normalizer_name(d.get("normalizer")), nonspecial_added=nonspecial,
                allow_missing_bytes=True)


# ------------------------------------------------------------------- char level
def char_to_dict(chars: list[str]) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {c: i for i, c in enumerate(chars)}, "merges": []},
    }


def char_from_dict(d: dict) -> list[str]:
    """-> the characters in id order; DodaiError unless ids are 0..n-1 and each token is one char."""
    if model_kind(d) != "char":
        raise DodaiError(f"not a char-level tokenizer.json (model kind {model_kind(d)!r})")
    vocab = d["model"].get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise DodaiError("char tokenizer.json has no vocabulary")
    by_id: dict[int, str] = {}
    for c, i in vocab.items():
        if not isinstance(c, str) or len(c) != 1 or not isinstance(i, int) or isinstance(i, bool):
            raise DodaiError(f"char tokenizer entry {c!r}: {i!r} is not one character -> integer id")
        by_id[i] = c
    if sorted(by_id) != list(range(len(vocab))):
        raise DodaiError("char tokenizer ids are not 0..n-1 without gaps or repeats")
    return [by_id[i] for i in range(len(vocab))]
