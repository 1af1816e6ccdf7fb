"""A labelled text-classification set built from the standard library: docstring → its package (R6.1, R5.2).

Every docstring of the built-in ``python-docs`` corpus (:mod:`dodai.data.corpora`) comes from one source
file; the first component of that file's path under the stdlib folder — ``email/mime/text.py`` →
``email``, ``tarfile.py`` → ``tarfile`` — names the top-level package or module it documents. Predicting
that name from the text alone is a many-class topic-classification task on real English prose, with
no download.

Construction (deterministic for one Python version):
- files are walked in sorted order and skipped exactly as the corpus skips them (tests, idlelib …);
  docstrings are cleaned with the corpus's own :func:`~dodai.data.corpora.clean_doc` and kept when they
  have at least ``MIN_CHARS`` characters, so every text here is also a document of the corpus;
- a text that occurs under two different labels is ambiguous and dropped entirely; repeats under one
  label are kept once;
- the ``n_classes`` labels with the most examples are kept (ties broken by name), optionally capped at
  ``max_per_class`` examples each (the first ones in file order);
- the held-out split is fixed by content: a text is held out when the first 8 bytes of SHA-256 of its
  UTF-8 bytes, read as an integer, fall below ``test_fraction`` of 2⁶⁴. It does not depend on the
  order, on the other texts, or on a seed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dodai.data.corpora import MIN_CHARS, _docstrings, _skip, clean_doc
from dodai.errors import DodaiError
from dodai.io import atomic_write_text
from dodai.paths import cache_dir


@dataclass
class LabelledSplit:
    texts: list[str]
    labels: list[int]  # indices into DocstringDataset.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class DocstringDataset:
    label_names: list[str]  # class index → package/module name, biggest class first
    train: LabelledSplit
    test: LabelledSplit


def is_held_out(text: str, test_fraction: float) -> bool:
    """The content-hash split: True when ``text`` belongs to the held-out set."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return h < test_fraction * 2**64


@lru_cache(maxsize=4)
def labelled_docstrings(stdlib: str | None = None) -> tuple[tuple[str, str], ...]:
    """Every (cleaned docstring, top-level package) pair of the stdlib, unambiguous ones only, in file order.

    For this interpreter's own stdlib the pairs are cached (JSON, atomic write) beside the corpus cache."""
    if stdlib is not None:
        return _extract(stdlib)
    cache = cache_dir() / "corpora" / f"python-docs-{sys.version_info.major}.{sys.version_info.minor}.labels.json"
    try:
        pairs = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs):
            return tuple((str(d), str(lab)) for d, lab in pairs)
    except (OSError, ValueError):
        pass  # absent or damaged: rebuilt below
    pairs = _extract(None)
    atomic_write_text(cache, json.dumps(pairs, ensure_ascii=False))
    return pairs


def _extract(stdlib: str | None) -> tuple[tuple[str, str], ...]:
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DodaiError(f"docstring labels: the standard library folder {root} is missing")
    first: dict[str, str] = {}
    ambiguous: set[str] = set()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if _skip(rel) or rel.parts[0] == "pydoc_data":
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        label = rel.parts[0].removesuffix(".py")
        for raw in _docstrings(source):
            d = clean_doc(raw)
            if len(d) < MIN_CHARS:
                continue
            if d in first and first[d] != label:
                ambiguous.add(d)
            first.setdefault(d, label)
    return tuple((d, lab) for d, lab in first.items() if d not in ambiguous)


def docstring_dataset(n_classes: int = 20, test_fraction: float = 0.2, max_per_class: int | None = None,
                      stdlib: str | None = None) -> DocstringDataset:
    """The docstring → package dataset over the ``n_classes`` biggest packages (see the module docstring)."""
    if type(n_classes) is not int or n_classes < 2:
        raise DodaiError(f"need at least 2 classes, got {n_classes!r}")
    if not 0.0 < test_fraction < 1.0:
        raise DodaiError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
    pairs = labelled_docstrings(None if stdlib is None else str(stdlib))
    counts = Counter(lab for _, lab in pairs)
    if len(counts) < n_classes:
        raise DodaiError(f"only {len(counts)} packages have docstrings, asked for {n_classes} classes")
    names = [lab for lab, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_classes]]
    index = {lab: i for i, lab in enumerate(names)}
    taken: Counter = Counter()
    train, test = LabelledSplit([], []), LabelledSplit([], [])
    for text, lab in pairs:
        if lab not in index or (max_per_class is not None and taken[lab] >= max_per_class):
            continue
        taken[lab] += 1
        split = test if is_held_out(text, test_fraction) else train
        split.texts.append(text)
        split.labels.append(index[lab])
    return DocstringDataset(names, train, test)
