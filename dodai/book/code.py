"""Code excerpts for the book, located in the source when the book is built, so their line numbers stay true.

A reference is ``"dodai/nn/attention.py::CausalSelfAttention.forward"`` (a function, class or method by its
qualified name, found with :mod:`ast`), optionally narrowed to the lines from the first one containing
``start`` to the first one after it containing ``end``: ``"...::forward[q, k, v = @@return y]"`` (``@@``
separates the two patterns; the end pattern may be empty for "to the end of the definition"). A reference
that no longer matches the source is an error, so a renamed function cannot leave the book quoting stale
lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from dodai.errors import DodaiError

ROOT = Path(__file__).resolve().parent.parent.parent  # the folder holding dodai/


@dataclass(frozen=True)
class Excerpt:
    path: str  # relative to the repository root, e.g. dodai/nn/attention.py
    qualname: str
    start: int  # 1-based, inclusive
    end: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.start}-{self.end}"


def _find(tree: ast.AST, qualname: str) -> ast.AST | None:
    node = tree
    for part in qualname.split("."):
        found = None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == part:
                found = child
                break
        if found is None:
            return None
        node = found
    return node


def excerpt(ref: str, root: Path = ROOT) -> Excerpt:
    path, sep, rest = ref.partition("::")
    if not sep:
        raise DodaiError(f"code reference {ref!r} must be 'path::Qualified.name'")
    start_pat = end_pat = None
    if rest.endswith("]") and "[" in rest:
        rest, _, pats = rest[:-1].partition("[")
        start_pat, _, end_pat = pats.partition("@@")
    f = root / path
    try:
        src = f.read_text(encoding="utf-8")
    except OSError as e:
        raise DodaiError(f"code reference {ref!r}: cannot read {path} ({e.strerror})") from None
    node = _find(ast.parse(src), rest)
    if node is None:
        raise DodaiError(f"code reference {ref!r}: no definition {rest!r} in {path}")
    lines = src.splitlines()
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    last = node.end_lineno
    if start_pat:
        hit = [n for n in range(first, last + 1) if start_pat in lines[n - 1]]
        if not hit:
            raise DodaiError(f"code reference {ref!r}: {start_pat!r} not found in {rest}")
        first = hit[0]
        if end_pat:
            hit = [n for n in range(first, last + 1) if end_pat in lines[n - 1]]
            if not hit:
                raise DodaiError(f"code reference {ref!r}: {end_pat!r} not found after {start_pat!r}")
            last = hit[0]
    body = lines[first - 1:last]
    indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
    return Excerpt(path, rest, first, last, "\n".join(x[indent:] for x in body))
