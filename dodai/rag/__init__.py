"""Retrieval-augmented generation (R7.1): chunking, BM25, dense retrieval, fusion, grounded answers.

- :mod:`dodai.rag.chunk` — sentence-aware chunking by characters or tokens, with overlap and offsets;
- :mod:`dodai.rag.bm25` — Okapi BM25 over a sparse inverted index;
- :mod:`dodai.rag.dense` — exact cosine top-k over dodai's own MiniLM (BERT) sentence embeddings;
- :mod:`dodai.rag.hybrid` — reciprocal rank fusion and weighted score fusion;
- :mod:`dodai.rag.index` — the three together over one chunked collection, saved to a folder;
- :mod:`dodai.rag.answer` — numbered sources in the prompt, a short extracted answer (default) or a cited
  generation, abstention;
- :mod:`dodai.rag.extract` — the span constraint that makes an answer a copy of the sources;
- :mod:`dodai.rag.evalset` — a real retrieval set from the standard library's docstrings, recall@k / MRR,
  SQuAD's exact match and F1, QA files;
- :mod:`dodai.rag.qa` — a RAG set-up scored on a QA set (``dodai rag eval``);
- :mod:`dodai.rag.squad` — an excerpt of SQuAD 2.0 (CC BY-SA 4.0) split into dev and held-out articles.

Importing this package imports nothing heavy; the submodules import torch when they need it.
"""
