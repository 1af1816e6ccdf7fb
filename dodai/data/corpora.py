"""Corpora: named text collections that dodai can train on.

The built-in corpus ``python-docs`` needs no download: it is the English prose that every Python
installation already ships, namely

- the docstrings of the standard library's modules, classes and functions, read from the ``.py``
  sources with :mod:`ast` (nothing is imported, so no module runs), and
- ``pydoc_data.topics.topics``: the language reference topics ``help()`` shows (read as a Python
  literal from its source file with ``ast.literal_eval``, again without importing it).

Extraction is deterministic: files are walked in sorted order, topics in sorted key order, and the
same Python version gives the same bytes. Cleaning (documented choices):

- docstrings are taken with ``ast.get_docstring(clean=True)`` (common indentation removed);
- doctest blocks (a ``>>>`` line and the lines that follow it up to a blank line) are dropped: they
  are code and expected output, not prose;
- trailing spaces are stripped, runs of 3+ newlines become a blank line, tabs become spaces;
- documents shorter than ``MIN_CHARS`` characters are dropped ("Return self." teaches little);
- exact repeats are dropped (many subclasses repeat their parent's docstring), keeping the first.

Documents are joined with ``DOC_SEP`` (a blank line). The text is cached at
``cache_dir()/corpora/python-docs-<major>.<minor>.txt`` (atomic write), and the document list beside
it as ``.docs.json`` (the by-document train/val split needs document boundaries).

A small registry (:data:`CORPORA`) names the corpora; ``local`` ones are built on the machine,
others (added by a later issue: austen, ja-manpages, enwiki-sample) are pulled.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dodai.errors import DodaiError
from dodai.io import atomic_write_text
from dodai.paths import cache_dir

DOC_SEP = "\n\n"
MIN_CHARS = 40

# Parts of the stdlib tree whose docstrings are not prose worth training on, or not stdlib at all.
SKIP_DIRS = {
    "test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages", "__pycache__",
    "lib2to3", "turtledemo", "ensurepip", "pydoc_data", "venv",
}


def _skip(rel: Path) -> bool:
    for part in rel.parts[:-1]:
        if part in SKIP_DIRS or part.startswith("config-") or part.startswith("test_"):
            return True
    return rel.name.startswith("test_") or rel.name == "__main__.py"


_DOCTEST = re.compile(r"^[ \t]*>>>")


def clean_doc(doc: str) -> str:
    """Clean one docstring or topic: drop doctest blocks, tidy whitespace. Returns '' if nothing is left."""
    out: list[str] = []
    in_doctest = False
    for line in doc.replace("\r\n", "\n").replace("\t", "    ").split("\n"):
        if _DOCTEST.match(line):
            in_doctest = True
            continue
        if in_doctest:
            if line.strip():
                continue  # the doctest's expected output or continuation lines
            in_doctest = False
        out.append(line.rstrip())
    text = "\n".join(out).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def _docstrings(source: str) -> Iterator[str]:
    """Module, class and function docstrings of one source file, in source order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    nodes = [tree] + [
        n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    # ast.walk is breadth-first; sort by position so the text reads in file order.
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    for n in nodes:
        doc = ast.get_docstring(n, clean=True)
        if doc:
            yield doc


def _pydoc_topics(stdlib: Path) -> dict[str, str]:
    path = stdlib / "pydoc_data" / "topics.py"
    if not path.is_file():
        return {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def python_docs_documents(stdlib: str | Path | None = None) -> list[str]:
    """The cleaned, deduplicated documents of the ``python-docs`` corpus, in a fixed order."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DodaiError(f"python-docs: the standard library folder {root} is missing")
    docs: list[str] = []
    seen: set[str] = set()

    def add(raw: str) -> None:
        d = clean_doc(raw)
        if len(d) >= MIN_CHARS and d not in seen:
            seen.add(d)
            docs.append(d)

    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        if _skip(path.relative_to(root)):
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for doc in _docstrings(source):
            add(doc)
    topics = _pydoc_topics(root)
    for key in sorted(topics):
        if isinstance(topics[key], str):
            add(topics[key])
    return docs


def build_python_docs(stdlib: str | Path | None = None) -> str:
    return DOC_SEP.join(python_docs_documents(stdlib)) + "\n"


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    # () -> the corpus text; for local corpora this builds it, for remote ones it pulls it.
    build: Callable[[], str]
    local: bool = True

    def path(self) -> Path:
        ver = f"-{sys.version_info.major}.{sys.version_info.minor}" if self.name == "python-docs" else ""
        return cache_dir() / "corpora" / f"{self.name}{ver}.txt"


CORPORA: dict[str, Corpus] = {
    "python-docs": Corpus(
        "python-docs",
        "English prose shipped with Python: stdlib docstrings + pydoc topics (~2 MB, no download)",
        build_python_docs,
    ),
}
# Pulled corpora (`dodai data pull NAME`, dodai/data/pull.py): read from the cache once pulled.
from dodai.data.pull import PULLABLE, not_pulled  # noqa: E402

CORPORA.update({n: Corpus(n, d, lambda n=n: not_pulled(n), local=False) for n, d in PULLABLE.items()})

DEFAULT_CORPUS = "python-docs"


def list_corpora() -> list[Corpus]:
    return list(CORPORA.values())


def corpus_path(name: str = DEFAULT_CORPUS, rebuild: bool = False) -> Path:
    """Path of the cached corpus text, building it (atomically) on first use."""
    if name not in CORPORA:
        raise DodaiError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    c = CORPORA[name]
    p = c.path()
    if rebuild or not p.is_file():
        if name == "python-docs":
            docs = corpus_documents(name, rebuild=True)
            atomic_write_text(p, DOC_SEP.join(docs) + "\n")
        else:
            atomic_write_text(p, c.build())
    return p


def corpus_documents(name: str = DEFAULT_CORPUS, rebuild: bool = False) -> list[str]:
    """The corpus as a list of documents (cached beside the text as JSON, since documents hold blank lines)."""
    if name not in CORPORA:
        raise DodaiError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    p = CORPORA[name].path().with_suffix(".docs.json")
    if not rebuild and p.is_file():
        try:
            docs = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(docs, list) and all(isinstance(d, str) for d in docs):
                return docs
        except ValueError:
            pass  # a damaged cache is rebuilt
    if name == "python-docs":
        docs = python_docs_documents()
    else:
        docs = [d for d in corpus_path(name).read_text(encoding="utf-8").split(DOC_SEP) if d.strip()]
    atomic_write_text(p, json.dumps(docs, ensure_ascii=False))
    return docs


def load_corpus(name: str = DEFAULT_CORPUS) -> str:
    return corpus_path(name).read_text(encoding="utf-8")
