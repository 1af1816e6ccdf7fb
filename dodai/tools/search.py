"""A ``search`` tool: numbered snippets from a :class:`dodai.rag.index.RagIndex` (R7.1).

The query is only ever *text to rank by*: it goes to BM25 (and to the MiniLM encoder when the index
has dense embeddings, then the two rankings are fused by reciprocal rank — ``method="hybrid"``), never
to the file system, so a query like ``../../etc/passwd`` is just the words ``etc`` and ``passwd``.
The index is in memory; the tool reads no file per call.

Output, one hit per line: ``[n] <title> (doc <source id>, chunk <i>): <snippet>``, with the snippet's
whitespace collapsed and cut to ``snippet_chars``. ``k`` is bounded by ``max_k``; the query by
:data:`MAX_QUERY_CHARS`.
"""

from __future__ import annotations

from dodai.errors import DodaiError
from dodai.tools.base import Tool, ToolError

MAX_QUERY_CHARS = 500


def _snippet(text: str, n: int) -> str:
    s = " ".join(text.split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def format_hits(index, hits, snippet_chars: int = 300) -> str:
    lines = []
    for n, h in enumerate(hits, start=1):
        c = h.chunk
        lines.append(f"[{n}] {index.title(c.source)} (doc {c.source}, chunk {c.index}): "
                     f"{_snippet(c.text, snippet_chars)}")
    return "\n".join(lines)


def search_tool(index, method: str | None = None, max_k: int = 10, default_k: int = 3,
                snippet_chars: int = 300) -> Tool:
    """The ``search`` tool over ``index``: ``{"query": "...", "k": 3}`` → numbered snippets with source ids.

    ``method`` defaults to ``"hybrid"`` when the index has dense embeddings, else ``"bm25"``.
    """
    if method is None:
        method = "bm25" if getattr(index, "dense", None) is None else "hybrid"
    if method != "bm25" and getattr(index, "dense", None) is None:
        raise DodaiError(f"search method {method!r} needs an index with dense embeddings")

    def fn(args: dict) -> str:
        query, k = args["query"], args.get("k", default_k)
        if not query.strip():
            raise ToolError("search: empty query")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolError(f"search: query longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= k <= max_k:
            raise ToolError(f"search: k must be between 1 and {max_k}, got {k}")
        try:
            hits = index.search(query, k=k, method=method)
        except DodaiError as e:
            raise ToolError(f"search: {e}") from None
        if not hits:
            return "no matching documents"
        return format_hits(index, hits, snippet_chars)

    return Tool(
        name="search",
        description=("Search the document collection; returns the k most relevant passages, numbered, "
                     "with their source ids. Cite passages as [n]."),
        parameters={"type": "object",
                    "properties": {"query": {"type": "string", "description": "what to look for"},
                                   "k": {"type": "integer", "description": f"how many passages (1-{max_k}, "
                                                                          f"default {default_k})"}},
                    "required": ["query"]},
        fn=fn, max_output_chars=max_k * (snippet_chars + 120),
        meta={"method": method},
    )
