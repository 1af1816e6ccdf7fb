"""Tools a language model can call (roadmap R7.5): each is a :class:`dodai.tools.base.Tool`.

- :mod:`dodai.tools.calculator` — ``calculator``: exact arithmetic on a whitelisted AST, bounded sizes;
- :mod:`dodai.tools.python_sandbox` — ``python``: ``python -I -S`` under an OS sandbox
  (:mod:`dodai.tools.osbox`: bubblewrap namespaces, seccomp, rlimits), with an audit hook for clear refusals;
- :mod:`dodai.tools.sql` — ``sql``: read-only SQLite (``mode=ro``, ``query_only``, an authorizer, step
  bound, row cap), plus :func:`~dodai.tools.sql.demo_database` (the stdlib as a database);
- :mod:`dodai.tools.search` — ``search``: numbered snippets from a :mod:`dodai.rag` index;
- :mod:`dodai.tools.redteam` — the hostile-input suite (attacks and benign calls, expected outcomes).

Importing this package imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

TOOL_NAMES = ("calculator", "python", "sql", "search")


def demo_db_path() -> Path:
    """The demo SQLite database in the cache (built on first use; rebuilt if missing)."""
    import sys

    from dodai.paths import cache_dir
    from dodai.tools.sql import demo_database

    p = cache_dir() / "tools" / f"stdlib-py{sys.version_info[0]}{sys.version_info[1]}.db"
    if not p.is_file():
        demo_database(p)
    return p


def demo_index(dense: bool = False, n_docs: int | None = None):
    """A :class:`~dodai.rag.index.RagIndex` over the built-in python-docs corpus (the first ``n_docs``
    documents, or all), titled by each document's first line; BM25 only unless ``dense`` (MiniLM)."""
    from dodai.data.corpora import corpus_documents
    from dodai.rag.chunk import chunk_documents
    from dodai.rag.index import RagIndex

    docs = corpus_documents("python-docs")[:n_docs]
    titles = [" ".join(d.strip().split("\n", 1)[0].split())[:80] for d in docs]
    if dense:
        return RagIndex.build(docs, titles=titles, dense=True)
    return RagIndex(chunk_documents(docs, 800, 100), None, titles)  # no torch import for BM25 alone


def default_tools(names=TOOL_NAMES, *, db_path=None, index=None, timeout_s: float = 5.0,
                  memory_mb: int = 256) -> dict:
    """``{name: Tool}`` for ``names`` (any of :data:`TOOL_NAMES`, in that order of the argument).

    ``sql`` uses ``db_path`` or the demo database; ``search`` uses ``index`` (a RagIndex) or a BM25
    index over the python-docs corpus, built here (a few seconds); ``python`` gets ``timeout_s`` and
    ``memory_mb``.
    """
    from dodai.errors import DodaiError

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise DodaiError(f"unknown tool(s) {', '.join(map(repr, unknown))}; known: {', '.join(TOOL_NAMES)}")
    out = {}
    for n in names:
        if n == "calculator":
            from dodai.tools.calculator import calculator_tool

            out[n] = calculator_tool()
        elif n == "python":
            from dodai.tools.python_sandbox import python_tool

            out[n] = python_tool(timeout_s, memory_mb)
        elif n == "sql":
            from dodai.tools.sql import sql_tool

            out[n] = sql_tool(db_path if db_path is not None else demo_db_path())
        else:
            from dodai.tools.search import search_tool

            out[n] = search_tool(index if index is not None else demo_index())
    return out
