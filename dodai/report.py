"""Run-folder reports: markdown + JSON + PNG, written atomically into one folder per run.

Every report carries its provenance: ``results.json["meta"]`` (and a closing section of ``report.md``) names the
command, the date, the machine (CPU model, logical CPUs, torch threads, load average when the run started and
ended), wall and CPU time, and the versions of Python, torch, NumPy and dodai (with the git commit when run from a
checkout). The machines these runs happen on are often shared, so the load average is part of every figure.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from dodai.io import atomic_write_json, atomic_write_text

# Filled by `dodai roadmap run` (item, mode, command) so a report knows how it was asked for.
CONTEXT: dict = {}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict:
    import dodai

    v = {"python": platform.python_version(), "dodai": dodai.__version__}
    for name in ("torch", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            v[name] = getattr(mod, "__version__", "?")
    return v


def provenance(t0: float, cpu0: float, load0: list[float] | None) -> dict:
    """The ``meta`` block: how, when and on what a run was made.

    Wall and CPU time cover the whole experiment when ``dodai roadmap run`` started the clock (``CONTEXT["t0"]``);
    otherwise only the life of the :class:`Report` (``timing`` says which), which may begin after the work."""
    torch = sys.modules.get("torch")
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    whole = "t0" in CONTEXT
    t0, cpu0 = (CONTEXT["t0"], CONTEXT["cpu0"]) if whole else (t0, cpu0)
    if whole:
        load0 = CONTEXT.get("load0", load0)
    argv = list(sys.argv) if sys.argv and sys.argv[0] else []
    if argv:
        argv[0] = "dodai" if Path(argv[0]).name in ("__main__.py", "dodai") else Path(argv[0]).name
    meta = {
        "command": CONTEXT.get("command") or " ".join(argv),
        "mode": CONTEXT.get("mode"),
        "item": CONTEXT.get("item"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "load_average_start": load0,
        "load_average_end": _loadavg(),
        "wall_s": round(time.time() - t0, 2),
        "cpu_s": round(_cpu_seconds() - cpu0, 2),
        "timing": "whole experiment" if whole else "report object only (the work may have started earlier)",
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": _git_commit(),
    }
    return {k: v for k, v in meta.items() if v is not None}


def provenance_markdown(meta: dict) -> str:
    v = meta.get("versions", {})
    lines = ["## Provenance", "",
             f"- command: `{meta.get('command', '?')}`" + (f" ({meta['mode']} mode)" if meta.get("mode") else ""),
             f"- date: {meta.get('date', '?')}",
             f"- machine: {meta.get('cpu_model', '?')}, {meta.get('usable_cpus', '?')} usable CPUs"
             + (f", {meta['torch_threads']} torch threads" if meta.get("torch_threads") else ""),
             f"- load average (1/5/15 min) at start {meta.get('load_average_start')}, at end "
             f"{meta.get('load_average_end')}",
             f"- wall {meta.get('wall_s', '?')} s, CPU {meta.get('cpu_s', '?')} s",
             "- versions: " + ", ".join(f"{k} {x}" for k, x in v.items())
             + (f", commit {meta['git_commit']}" if meta.get("git_commit") else "")]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def _cell(v) -> str:
    """A table cell: a literal ``|`` (e.g. in "max |Δ|") is escaped so it cannot split the cell; newlines become
    spaces."""
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(rows[0].keys())
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
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
        self._cpu0 = _cpu_seconds()
        self._load0 = _loadavg()

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
        self.results["meta"] = provenance(self.t0, self._cpu0, self._load0)
        md = f"# {self.title}\n\n" + "\n".join(self.parts) + "\n" + provenance_markdown(self.results["meta"])
        atomic_write_text(self.out / "report.md", md)
        atomic_write_json(self.out / "results.json", json.loads(json.dumps(self.results, default=str)))
        return self.out / "report.md"
