"""Prepare user text (or a built-in corpus) for training: a deterministic train/val split.

Accepted sources:

- a ``.txt``/``.md`` file: one document;
- a folder: every ``*.txt``/``*.md`` below it (recursive, sorted by relative path), one document each;
- a ``.jsonl`` file: one JSON object per line, its ``text_field`` (default ``"text"``) is a document;
- a built-in corpus name (``python-docs``): its documents.

Split rule:

- **one document** (a single plain file): the first ``1 - val_fraction`` of its characters is
  train, the rest val. This is nanoGPT's ``shakespeare_char`` split (first 90 % / last 10 %), so
  numbers are comparable with it.
- **several documents**: each document goes to val when a hash of (seed, its text) falls below
  ``val_fraction``; otherwise to train. The decision depends on the document alone, so adding or
  removing other documents never moves a document across the split. If the hash leaves one side
  empty, the document with the lowest (or highest) hash is moved there so both are non-empty.

Outputs (``prepare``): ``train.txt``, ``val.txt`` (documents joined by a blank line) and ``meta.json``
(source, rule, sizes in documents/characters/bytes, sha256 of both files).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import (
    atomic_write_json,
    atomic_write_text,
    parse_json_line,
    read_user_text,
    read_user_texts,
    user_files_in,
)

TEXT_SUFFIXES = (".txt", ".md")
DOC_SEP = "\n\n"


@dataclass
class Split:
    train: str
    val: str
    meta: dict = field(default_factory=dict)


def _jsonl_documents(path: Path, text_field: str) -> list[str]:
    raw = read_user_text(path)  # missing/empty/binary/non-UTF-8 -> DodaiError
    docs = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        obj = parse_json_line(line, f"{path}:{lineno}")
        if not isinstance(obj, dict):
            raise DodaiError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        if text_field not in obj:
            raise DodaiError(f"{path}:{lineno}: no {text_field!r} field (use --text-field to pick another)")
        text = obj[text_field]
        if not isinstance(text, str):
            raise DodaiError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected a string")
        if text.strip():
            docs.append(text)
    if not docs:
        raise DodaiError(f"{path}: no non-empty {text_field!r} texts")
    return docs


def _folder_documents(path: Path) -> list[str]:
    files = sorted(user_files_in(path, TEXT_SUFFIXES), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DodaiError(f"{path}: folder holds no .txt or .md files")
    docs = read_user_texts(files, skip_empty=True)  # an empty file in a folder is skipped, not fatal
    if not docs:
        raise DodaiError(f"{path}: every .txt/.md file in the folder is empty")
    return docs


def load_documents(source: str | Path, text_field: str = "text") -> tuple[list[str], str]:
    """Documents of ``source`` and its kind ('file', 'folder', 'jsonl', 'corpus')."""
    from dodai.data import corpora

    if isinstance(source, str) and source in corpora.CORPORA and not Path(source).exists():
        return corpora.corpus_documents(source), "corpus"
    p = Path(source)
    if not p.exists():
        raise DodaiError(f"{p}: no such file or folder")
    if p.is_dir():
        return _folder_documents(p), "folder"
    if p.suffix.lower() == ".jsonl":
        return _jsonl_documents(p, text_field), "jsonl"
    # Any other suffix is accepted as long as the content is UTF-8 text (read_user_text checks).
    return [read_user_text(p)], "file"


def _score(doc: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}\x00".encode() + doc.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def is_val_document(doc: str, val_fraction: float = 0.1, seed: int = 0) -> bool:
    """Whether ``doc`` falls on the validation side of the hash rule (before the non-empty fix-up)."""
    return _score(doc, seed) < val_fraction


def split_documents(docs: list[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[str, str, str]:
    """(train_text, val_text, rule) by the rule in the module docstring."""
    if not 0.0 < val_fraction < 1.0:
        raise DodaiError(f"val fraction must be strictly between 0 and 1, got {val_fraction}")
    if len(docs) == 1:
        text = docs[0]
        n = int(len(text) * (1.0 - val_fraction))
        train, val = text[:n], text[n:]
        if not train.strip() or not val.strip():
            raise DodaiError("text too short to split into non-empty train and val parts")
        return train, val, f"first {1 - val_fraction:.0%} of characters train, the rest val (nanoGPT)"
    scores = [_score(d, seed) for d in docs]
    is_val = [s < val_fraction for s in scores]
    if not any(is_val):
        is_val[min(range(len(docs)), key=scores.__getitem__)] = True
    if all(is_val):
        is_val[max(range(len(docs)), key=scores.__getitem__)] = False
    train = DOC_SEP.join(d for d, v in zip(docs, is_val) if not v)
    val = DOC_SEP.join(d for d, v in zip(docs, is_val) if v)
    return train, val, f"by document: sha256(seed={seed}, text) < {val_fraction} goes to val"


def load_split(source: str | Path, val_fraction: float = 0.1, text_field: str = "text", seed: int = 0) -> Split:
    docs, kind = load_documents(source, text_field)
    train, val, rule = split_documents(docs, val_fraction, seed)
    meta = {
        "source": str(source),
        "kind": kind,
        "documents": len(docs),
        "split_rule": rule,
        "val_fraction": val_fraction,
        "seed": seed,
        "train_chars": len(train),
        "val_chars": len(val),
        "train_bytes": len(train.encode("utf-8")),
        "val_bytes": len(val.encode("utf-8")),
        "train_sha256": hashlib.sha256(train.encode("utf-8")).hexdigest(),
        "val_sha256": hashlib.sha256(val.encode("utf-8")).hexdigest(),
    }
    return Split(train, val, meta)


def prepare(
    source: str | Path, out_dir: str | Path, val_fraction: float = 0.1, text_field: str = "text", seed: int = 0
) -> dict:
    """Split ``source`` and write ``train.txt``, ``val.txt`` and ``meta.json`` into ``out_dir``; returns meta."""
    s = load_split(source, val_fraction, text_field, seed)
    out = Path(out_dir)
    atomic_write_text(out / "train.txt", s.train)
    atomic_write_text(out / "val.txt", s.val)
    atomic_write_json(out / "meta.json", s.meta)
    return s.meta
