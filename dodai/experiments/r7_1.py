"""R7.1 experiment: BM25 vs dense (dodai's MiniLM) vs hybrid retrieval on a real docstring retrieval
set, recall@k and MRR, and grounded answers with citations from SmolLM2-135M-Instruct.

The set (:mod:`dodai.rag.evalset`): each query is a stdlib docstring's one-line summary, its one
relevant document is the rest of that docstring; all the bodies form the collection, chunked
(800 characters, 100 overlap), so a document is ranked by its best chunk. Every method retrieves the
top 100 chunks; "hybrid" is reciprocal rank fusion (k = 60), "weighted" the equal-weight min–max
score fusion — both untuned. A random ranking's recall@k is k / N.

Grounded answers: a few queries turned into questions, the top 3 hybrid chunks numbered in the
prompt, SmolLM2 asked to cite [n]; the report shows the answers, whether their citations are valid
and whether they cite the relevant document; one off-topic question shows the abstention threshold.

Quick mode: 120 documents, the encoder truncated to 128 tokens, one generated answer.
"""

from __future__ import annotations

import time
from pathlib import Path

KS = (1, 3, 5, 10, 20)
METHODS = ("bm25", "dense", "hybrid", "weighted")
OFF_TOPIC = "What is the boiling point of water on Mount Everest?"


def _question(summary: str) -> str:
    """A docstring summary ("Return the number of ...") as a question for the chat model."""
    s = summary.rstrip(".")
    return f"Which function does this: \"{s}\"? Explain in one sentence."


def run(out_dir: Path, quick: bool = False) -> dict:
    from dodai.models.bert import load_sentence_encoder
    from dodai.rag.answer import answer, generate_answer
    from dodai.rag.evalset import docstring_qa, evaluate
    from dodai.rag.index import RagIndex, doc_ranking
    from dodai.report import Report
    from dodai.viz import pyplot

    out_dir = Path(out_dir)
    rep = Report(out_dir, "R7.1 Retrieval-augmented generation: BM25, dense, hybrid; grounded answers")
    n_docs = 120 if quick else None
    n_answers = 1 if quick else 5
    pairs = docstring_qa(n_docs)
    N = len(pairs)

    t0 = time.perf_counter()
    enc = load_sentence_encoder("all-minilm-l6-v2")
    if quick:
        enc.max_seq_length = 128  # shorter inputs: quick mode must run in seconds
    titles = [f"doc {i}" for i in range(N)]
    index = RagIndex.build([p.doc for p in pairs], titles=titles, chunk_size=800, chunk_overlap=100, encoder=enc)
    t_index = time.perf_counter() - t0
    queries = [p.query for p in pairs]
    t0 = time.perf_counter()
    qvecs = index.dense.embed_queries(queries)
    t_queries = time.perf_counter() - t0

    metrics, curves, t_search = {}, {}, {}
    for m in METHODS:
        t0 = time.perf_counter()
        hits = index.search_many(queries, k=100, method=m, depth=100, query_vecs=qvecs)
        t_search[m] = time.perf_counter() - t0
        rankings = [doc_ranking(h) for h in hits]
        metrics[m] = evaluate(rankings, list(range(N)), KS)
        curves[m] = [metrics[m][f"recall@{k}"] for k in KS]
    random_recall = {k: min(1.0, k / N) for k in KS}

    rep.heading("The retrieval set")
    rep.text(f"{N} queries, one relevant document each: a stdlib docstring's one-line summary is the query, "
             f"the rest of that docstring the document. The collection: those {N} documents, cut into "
             f"{len(index.chunks)} chunks (800 characters, overlap 100, sentence-aware). Embeddings by "
             f"dodai's all-MiniLM-L6-v2 port{' (truncated to 128 tokens)' if quick else ''}. "
             f"Indexing took {t_index:.1f} s, embedding the queries {t_queries:.1f} s.")
    ex = pairs[0]
    rep.code(f"query:    {ex.query}\ndocument: {ex.doc[:300]}")
    rep.heading("Recall@k and MRR (document level, top 100 chunks per method)")
    rows = []
    for m in METHODS:
        rows.append({"method": m, **{f"R@{k}": f"{metrics[m][f'recall@{k}']:.3f}" for k in KS},
                     "MRR": f"{metrics[m]['mrr']:.3f}", "search s": f"{t_search[m]:.2f}"})
    rows.append({"method": "random", **{f"R@{k}": f"{random_recall[k]:.3f}" for k in KS}, "MRR": "", "search s": ""})
    rep.table(rows)
    rep.text("hybrid = reciprocal rank fusion of BM25 and dense (Cormack et al. 2009, k = 60); weighted = "
             "equal-weight sum of min-max normalised scores. Neither was tuned on this set.")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        ax.plot(KS, curves[m], marker="o", label=m)
    ax.plot(KS, [random_recall[k] for k in KS], linestyle="--", color="gray", label="random")
    ax.set_xscale("log")
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1)
    ax.set_title(f"Docstring summary → body retrieval ({N} documents)")
    ax.legend()
    fig.tight_layout()
    png = out_dir / "recall_at_k.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rep.image(png, "recall@k per retrieval method")

    # ---- grounded answers ------------------------------------------------------------------------
    from dodai.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    answers = []
    t0 = time.perf_counter()
    for i in range(n_answers):
        q = _question(pairs[i].query)
        hits = index.search(q, k=3, method="hybrid")
        a = generate_answer(model, tok, q, hits, max_new_tokens=20 if quick else 80, title=index.title)
        cited_docs = [h.chunk.source for h in a.cited_sources()]
        answers.append({"question": q, "relevant_doc": i, "shown_docs": [h.chunk.source for h in hits],
                        "answer": a.text, "citations": a.citations, "invalid_citations": a.invalid_citations,
                        "grounded": a.grounded, "cites_relevant": i in cited_docs, "abstained": a.abstained,
                        "prompt_tokens": a.prompt_tokens})
    t_answers = time.perf_counter() - t0
    off = answer(index, model, tok, OFF_TOPIC, k=3, method="hybrid", min_score=0.25)
    best_cos = max(h.dense_score for h in off.sources) if off.sources else None
    rel_cos = float((qvecs[:N] * index.dense.embeddings[[next(j for j, c in enumerate(index.chunks) if c.source == i)
                                                           for i in range(N)]]).sum(-1).mean())

    rep.heading("Grounded answers (SmolLM2-135M-Instruct, greedy, top 3 hybrid chunks as sources)")
    for a in answers:
        status = ("grounded" if a["grounded"] else "no valid citation") + \
                 (", cites the relevant document" if a["cites_relevant"] else "")
        shown = ", ".join(f"[{n + 1}] doc {d}" for n, d in enumerate(a["shown_docs"]))
        rep.code(f"Q: {a['question']}\nsources: {shown} (relevant: doc {a['relevant_doc']})\n"
                 f"A: {a['answer']}\n-> citations {a['citations']}, invalid {a['invalid_citations']}: {status}")
    n_gr = sum(a["grounded"] for a in answers)
    n_rel = sum(a["cites_relevant"] for a in answers)
    n_first = sum(a["citations"] == [1] for a in answers)
    rep.text(f"{n_gr}/{len(answers)} answers cite only existing sources (and at least one); {n_rel}/{len(answers)} "
             f"cite the relevant document; {n_first}/{len(answers)} cite exactly source [1] (the top-ranked chunk: "
             f"a small model's position bias, so citing the relevant document mostly tracks retrieval's rank 1). "
             f"Generation took {t_answers:.1f} s in all.")
    cmp = "<" if best_cos is not None and best_cos < 0.25 else ">="
    rep.text(f"Off-topic question {OFF_TOPIC!r}: best chunk cosine {best_cos:.3f} {cmp} threshold 0.25 → "
             f"{off.text!r} (abstained: {off.abstained}); for comparison, the mean cosine of a query with the "
             f"first chunk of its relevant document is {rel_cos:.3f}.")

    rep.results.update({
        "n_docs": N, "n_chunks": len(index.chunks), "quick": quick, "metrics": metrics,
        "random_recall": {f"recall@{k}": v for k, v in random_recall.items()},
        "answers": answers, "grounded": n_gr, "cites_relevant": n_rel, "cites_first_only": n_first,
        "off_topic": {"question": OFF_TOPIC, "best_cosine": best_cos, "abstained": off.abstained, "text": off.text},
        "mean_relevant_cosine": rel_cos,
        "seconds": {"index": t_index, "queries": t_queries, "answers": t_answers, **{f"search_{m}": v
                                                                                    for m, v in t_search.items()}},
    })
    rep.write()
    return rep.results
