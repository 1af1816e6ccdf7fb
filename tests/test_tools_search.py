"""The search tool: numbered snippets with source ids from a dodai.rag index; hostile queries stay text."""

from __future__ import annotations

import re

import pytest

from dodai.errors import DodaiError
from dodai.rag.chunk import chunk_documents
from dodai.rag.index import RagIndex
from dodai.tools.base import ToolError
from dodai.tools.redteam import SEARCH, SEARCH_OK, Harness
from dodai.tools.search import search_tool

DOCS = ["The cat sat on the mat and purred.", "Dogs bark at the mailman every morning.",
        "Python's json module decodes JSON documents into dicts.", "The mat was red and the cat was grey.",
        "root:x:0:0 is how /etc/passwd starts; this line is only text in a document."]
TITLES = ["cats", "dogs", "json", "mats", "passwd-doc"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("search-redteam"), n_docs=200)


@pytest.mark.parametrize("case", SEARCH + SEARCH_OK, ids=lambda c: f"{c.expect}-{c.name}")
def test_redteam_case(harness, case):
    out = harness.run(case)
    assert out.passed, out.why


def _bm25_index():
    return RagIndex(chunk_documents(DOCS, 200, 0), None, TITLES)


def test_numbered_snippets_with_source_ids():
    tool = search_tool(_bm25_index())
    out = tool.call({"query": "cat mat", "k": 2})
    lines = out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[1\] (cats|mats) \(doc [03], chunk 0\): .+", lines[0])
    assert {lines[0].split()[1], lines[1].split()[1]} == {"cats", "mats"}
    assert tool.meta["method"] == "bm25"


def test_no_match_and_bounds():
    tool = search_tool(_bm25_index(), max_k=3)
    assert tool.call({"query": "zebra quantum"}) == "no matching documents"
    with pytest.raises(ToolError, match="between 1 and 3"):
        tool.call({"query": "cat", "k": 4})
    with pytest.raises(ToolError, match="type integer"):
        tool.call({"query": "cat", "k": True})


def test_snippets_are_cut():
    tool = search_tool(RagIndex(chunk_documents(["word " * 400], 5000, 0), None, ["long"]), snippet_chars=50)
    out = tool.call({"query": "word", "k": 1})
    assert out.endswith("…") and len(out.split(": ", 1)[1]) == 50


def test_traversal_query_is_only_text():
    out = search_tool(_bm25_index()).call({"query": "../../../../etc/passwd", "k": 1})
    # the document that *mentions* /etc/passwd is found by its words; no file is read
    assert out.startswith("[1] passwd-doc (doc 4")


def test_dense_method_needs_embeddings():
    with pytest.raises(DodaiError, match="dense"):
        search_tool(_bm25_index(), method="hybrid")


class _FakeDense:
    """Stands in for dodai.rag.dense.DenseIndex (R7.1 tests the real MiniLM): every query is closest to chunk 1."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def embed_queries(self, queries):
        import torch

        return torch.zeros(len(queries), 2)

    def scores(self, qv):
        import torch

        s = torch.zeros(qv.shape[0], self.n)
        s[:, 1] = 0.9
        return s


def test_hybrid_when_the_index_has_embeddings():
    pytest.importorskip("torch")
    chunks = chunk_documents(DOCS, 200, 0)
    tool = search_tool(RagIndex(chunks, _FakeDense(len(chunks)), TITLES))
    assert tool.meta["method"] == "hybrid"
    out = tool.call({"query": "zebra", "k": 2}).splitlines()  # no BM25 match: the dense ranking alone
    assert out[0].startswith("[1] dogs (doc 1")
    out = tool.call({"query": "json decodes", "k": 2}).splitlines()  # both rankings fused (RRF)
    assert {out[0].split()[1], out[1].split()[1]} == {"json", "dogs"}
