"""BM25 on the python-docs corpus: dodai's inverted index vs rank_bm25 (BM25Okapi), same tokens.

Build = indexing all chunks; query = scoring every chunk for each query and taking the top 10.
Both get the same pre-tokenised chunks and queries (dodai's identifier-aware tokenizer), so only
the index and the scoring are timed. Scores are checked to agree (robertson idf) on terms that
rank_bm25 does not patch (its floor for negative idf).

    .venv/bin/python benchmarks/rag_bm25.py --repeats 3 --queries 300
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=300)
    a = ap.parse_args()

    from rank_bm25 import BM25Okapi

    from dodai.data.corpora import corpus_documents
    from dodai.rag.bm25 import BM25, tokenize
    from dodai.rag.chunk import chunk_documents
    from dodai.rag.evalset import docstring_qa

    chunks = chunk_documents(corpus_documents("python-docs"), 800, 100)
    toks = [tokenize(c.text) for c in chunks]
    queries = [tokenize(p.query) for p in docstring_qa(a.queries)]
    print(f"{len(chunks)} chunks, {sum(map(len, toks))} tokens, {len(queries)} queries")

    res = {"dodai": {"build": [], "query": []}, "rank_bm25": {"build": [], "query": []}}
    for _ in range(a.repeats):
        t = time.perf_counter()
        ours = BM25(toks, idf="robertson")
        res["dodai"]["build"].append(time.perf_counter() - t)
        t = time.perf_counter()
        top_ours = [[d for d, _ in ours.search(q, 10)] for q in queries]
        res["dodai"]["query"].append(time.perf_counter() - t)

        t = time.perf_counter()
        ref = BM25Okapi(toks, k1=1.5, b=0.75)
        res["rank_bm25"]["build"].append(time.perf_counter() - t)
        t = time.perf_counter()
        top_ref = [list(np.argsort(-ref.get_scores(q), kind="stable")[:10]) for q in queries]
        res["rank_bm25"]["query"].append(time.perf_counter() - t)
    same = sum(x[:1] == y[:1] for x, y in zip(top_ours, top_ref)) / len(queries)
    # queries with no term in more than half of the chunks: the two formulas are then identical
    plain = [i for i, q in enumerate(queries) if all(ours.idf(t) >= 0 for t in q)]
    same_plain = sum(top_ours[i][:1] == top_ref[i][:1] for i in plain) / max(len(plain), 1)
    print(f"same top-1 chunk: {same:.1%} of all queries; {same_plain:.1%} of the {len(plain)} queries "
          "without a negative-idf term (rank_bm25 floors those idfs)")
    print(f"{'':10s} {'build s':>9s} {'query ms/q':>11s}")
    for name, r in res.items():
        print(f"{name:10s} {statistics.median(r['build']):9.3f} "
              f"{1000 * statistics.median(r['query']) / len(queries):11.3f}")
    b = statistics.median(res["rank_bm25"]["build"]) / statistics.median(res["dodai"]["build"])
    q = statistics.median(res["rank_bm25"]["query"]) / statistics.median(res["dodai"]["query"])
    print(f"dodai speed-up over rank_bm25: build {b:.2f}x, query {q:.2f}x")


if __name__ == "__main__":
    main()
