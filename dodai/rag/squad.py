"""A real reading-comprehension set for R7.1: an excerpt of SQuAD 2.0's development set, split by article.

Source: the first five articles of the SQuAD 2.0 development set (Rajpurkar, Jia & Liang 2018, "Know What You
Don't Know: Unanswerable Questions for SQuAD"; the paragraphs are from English Wikipedia), as mirrored in the
public GitHub repository ``VinACE/san_mrc`` (file ``dev-v1.1.json``, which holds SQuAD 2.0 data despite its
name). Licence: CC BY-SA 4.0, as SQuAD itself. ``dodai/rag/data/make_squad_subset.py`` rebuilds the files.

Two parts, by article, so no paragraph is shared:

* ``dev`` — Normans, Sky (United Kingdom): the only part any choice of prompt, worked example, number of
  sources or threshold was made on (:func:`dodai.experiments.r7_1.dev_sweep`);
* ``heldout`` — Computational complexity theory, Southern California, Victoria (Australia): read only to
  report (:func:`dodai.experiments.r7_1.run`).

Each part is a collection (``squad2_<part>.docs.jsonl``: ``{"title", "text"}`` per paragraph, usable as
``dodai rag index --corpus``) and questions (``squad2_<part>.qa.jsonl``: ``{"id", "question", "answers",
"gold"}`` with ``gold`` the paragraph's line in the docs file; unanswerable questions carry ``"answers": []``
and ``"impossible": true``), readable by ``dodai rag eval --qa``.
"""

from __future__ import annotations

import json
from pathlib import Path

from dodai.errors import DodaiError

DATA = Path(__file__).parent / "data"
PARTS = ("dev", "heldout")
SOURCE = "SQuAD 2.0 development set, first five articles, via github.com/VinACE/san_mrc (dev-v1.1.json)"
LICENSE = "CC BY-SA 4.0"


def path(part: str, kind: str) -> Path:
    if part not in PARTS:
        raise DodaiError(f"unknown part {part!r} ({', '.join(PARTS)})")
    return DATA / f"squad2_{part}.{kind}.jsonl"


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def load_docs(part: str) -> tuple[list[str], list[str]]:
    """(paragraph texts, titles) of one part."""
    rows = [json.loads(line) for line in _read(path(part, "docs")).splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["title"] for r in rows]


def load_questions(part: str, answerable_only: bool = True) -> list:
    """The part's questions as :class:`dodai.rag.evalset.QAItem` (answerable ones only by default)."""
    from dodai.rag.evalset import QAItem

    out = []
    for line in _read(path(part, "qa")).splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if answerable_only and not r["answers"]:
            continue
        out.append(QAItem(r["question"], tuple(r["answers"]), r["gold"], r["id"]))
    return out
