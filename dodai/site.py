"""The roadmap's learning path as a web page (R9.3): the seed's three steps, each topic linked to the dodai
items that implement it, and step 3's live demos run and embedded.

The seed ends with a path in three steps — 入門 (first steps), 構造理解 (understanding the structure),
実践 (practice). :func:`build_page` writes a self-contained folder: ``index.html`` (the three steps, every
topic with its roadmap items, their status and the command that demonstrates them) and, for step 3, the
reports of the three demos it names — BERT vs GPT (R9.3), RAG step by step (R7.1) and the sampling /
temperature playground (R5.4) — each run now by dodai, its markdown report rendered to HTML with its plots.

No template engine or markdown library: :func:`markdown_to_html` (:mod:`dodai.book.markdown`) handles exactly
what :class:`dodai.report.Report` and the experiments' docstrings write, escaping everything else. The fuller,
offline, bilingual version of this page is the book: ``dodai roadmap book`` (:mod:`dodai.book`).
"""

from __future__ import annotations

import html
import importlib
import shutil
from pathlib import Path

from dodai.errors import DodaiError

STEPS = [
    ("ステップ1：入門", "Step 1: first steps", [
        ("ベクトルと行列", "vectors and matrices", ["R1.2"]),
        ("Attentionの仕組み", "how attention works", ["R4.1", "R9.1"]),
        ("TokenとEmbedding", "tokens and embeddings", ["R4.6", "R1.5"]),
    ]),
    ("ステップ2：構造理解", "Step 2: understanding the structure", [
        ("Transformerのブロック構成", "the Transformer block", ["R4.4", "R4.5", "R6.2"]),
        ("Q/K/V・ポジションエンコーディング", "Q/K/V and positional encoding", ["R4.2", "R4.3"]),
        ("誤差逆伝播・最適化", "backpropagation and optimisation", ["R1.3", "R2.2"]),
    ]),
    ("ステップ3：実践", "Step 3: practice", [
        ("BERTとGPTの違い", "BERT vs GPT", ["R6.1", "R6.2"]),
        ("RAGの動作", "how RAG works", ["R7.1"]),
        ("推論テクニック（sampling, temperature）", "decoding: sampling, temperature", ["R5.4"]),
    ]),
]

DEMOS = [("R9.3", "BERT vs GPT: what each objective sees"), ("R7.1", "RAG step by step"),
         ("R5.4", "The sampling / temperature playground")]

def markdown_to_html(md: str, image_prefix: str = "") -> str:
    """The markdown subset dodai's reports use, as HTML (every piece of text escaped); see
    :mod:`dodai.book.markdown` (tables with escaped bars, Sphinx roles and emphasis rendered, not shown raw)."""
    from dodai.book.markdown import to_html

    return to_html(md, image_prefix)


_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.9rem}
img{max-width:100%}pre{background:#f5f5f5;padding:.5rem;overflow-x:auto}.working{color:#070}.planned{color:#999}
section.demo{border-top:2px solid #ddd;margin-top:2rem}"""


def _run_demo(item_id: str, out: Path, quick: bool) -> Path:
    from dodai.experiments import EXPERIMENTS

    mod, fn = EXPERIMENTS[item_id].split(":")
    getattr(importlib.import_module(mod), fn)(out, quick=quick)
    return out / "report.md"


def build_page(out_dir: str | Path, quick: bool = False, demos: list[str] | None = None) -> Path:
    """Write ``out_dir/index.html`` (+ ``demos/<ID>/`` with each demo's report and plots); returns its path."""
    from dodai import roadmap

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DodaiError(f"{out} exists and is not a folder")
    if (out / "index.html").exists() and not (out / ".dodai-page").exists():
        raise DodaiError(f"{out} holds an index.html that dodai did not write; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / ".dodai-page").write_text("written by `dodai roadmap page`\n", encoding="utf-8")
    items = {it.id: it for it in roadmap.ITEMS}
    wanted = [d for d in DEMOS if demos is None or d[0] in demos]
    n_ok = sum(it.status == roadmap.WORKING for it in roadmap.ITEMS)
    parts = [f"<h1>dodai (土台): the LLM roadmap in three steps</h1><p>{n_ok} of {len(roadmap.ITEMS)} roadmap "
             "items work today. Each topic below links the roadmap items that implement it; <code>dodai roadmap "
             "run ID</code> reruns any experiment on your machine.</p>"]
    for ja, en, topics in STEPS:
        parts.append(f"<h2>{html.escape(ja)} — {html.escape(en)}</h2><ul>")
        for tja, ten, ids in topics:
            rows = "".join(f'<li><span class="{items[i].status}">{items[i].status}</span> '
                           f"<strong>{i}</strong> {html.escape(items[i].en)} — <code>{html.escape(items[i].command)}"
                           "</code></li>" for i in ids)
            parts.append(f"<li>{html.escape(tja)} ({html.escape(ten)})<ul>{rows}</ul></li>")
        parts.append("</ul>")
    parts.append("<h2>Live demos of step 3</h2>")
    results = {}
    for item_id, title in wanted:
        folder = out / "demos" / item_id
        if folder.exists():
            shutil.rmtree(folder)
        report = _run_demo(item_id, folder, quick)
        results[item_id] = report
        body = markdown_to_html(report.read_text(encoding="utf-8"), image_prefix=f"demos/{item_id}/")
        parts.append(f'<section class="demo"><h2>{html.escape(title)} ({item_id})</h2>{body}</section>')
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dodai roadmap</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    from dodai.io import atomic_write_text

    index = out / "index.html"
    atomic_write_text(index, page)
    return index
