"""A retrieval evaluation set with natural labels, offline: stdlib docstring summary → the rest of it.

PEP 257 asks a docstring to open with a one-line summary, then a blank line, then the details. The
summary is a natural question-like description written by the author ("Return the canonical path of
the specified filename, eliminating any symbolic links"), and the details are the document that
answers it — written by the same author about the same function, but *without* the summary, so the
query is not a substring of its target. Each query has exactly one relevant document.

Construction from the built-in ``python-docs`` corpus (:func:`dodai.data.corpora.corpus_documents`),
deterministic for one Python version:

- a document qualifies when its first paragraph is one line of 4–30 words and the rest (the body)
  has at least ``MIN_BODY`` characters;
- pairs whose summary or body occurs more than once are dropped (ambiguous labels);
- order (and the subset a quick run takes) is fixed by SHA-256 of the summary, so it does not depend
  on file order.

Metrics (:func:`evaluate`): recall@k (the relevant document is among the top k) and MRR (mean of
1/rank of the relevant document, 0 when it is not retrieved within the ranking given).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MIN_BODY = 80


@dataclass(frozen=True)
class QAPair:
    query: str  # the docstring's summary line
    doc: str  # the docstring without it


def pairs_from_documents(docs: Sequence[str]) -> list[QAPair]:
    cands = []
    for d in docs:
        head, sep, body = d.partition("\n\n")
        head, body = head.strip(), body.strip()
        if not sep or "\n" in head or not 4 <= len(head.split()) <= 30 or len(body) < MIN_BODY:
            continue
        cands.append(QAPair(head, body))
    nq, nd = Counter(p.query for p in cands), Counter(p.doc for p in cands)
    kept = [p for p in cands if nq[p.query] == 1 and nd[p.doc] == 1]
    return sorted(kept, key=lambda p: hashlib.sha256(p.query.encode("utf-8")).digest())


def docstring_qa(n: int | None = None) -> list[QAPair]:
    """The python-docs summary→body pairs (the first ``n`` in hash order, or all)."""
    from dodai.data.corpora import corpus_documents

    pairs = pairs_from_documents(corpus_documents("python-docs"))
    return pairs if n is None else pairs[:n]


def evaluate(rankings: Sequence[Sequence], relevant: Sequence, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """recall@k for each k and MRR, given one ranking (doc ids, best first) and one relevant id per query."""
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings for {len(relevant)} queries")
    n = max(len(relevant), 1)
    ranks = []
    for r, rel in zip(rankings, relevant):
        r = list(r)
        ranks.append(r.index(rel) + 1 if rel in r else None)
    out = {f"recall@{k}": sum(1 for x in ranks if x is not None and x <= k) / n for k in ks}
    out["mrr"] = sum(1.0 / x for x in ranks if x is not None) / n
    return out


# ---- question answering: SQuAD's exact match and token F1 --------------------------------------------
#
# As the official SQuAD v1.1/v2.0 evaluation script defines them (Rajpurkar et al. 2016): both strings are
# normalised (lower-cased, ASCII punctuation removed, the articles a/an/the removed as words, whitespace
# collapsed); exact match is string equality after that, F1 the harmonic mean of token precision and recall
# over the normalised tokens (counted as a multiset). With several reference answers a prediction gets the
# best score over them. An empty reference list (an unanswerable question) scores 1 only for an empty answer.

_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str) -> float:
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def best_over(metric, prediction: str, references: Sequence[str]) -> float:
    """The best ``metric`` over the references (an unanswerable question: 1 iff the prediction is empty)."""
    if not references:
        return float(not normalize_answer(prediction))
    return max(metric(prediction, r) for r in references)


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]
    gold: int | str | None = None  # the document (index in the collection, or title) that holds the answer
    id: str | None = None


def load_qa(path) -> list[QAItem]:
    """A QA set from JSON Lines: ``{"question": str, "answers": [str, ...], "gold": int | str (optional)}`` per
    line (``"answer": str`` is accepted for one reference); a bad line is a one-line DodaiError."""
    import json
    from pathlib import Path

    from dodai.errors import DodaiError
    from dodai.io import read_user_text

    p = Path(path).expanduser()
    if not p.exists():
        raise DodaiError(f"{p}: no such file")
    items = []
    for n, line in enumerate(read_user_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            raise DodaiError(f"{p}:{n}: not valid JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) or not obj["question"].strip():
            raise DodaiError(f"{p}:{n}: each line must be an object with a non-empty \"question\" string")
        answers = obj.get("answers", [obj["answer"]] if "answer" in obj else None)
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DodaiError(f"{p}:{n}: \"answers\" must be a list of strings")
        gold = obj.get("gold")
        if gold is not None and (isinstance(gold, bool) or not isinstance(gold, (int, str))):
            raise DodaiError(f"{p}:{n}: \"gold\" must be a document index or title")
        items.append(QAItem(obj["question"].strip(), tuple(answers), gold, obj.get("id")))
    if not items:
        raise DodaiError(f"{p}: no questions")
    return items


def qa_scores(predictions: Sequence[str | None], items: Sequence[QAItem]) -> dict:
    """Exact match and F1 in percent over ``items`` (an abstention, None, scores as the empty answer), and the
    abstention rate."""
    n = max(len(items), 1)
    preds = ["" if p is None else p for p in predictions]
    return {"exact_match": 100.0 * sum(best_over(exact_match, p, it.answers) for p, it in zip(preds, items)) / n,
            "f1": 100.0 * sum(best_over(f1_score, p, it.answers) for p, it in zip(preds, items)) / n,
            "abstention": sum(p is None for p in predictions) / n, "n": len(items)}
