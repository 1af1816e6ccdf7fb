"""Dense retrieval: dodai's own MiniLM (BERT) sentence embeddings, exact cosine top-k.

Texts go through :class:`dodai.models.bert.SentenceEncoder` (WordPiece → BERT → mean pooling → L2
normalisation; all-MiniLM-L6-v2 matches sentence-transformers exactly, see tests/test_bert.py). With
unit vectors, cosine similarity is a dot product, so scoring every document against a batch of
queries is one matrix product ``Q (M, C) @ Eᵀ (C, N) → (M, N)`` (Karpukhin et al. 2020, "Dense
Passage Retrieval", use the same inner-product search). Search is exact — no approximate index: a
few tens of thousands of 384-d vectors take a millisecond-scale matmul on a CPU.

Saved as ``embeddings.safetensors`` (one float32 tensor ``embeddings`` (N, C), the encoder's spec in
the metadata) beside the caller's JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dodai.errors import DodaiError
from dodai.rag.bm25 import top_k

DEFAULT_ENCODER = "all-minilm-l6-v2"


class DenseIndex:
    """Unit-norm embeddings (N, C) of a collection and an encoder for the queries."""

    def __init__(self, embeddings: torch.Tensor, encoder=None, encoder_spec: str = DEFAULT_ENCODER):
        if embeddings.ndim != 2:
            raise DodaiError(f"embeddings must be (N, C), got shape {tuple(embeddings.shape)}")
        self.embeddings = F.normalize(embeddings.float(), dim=-1)  # cosine = dot product of unit vectors
        self.encoder = encoder
        self.encoder_spec = encoder_spec

    @classmethod
    def build(cls, texts: list[str], encoder=None, encoder_spec: str = DEFAULT_ENCODER, batch_size: int = 32,
              progress: bool = False) -> DenseIndex:
        """Embed ``texts`` with ``encoder`` (loaded from ``encoder_spec`` when not given)."""
        if not texts:
            raise DodaiError("a dense index needs at least one text")
        enc = encoder or _load_encoder(encoder_spec)
        return cls(enc.encode(list(texts), batch_size=batch_size, progress=progress), enc, encoder_spec)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def embed_queries(self, queries: list[str], batch_size: int = 32) -> torch.Tensor:
        if self.encoder is None:
            self.encoder = _load_encoder(self.encoder_spec)
        q = self.encoder.encode(list(queries), batch_size=batch_size)
        if q.shape[1] != self.embeddings.shape[1]:
            raise DodaiError(f"query embeddings have {q.shape[1]} dimensions, the index {self.embeddings.shape[1]}")
        return F.normalize(q.float(), dim=-1)

    def scores(self, query_vecs: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every query (M, C) with every document: (M, N)."""
        return query_vecs @ self.embeddings.T

    def search_vecs(self, query_vecs: torch.Tensor, k: int = 10) -> list[list[tuple[int, float]]]:
        """Top ``k`` (doc id, cosine) per query vector, best first (ties in id order)."""
        if k < 1:
            raise DodaiError(f"k must be positive, got {k}")
        s = self.scores(query_vecs).double().numpy()
        return [top_k(row, k) for row in s]

    def search(self, queries: list[str] | str, k: int = 10) -> list[list[tuple[int, float]]]:
        if isinstance(queries, str):
            queries = [queries]
        return self.search_vecs(self.embed_queries(queries), k)

    def save(self, path: str | os.PathLike) -> None:
        from dodai.weights.safetensors import save_file

        save_file({"embeddings": self.embeddings.contiguous()}, path, metadata={"encoder": self.encoder_spec})

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None) -> DenseIndex:
        from dodai.weights.safetensors import load_file

        p = Path(path)
        tensors = load_file(p)
        if set(tensors) != {"embeddings"}:
            raise DodaiError(f"{p}: expected one tensor 'embeddings', found {sorted(tensors)}")
        emb = tensors["embeddings"]
        if emb.ndim != 2 or emb.dtype != torch.float32 or not torch.isfinite(emb).all():
            raise DodaiError(f"{p}: 'embeddings' must be a finite float32 (N, C) tensor")
        spec = _metadata(p).get("encoder", DEFAULT_ENCODER)
        return cls(emb, encoder, spec)


def _metadata(path: Path) -> dict:
    """The ``__metadata__`` of a safetensors header already validated by load_file (which drops it)."""
    import json
    import struct

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        try:
            return dict(json.loads(f.read(n)).get("__metadata__") or {})
        except (ValueError, AttributeError):
            return {}


def _load_encoder(spec: str):
    from dodai.models.bert import load_sentence_encoder

    return load_sentence_encoder(spec)


def cosine_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain cosine similarity of rows of a (M, C) with rows of b (N, C), normalising here (the oracle)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T
