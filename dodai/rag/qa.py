"""Scoring a RAG set-up on a question-answering set: retrieval hit@k, exact match, F1, citations, abstention.

For each :class:`dodai.rag.evalset.QAItem` the index retrieves the top ``k`` chunks with ``method``; the
answer comes from :func:`dodai.rag.answer.answer`'s logic (abstain when the best cosine is below
``min_score``, else extract or generate). Reported (:func:`summarise`):

* ``hit@k`` — the gold document is among the retrieved chunks' documents (items with a gold id only);
* ``exact_match`` / ``f1`` — SQuAD's metrics in percent, best over the references, an abstention scoring as
  the empty answer (:func:`dodai.rag.evalset.qa_scores`);
* ``gold_in_cited`` — among answered items with a gold id, the share whose cited sources include the gold
  document;
* ``abstention`` — the share of items answered "I don't know".

``method="none"`` is the floor: the model answers from the question alone (no sources, free generation
after the same worked examples without their sources, greedy).

Identical prompts are answered once (``cache``): the three retrieval methods often show the same chunks in
the same order, and the answer is then the same by construction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dodai.errors import DodaiError
from dodai.rag.evalset import QAItem, best_over, exact_match, f1_score

NO_RETRIEVAL = "none"
FLOOR_SYSTEM = "Answer the question with a name, a number, a date or a few words."


def gold_doc(item: QAItem, index) -> int | None:
    """The gold document id of ``item`` in ``index``: an int as is, a string matched against the titles."""
    if item.gold is None or isinstance(item.gold, int):
        return item.gold
    titles = index.titles or []
    return titles.index(item.gold) if item.gold in titles else None


def floor_answer(reader, question: str) -> str:
    """The model alone: the worked examples' questions and answers (no sources), then the question."""
    from dodai.generate.engine import Request, run_requests
    from dodai.generate.processors import LogitsPipeline
    from dodai.rag.answer import _prompt_ids

    msgs = [{"role": "system", "content": FLOOR_SYSTEM}]
    for _, q, a in reader.shots:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": question})
    ids = _prompt_ids(reader.tok, msgs, reader.model.config.block_size, reader.max_new_tokens)
    req = Request(ids, reader.max_new_tokens, LogitsPipeline(temperature=0.0), stop_ids=reader.end_ids,
                  tokenizer=reader.tok)
    return run_requests(reader.model, [req], reader.backend)[0].text.strip()


def run_qa(index, reader, items: Sequence[QAItem], k: int = 2, method: str = "hybrid", min_score: float = 0.25,
           system: str | None = None, cache: dict | None = None, progress=None) -> list[dict]:
    """One row per item: the answer, its scores, the retrieved and cited documents, seconds."""
    from dodai.rag.answer import best_cosine, system_prompt

    if k < 1:
        raise DodaiError(f"k must be positive, got {k}")
    sys_msg = system_prompt(getattr(index, "description", None), system, "extract")
    cache = {} if cache is None else cache
    rows = []
    for n, it in enumerate(items):
        t0 = time.perf_counter()
        gold = gold_doc(it, index) if index is not None else None
        row = {"question": it.question, "answers": list(it.answers), "gold": gold}
        if method == NO_RETRIEVAL:
            key = (NO_RETRIEVAL, it.question)
            if key not in cache:
                cache[key] = (floor_answer(reader, it.question), [])
            text, cited = cache[key]
            row.update(retrieved=[], best_cosine=None, abstained=False, answer=text, cited=[])
        else:
            hits = index.search(it.question, k=k, method=method)
            docs = [h.chunk.source for h in hits]
            best = best_cosine(hits)
            row.update(retrieved=docs, best_cosine=best)
            if not hits or (best is not None and best < min_score):
                row.update(abstained=True, answer=None, cited=[])
            else:
                key = (it.question, tuple((h.chunk.source, h.chunk.index) for h in hits))
                if key not in cache:
                    a = reader.extract(it.question, hits, index.title, sys_msg, idf=index.bm25.idf)
                    cache[key] = (None if a.abstained else a.text, [h.chunk.source for h in a.cited_sources()])
                text, cited = cache[key]
                row.update(abstained=text is None, answer=text, cited=cited)
        pred = row["answer"] or ""
        row["em"] = best_over(exact_match, pred, it.answers)
        row["f1"] = best_over(f1_score, pred, it.answers)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress is not None:
            progress(n + 1, len(items), row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """hit@k, exact match and F1 (percent), gold in cited sources, abstention rate, seconds per question."""
    n = max(len(rows), 1)
    with_gold = [r for r in rows if r["gold"] is not None and r["retrieved"]]
    answered_gold = [r for r in rows if r["gold"] is not None and not r["abstained"] and r["retrieved"]]
    return {"n": len(rows),
            "exact_match": 100.0 * sum(r["em"] for r in rows) / n,
            "f1": 100.0 * sum(r["f1"] for r in rows) / n,
            "hit@k": (sum(r["gold"] in r["retrieved"] for r in with_gold) / len(with_gold)) if with_gold else None,
            "gold_in_cited": (sum(r["gold"] in r["cited"] for r in answered_gold) / len(answered_gold)
                              if answered_gold else None),
            "abstention": sum(r["abstained"] for r in rows) / n,
            "seconds_per_question": sum(r["seconds"] for r in rows) / n}
