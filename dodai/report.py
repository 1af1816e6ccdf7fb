"""Run-folder reports: markdown + JSON + PNG, written atomically into one folder per run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from dodai.io import atomic_write_json, atomic_write_text


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


class Report:
    """Collects a run's sections, tables, images and results, then writes them into ``out_dir``.

    >>> rep = Report(out_dir, "R2.1 Perceptron")
    >>> rep.text("Rosenblatt's rule ...")
    >>> rep.table([{"n": 1, "acc": 0.5}])
    >>> rep.image(plot_path, "decision boundary")
    >>> rep.results["accuracy"] = 0.99
    >>> rep.write()          # report.md + results.json
    """

    def __init__(self, out_dir: str | Path, title: str):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.parts: list[str] = []
        self.results: dict = {}
        self.t0 = time.time()

    def text(self, md: str) -> None:
        self.parts.append(md.rstrip() + "\n")

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append("#" * level + " " + text + "\n")

    def table(self, rows: list[dict], columns: list[str] | None = None) -> None:
        self.parts.append(markdown_table(rows, columns))

    def image(self, path: str | Path, caption: str = "") -> None:
        path = Path(path)
        rel = path.name if path.parent.resolve() == self.out.resolve() else str(path)
        self.parts.append(f"![{caption}]({rel})\n")

    def code(self, text: str, lang: str = "") -> None:
        self.parts.append(f"```{lang}\n{text.rstrip()}\n```\n")

    def write(self) -> Path:
        self.results.setdefault("elapsed_s", round(time.time() - self.t0, 3))
        md = f"# {self.title}\n\n" + "\n".join(self.parts)
        atomic_write_text(self.out / "report.md", md)
        atomic_write_json(self.out / "results.json", json.loads(json.dumps(self.results, default=str)))
        return self.out / "report.md"
