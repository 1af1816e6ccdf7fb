"""Keep the code references of hand-written docs true: ``docs/*.md`` quote code as a reference line
`` `dodai/path.py:A-B` `` followed (after at most a few lines of prose) by a fenced ``python`` block that must be
exactly lines A..B of that file (compared with the common indentation removed and trailing spaces ignored; a
block that quotes a second place after a line ``...`` is checked up to that line).

:func:`check` lists the references whose lines no longer match; :func:`sync` finds each quoted block in the
current source (the named file first, then every ``dodai/**/*.py``) and rewrites the reference's path and line
numbers, leaving the prose alone. ``python scripts/sync_docs.py`` runs it; ``tests/test_book.py`` runs
:func:`check`.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
_REF = re.compile(r"`(dodai/[\w/]+\.py):(\d+)(?:-(\d+))?`")
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _norm(lines: list[str]) -> list[str]:
    lines = [x.rstrip() for x in lines]
    ind = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return [x[ind:] for x in lines]


def _refs(text: str):
    """(match, code lines) for each reference that is followed by its code block (the next fence, no other
    reference in between)."""
    out = []
    for m in _REF.finditer(text):
        rest = text[m.end():]
        b = _BLOCK.search(rest)
        nxt = _REF.search(rest)
        if b is None or (nxt is not None and nxt.start() < b.start()) or rest[:b.start()].count("\n\n") > 1:
            continue  # a reference in prose ("the same is in ..."), not the caption of the block below
        code = b.group(1).rstrip("\n").splitlines()
        if "..." in [x.strip() for x in code]:  # a block quoting two places: the reference covers the first part
            code = code[:[x.strip() for x in code].index("...")]
        out.append((m, code))
    return out


def check(path: Path) -> list[str]:
    problems = []
    text = path.read_text(encoding="utf-8")
    for m, code in _refs(text):
        f, a = ROOT / m.group(1), int(m.group(2))
        b = int(m.group(3) or a)
        src = f.read_text(encoding="utf-8").splitlines() if f.is_file() else []
        if _norm(src[a - 1:b]) != _norm(code):
            problems.append(f"{path.name}: {m.group(0)} does not hold the quoted block starting {code[0].strip()!r}")
    return problems


def _find(code: list[str], first: Path) -> tuple[Path, int, int] | None:
    want = _norm(code)
    files = [first] + sorted(p for p in (ROOT / "dodai").rglob("*.py") if p != first)
    for f in files:
        if not f.is_file():
            continue
        src = f.read_text(encoding="utf-8").splitlines()
        n = len(want)
        for i in range(len(src) - n + 1):
            if src[i].strip() == want[0].strip() and _norm(src[i:i + n]) == want:
                return f, i + 1, i + n
    return None


def sync(path: Path) -> list[str]:
    """Rewrite stale references in place; returns the blocks that are found nowhere in the source."""
    text = path.read_text(encoding="utf-8")
    missing, edits = [], []
    for m, code in _refs(text):
        hit = _find(code, ROOT / m.group(1))
        if hit is None:
            missing.append(f"{m.group(0)}: {code[0].strip()!r}")
            continue
        f, a, b = hit
        rel = f.relative_to(ROOT).as_posix()
        edits.append((m.start(), m.end(), f"`{rel}:{a}-{b}`" if b > a else f"`{rel}:{a}`"))
    for s, e, new in reversed(edits):
        text = text[:s] + new + text[e:]
    path.write_text(text, encoding="utf-8")
    return missing
