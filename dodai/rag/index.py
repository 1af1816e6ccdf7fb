"""A retrieval index over a chunked collection: BM25 + dense + fusion, saved to a folder.

Folder layout (``RagIndex.save``)::

    meta.json               {"format": "dodai-rag", "version": 1, "encoder": ..., "chunk_size": ...,
                             "chunk_overlap": ..., "n_docs": ..., "n_chunks": ..., "bm25": {"k1", "b", "idf"},
                             "description": ... (optional: what the collection is, for the answer prompt)}
    chunks.json             [{"source", "index", "start", "end", "text"}, ...]   one per chunk
    titles.json             document titles (or ids), by document id
    embeddings.safetensors  "embeddings" (n_chunks, C) float32, unit rows

The BM25 inverted index is rebuilt from the chunk texts on load (deterministic, about a second for
the whole python-docs corpus) rather than stored: one less format to validate.

Retrieval ``method``: ``"bm25"``, ``"dense"``, ``"hybrid"`` (reciprocal rank fusion of the two top-
``depth`` lists) or ``"weighted"`` (weighted score fusion). Hits are chunks; :func:`doc_ranking`
turns a chunk ranking into a document ranking (each document at the rank of its best chunk).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import read_user_json
from dodai.rag.bm25 import BM25
from dodai.rag.chunk import Chunk, chunk_documents
from dodai.rag.hybrid import reciprocal_rank_fusion, weighted_fusion

METHODS = ("bm25", "dense", "hybrid", "weighted")
FORMAT, VERSION = "dodai-rag", 1


@dataclass
class Hit:
    chunk: Chunk
    score: float  # the method's own score (BM25, cosine, RRF or fused weight)
    dense_score: float | None = None  # cosine of the query with this chunk (for abstention), when known


class RagIndex:
    def __init__(self, chunks: list[Chunk], dense, titles: list[str] | None = None, chunk_size: int = 800,
                 chunk_overlap: int = 100, k1: float = 1.5, b: float = 0.75, idf: str = "lucene"):
        if not chunks:
            raise DodaiError("the collection has no text to index")
        if dense is not None and len(dense) != len(chunks):
            raise DodaiError(f"{len(dense)} embeddings for {len(chunks)} chunks")
        self.chunks, self.dense = chunks, dense
        self.titles = titles
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.description: str | None = None  # "Wikipedia articles", "the Python documentation", … (optional)
        self.bm25 = BM25([c.text for c in chunks], k1=k1, b=b, idf=idf)

    @classmethod
    def build(cls, docs: list[str], titles: list[str] | None = None, chunk_size: int = 800, chunk_overlap: int = 100,
              encoder=None, encoder_spec: str | None = None, batch_size: int = 32, progress: bool = False,
              dense: bool = True) -> RagIndex:
        from dodai.rag.dense import DEFAULT_ENCODER, DenseIndex

        chunks = chunk_documents(docs, chunk_size, chunk_overlap)
        if not chunks:
            raise DodaiError("the collection has no text to index")
        dix = None
        if dense:
            dix = DenseIndex.build([c.text for c in chunks], encoder, encoder_spec or DEFAULT_ENCODER,
                                   batch_size=batch_size, progress=progress)
        return cls(chunks, dix, titles, chunk_size, chunk_overlap)

    # ---- retrieval --------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, method: str = "hybrid", depth: int = 50,
               query_vec=None) -> list[Hit]:
        """The ``k`` best chunks for ``query``. ``query_vec`` (C,) skips embedding the query again."""
        return self.search_many([query], k, method, depth, None if query_vec is None else query_vec[None])[0]

    def search_many(self, queries: list[str], k: int = 5, method: str = "hybrid", depth: int = 50,
                    query_vecs=None) -> list[list[Hit]]:
        if method not in METHODS:
            raise DodaiError(f"unknown retrieval method {method!r} ({', '.join(METHODS)})")
        if k < 1 or depth < 1:
            raise DodaiError(f"k and depth must be positive, got k={k}, depth={depth}")
        depth = max(depth, k)
        need_dense = method != "bm25"
        if need_dense and self.dense is None:
            raise DodaiError("this index has no dense embeddings (built with dense=False)")
        cos = None
        if self.dense is not None:
            qv = query_vecs if query_vecs is not None else self.dense.embed_queries(queries)
            cos = self.dense.scores(qv)  # (M, N) cosine of every query with every chunk
        out = []
        for m, q in enumerate(queries):
            sparse = self.bm25.search(q, depth) if method != "dense" else []
            dense = []
            if need_dense:
                from dodai.rag.bm25 import top_k

                dense = top_k(cos[m].double().numpy(), depth)
            if method == "bm25":
                ranked = sparse
            elif method == "dense":
                ranked = dense
            elif method == "hybrid":
                ranked = reciprocal_rank_fusion([sparse, dense])
            else:
                ranked = weighted_fusion([sparse, dense])
            out.append([Hit(self.chunks[i], s, None if cos is None else float(cos[m, i])) for i, s in ranked[:k]])
        return out

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        from dodai.io import atomic_write_json

        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        n_docs = len({c.source for c in self.chunks})
        meta = {"format": FORMAT, "version": VERSION, "chunk_size": self.chunk_size,
                "chunk_overlap": self.chunk_overlap, "n_docs": n_docs, "n_chunks": len(self.chunks),
                "encoder": None if self.dense is None else self.dense.encoder_spec,
                "bm25": {"k1": self.bm25.k1, "b": self.bm25.b, "idf": self.bm25.idf_kind}}
        if self.description:
            meta["description"] = self.description
        atomic_write_json(d / "chunks.json", [asdict(c) for c in self.chunks])
        atomic_write_json(d / "titles.json", self.titles or [])
        if self.dense is not None:
            self.dense.save(d / "embeddings.safetensors")
        atomic_write_json(d / "meta.json", meta)  # last: a folder with meta.json is complete
        return d

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder=None) -> RagIndex:
        from dodai.rag.dense import DenseIndex

        d = Path(folder)
        if not (d / "meta.json").is_file():
            raise DodaiError(f"{d}: not a dodai RAG index (no meta.json; build one with `dodai rag index`)")
        meta = _read_json(d / "meta.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DodaiError(f"{d / 'meta.json'}: not a dodai RAG index")
        if meta.get("version") != VERSION:
            raise DodaiError(f"{d}: RAG index version {meta.get('version')!r}, this dodai reads {VERSION}")
        raw = _read_json(d / "chunks.json")
        try:
            chunks = [Chunk(c["source"], int(c["index"]), int(c["start"]), int(c["end"]), str(c["text"]))
                      for c in raw]
            bm = meta["bm25"]
            k1, b, idf = float(bm["k1"]), float(bm["b"]), str(bm["idf"])
            size, overlap = int(meta["chunk_size"]), int(meta["chunk_overlap"])
        except (TypeError, KeyError, ValueError):
            raise DodaiError(f"{d}: chunks.json or meta.json has a malformed entry") from None
        titles = _read_json(d / "titles.json") if (d / "titles.json").is_file() else []
        if not isinstance(titles, list):
            raise DodaiError(f"{d / 'titles.json'}: expected a JSON list")
        dense = None
        if meta.get("encoder") is not None:
            dense = DenseIndex.load(d / "embeddings.safetensors", encoder)
        index = cls(chunks, dense, [str(t) for t in titles] or None, size, overlap, k1, b, idf)
        desc = meta.get("description")
        index.description = desc if isinstance(desc, str) and desc.strip() else None
        return index

    def title(self, source) -> str:
        if self.titles and isinstance(source, int) and 0 <= source < len(self.titles):
            return self.titles[source]
        return str(source)


def doc_ranking(hits: list[tuple[Chunk, float]] | list[Hit]) -> list:
    """Document ids in the order of their best chunk (first appearance)."""
    seen, out = set(), []
    for h in hits:
        src = h.chunk.source if isinstance(h, Hit) else h[0].source
        if src not in seen:
            seen.add(src)
            out.append(src)
    return out


def _read_json(path: Path):
    try:
        return read_user_json(path, what="dodai RAG index file")
    except FileNotFoundError:
        raise DodaiError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DodaiError(f"{path}: not valid JSON ({type(e).__name__})") from None
