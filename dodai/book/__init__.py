# ruff: noqa: E501  (Japanese prose: ruff counts full-width characters double, so lines are wrapped by eye)
"""The roadmap as a bilingual book (R9.1, R9.3): ``dodai roadmap book --out DIR`` writes a static site.

One page per roadmap item in Japanese (``ja/R4.1.html``) and English (``en/R4.1.html``): what the item is and why
it matters, its equations, the code lines that compute them (located in the source at build time,
:mod:`dodai.book.code`, so file and line numbers stay true), the item's status with its claims and measured values
(:func:`dodai.roadmap.evaluate`), the committed evidence — figures and the report of the run, with its command,
date, machine and load — and what to try next. The tables of contents follow the seed's three steps
(入門 → 構造理解 → 実践) and its deep-dive order.

Offline by construction: no CDN, no network. Equations are TeX rendered in the browser by a vendored copy of
KaTeX (MIT licence, ``assets/katex/``); Japanese text uses a vendored subset of Noto Sans CJK JP (SIL OFL 1.1,
``assets/fonts/``) so it renders on machines without CJK fonts. The book is built from committed evidence (no
experiment runs), so it takes seconds.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from dodai.book import content
from dodai.book.code import excerpt
from dodai.book.markdown import inline
from dodai.book.markdown import to_html as markdown_to_html
from dodai.errors import DodaiError

ASSETS = Path(__file__).resolve().parent / "assets"
MARKER = ".dodai-book"
LANGS = ("ja", "en")

UI = {
    "ja": {"title": "dodai（土台）: LLM ロードマップの本", "toc": "目次", "path": "おすすめ深堀り順",
           "what": "これは何か", "why": "なぜ大切か", "eq": "式", "code": "式を計算するコード", "claims": "主張と測定値",
           "evidence": "証拠（コミット済みの実行結果）", "next": "次に試すこと", "report": "実行報告書（英語）",
           "status": "状態", "kind": {"finding": "発見", "demonstration": "実演（構成上成り立つ）"},
           "holds": "成立", "fails": "不成立", "measured": "測定値", "mode": {"full": "本実行", "quick": "quick モード"},
           "no_evidence": "この項目にはまだコミット済みの証拠がありません。", "other": "English",
           "prev": "← 前", "next_page": "次 →", "home": "表紙", "all": "全項目",
           "statuses": {"working": "動作確認済み", "failing": "主張が不成立", "unverified": "未検証",
                        "planned": "計画中"},
           "intro": "シードのロードマップ（数理 → モデル構造 → 学習技術 → 応用）の各項目を、式・コード・実行結果で学ぶ本です。"
                    "状態は手書きではなく、コミット済みの証拠と主張の検査から決まります。",
           "provenance": "実行情報", "machine": "マシン", "load": "負荷平均（開始時）", "command": "コマンド",
           "date": "日時", "wall": "経過時間"},
    "en": {"title": "dodai (土台): the LLM roadmap as a book", "toc": "Contents", "path": "Recommended deep-dive order",
           "what": "What it is", "why": "Why it matters", "eq": "Equations", "code": "The code that computes them",
           "claims": "Claims and measured values", "evidence": "Evidence (the committed run)",
           "next": "What to try next", "report": "The run's report", "status": "Status",
           "kind": {"finding": "finding", "demonstration": "demonstration (holds by construction)"},
           "holds": "holds", "fails": "does not hold", "measured": "measured",
           "mode": {"full": "full run", "quick": "quick mode"},
           "no_evidence": "No evidence is committed for this item yet.", "other": "日本語",
           "prev": "← previous", "next_page": "next →", "home": "cover", "all": "All items",
           "statuses": {"working": "working", "failing": "a claim does not hold", "unverified": "unverified",
                        "planned": "planned"},
           "intro": "Each item of the seed roadmap (maths → model structure → training → applications) with its "
                    "equations, the code that computes them and the committed results of running it. Status is not "
                    "typed by hand: it is derived from the committed evidence and the claims checked on it.",
           "provenance": "Provenance", "machine": "machine", "load": "load average at start", "command": "command",
           "date": "date", "wall": "wall time"},
}


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _order() -> list[str]:
    """Every item once, in the three steps' order, then any item no step names."""
    from dodai import roadmap

    seen: list[str] = []
    for _, _, topics in content.STEPS:
        for _, _, ids in topics:
            seen += [i for i in ids if i not in seen]
    return seen + [it.id for it in roadmap.ITEMS if it.id not in seen]


def _page(lang: str, title: str, body: str, depth: int, other_href: str | None) -> str:
    up = "../" * depth
    ui = UI[lang]
    switch = f'<a class="lang" href="{_e(other_href)}">{ui["other"]}</a>' if other_href else ""
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f'<link rel="stylesheet" href="{up}assets/katex/katex.min.css">'
            f'<link rel="stylesheet" href="{up}assets/book.css"></head><body>'
            f'<nav class="top"><a href="{up}index.html">{ui["home"]}</a> · <a href="{up}{lang}/index.html">'
            f'{ui["toc"]}</a> {switch}</nav><main>{body}</main>'
            f'<script src="{up}assets/katex/katex.min.js"></script><script src="{up}assets/book.js"></script>'
            "</body></html>\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _claims_table(lang: str, ev: dict) -> str:
    ui = UI[lang]
    if not ev["claims"]:
        return ""
    rows = []
    for c in ev["claims"]:
        text = c["ja"] if lang == "ja" else c["claim"]
        mark = f'<span class="ok">✔ {ui["holds"]}</span>' if c["holds"] else f'<span class="bad">✘ {ui["fails"]}</span>'
        measured = _fmt(c["measured"]) + (f" ({c['error']})" if c.get("error") else "")
        rows.append(f"<tr><td>{_e(text)}</td><td>{_e(ui['kind'][c['kind']])}</td><td>{mark}</td>"
                    f"<td class=\"measured\">{_e(measured)}</td></tr>")
    return (f'<table class="claims"><thead><tr><th>{ui["claims"]}</th><th></th><th>{ui["status"]}</th>'
            f'<th>{ui["measured"]}</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _provenance(lang: str, res: dict) -> str:
    from dodai.roadmap import evidence_meta

    ui = UI[lang]
    m = evidence_meta(res)
    parts = [f"{ui['command']}: <code>{_e(m.get('command', '?'))}</code> ({_e(ui['mode'].get(m.get('mode'), '?'))})",
             f"{ui['date']}: {_e(m.get('date', '?'))}",
             f"{ui['machine']}: {_e(m.get('cpu_model', '?'))}"
             + (f", {_e(m['usable_cpus'])} CPUs" if m.get("usable_cpus") else ""),
             f"{ui['load']}: {_e(m.get('load_average_start', '?'))}",
             f"{ui['wall']}: {_e(m.get('process_wall_s') or m.get('wall_s', '?'))} s"]
    return f'<p class="prov"><strong>{ui["provenance"]}</strong> — ' + " · ".join(parts) + "</p>"


def _item_page(lang: str, item, ev: dict, order: list[str], figures: dict[str, list[str]]) -> str:
    from dodai import roadmap

    ui = UI[lang]
    page = content.PAGES.get(item.id)
    if page is None:
        raise DodaiError(f"the book has no page text for {item.id} (dodai/book/content.py)")
    i = order.index(item.id)
    prev_id, next_id = (order[i - 1] if i else None), (order[i + 1] if i + 1 < len(order) else None)
    status = ev["status"]
    ev_info = ev["evidence"]
    label = item.ja if lang == "ja" else item.en
    sub = item.en if lang == "ja" else item.ja
    out = [f'<h1><span class="id">{item.id}</span> {_e(label)}</h1><p class="sub">{_e(sub)} · '
           f"<code>{_e(item.module)}</code> · <code>{_e(item.command)}</code></p>",
           f'<p class="status {status}">{ui["status"]}: <strong>{_e(ui["statuses"][status])}</strong>'
           + (f' — {_e(ui["mode"].get(ev_info.get("mode"), "?"))}, <a href="../{_e(ev_info["path"])}/report.html">'
              f'{_e(ev_info["path"])}</a>' if ev_info else "")
           + (f' <span class="reasons">({_e("; ".join(ev["reasons"]))})</span>' if ev["reasons"] else "") + "</p>",
           f'<h2>{ui["what"]}</h2><p>{inline(page["what"][lang])}</p>',
           f'<h2>{ui["why"]}</h2><p>{inline(page["why"][lang])}</p>',
           f'<h2>{ui["eq"]}</h2>' + "".join(f'<div class="math">{_e(t)}</div>' for t in page["eq"]),
           f'<h2>{ui["code"]}</h2>']
    for ref in page["code"]:
        ex = excerpt(ref)
        out.append(f'<figure class="code"><figcaption><code>{_e(ex.where)}</code> — <code>{_e(ex.qualname)}'
                   f"</code></figcaption><pre><code>{_e(ex.text)}</code></pre></figure>")
    out.append(f'<h2>{ui["claims"]}</h2>' + (_claims_table(lang, ev) or f"<p>{ui['no_evidence']}</p>"))
    out.append(f'<h2>{ui["evidence"]}</h2>')
    if ev_info:
        res = roadmap.load_evidence(item.id) or {}
        out.append(_provenance(lang, res))
        for fig in figures.get(item.id, []):
            out.append(f'<figure><img src="../{_e(fig)}" alt="{_e(Path(fig).stem)}"><figcaption>{_e(fig)}'
                       "</figcaption></figure>")
        out.append(f'<p><a href="../{_e(ev_info["path"])}/report.html">{ui["report"]}</a> · '
                   f'<a href="../{_e(ev_info["results"])}">results.json</a></p>')
    else:
        out.append(f"<p>{ui['no_evidence']}</p>")
    out.append(f'<h2>{ui["next"]}</h2><p>{inline(page["next"][lang])}</p>')
    nav = []
    if prev_id:
        nav.append(f'<a href="{prev_id}.html">{ui["prev"]} {prev_id}</a>')
    if next_id:
        nav.append(f'<a href="{next_id}.html">{next_id} {ui["next_page"]}</a>')
    out.append(f'<nav class="pager">{" · ".join(nav)}</nav>')
    other = "en" if lang == "ja" else "ja"
    return _page(lang, f"{item.id} {label}", "\n".join(out), 1, f"../{other}/{item.id}.html")


def _toc_page(lang: str, items: dict, evals: dict) -> str:
    ui = UI[lang]
    out = [f"<h1>{_e(ui['title'])}</h1><p>{_e(ui['intro'])}</p>"]
    n_ok = sum(e["status"] == "working" for e in evals.values())
    n_full = sum(e["status"] == "working" and (e["evidence"] or {}).get("mode") == "full" for e in evals.values())
    out.append(f'<p class="summary">{ui["statuses"]["working"]}: {n_ok} / {len(evals)}'
               f' ({ui["mode"]["full"]}: {n_full})</p>')

    def li(i):
        it, e = items[i], evals[i]
        label = it.ja if lang == "ja" else it.en
        return (f'<li><a href="{i}.html"><span class="id">{i}</span> {_e(label)}</a> '
                f'<span class="badge {e["status"]}">{_e(ui["statuses"][e["status"]])}</span></li>')

    out.append(f"<h2>{ui['toc']}</h2>")
    for ja, en, topics in content.STEPS:
        out.append(f"<h3>{_e(ja if lang == 'ja' else en)}</h3><ul class=\"toc\">")
        for tja, ten, ids in topics:
            out.append(f"<li>{_e(tja if lang == 'ja' else ten)}<ul>" + "".join(li(i) for i in ids) + "</ul></li>")
        out.append("</ul>")
    out.append(f"<h2>{ui['path']}</h2><ol class=\"path\">")
    for ja, en, ids in content.DEEP_DIVE:
        out.append(f"<li>{_e(ja if lang == 'ja' else en)}<ul>" + "".join(li(i) for i in ids) + "</ul></li>")
    out.append("</ol>")
    out.append(f"<h2>{ui['all']}</h2><ul class=\"all\">" + "".join(li(i) for i in items) + "</ul>")
    other = "en" if lang == "ja" else "ja"
    return _page(lang, ui["title"], "\n".join(out), 1, f"../{other}/index.html")


def _cover(evals: dict) -> str:
    body = [f"<h1>{_e(UI['ja']['title'])}<br><small>{_e(UI['en']['title'])}</small></h1>",
            f"<p>{_e(UI['ja']['intro'])}</p><p>{_e(UI['en']['intro'])}</p>",
            '<p class="langs"><a href="ja/index.html">日本語で読む</a> · <a href="en/index.html">Read in English</a></p>']
    return _page("ja", UI["ja"]["title"], "\n".join(body), 0, None)


def build_book(out_dir: str | Path) -> Path:
    """Write the book into ``out_dir`` (a new folder, or one this function wrote before); returns its index."""
    from dodai import roadmap
    from dodai.io import atomic_write_text

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DodaiError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DodaiError(f"{out} is not empty and was not written by `dodai roadmap book`; choose another --out")
    items = {i: roadmap.get(i) for i in _order()}
    evals = {i: roadmap.evaluate(i) for i in items}
    for sub in ("assets", "evidence", "ja", "en"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `dodai roadmap book`\n", encoding="utf-8")
    shutil.copytree(ASSETS, out / "assets")

    # the committed evidence: figures, results.json and each report rendered to HTML
    figures: dict[str, list[str]] = {}
    done: set[str] = set()
    for i, e in evals.items():
        if not e["evidence"]:
            continue
        rel = e["evidence"]["path"]
        src, dst = roadmap.evidence_path(i), out / rel
        figures[i] = [f"{rel}/{Path(p).name}" for p in e["evidence"]["plots"]]
        if rel in done:
            continue
        done.add(rel)
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.suffix in (".png", ".svg", ".json") and f.is_file():
                shutil.copy2(f, dst / f.name)
        md = (src / "report.md").read_text(encoding="utf-8") if (src / "report.md").is_file() else ""
        body = (f'<p><a href="../../en/{i}.html">{i} (English)</a> · <a href="../../ja/{i}.html">{i} (日本語)</a> · '
                f'<a href="results.json">results.json</a></p>' + markdown_to_html(md))
        atomic_write_text(dst / "report.html", _page("en", f"{rel} report", body, 2, None))

    order = list(items)
    for lang in LANGS:
        (out / lang).mkdir(exist_ok=True)
        atomic_write_text(out / lang / "index.html", _toc_page(lang, items, evals))
        for i, it in items.items():
            atomic_write_text(out / lang / f"{i}.html", _item_page(lang, it, evals[i], order, figures))
    atomic_write_text(out / "index.html", _cover(evals))
    atomic_write_text(out / "status.json", json.dumps({i: {"status": e["status"], "evidence": e["evidence"],
                                                           "claims": e["claims"]} for i, e in evals.items()},
                                                      ensure_ascii=False, indent=1) + "\n")
    return out / "index.html"
