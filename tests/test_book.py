"""`dodai roadmap book`: 40 items x 2 languages, code excerpts that are the source's own lines, offline assets,
and a real browser (Playwright driving Debian's chromium): every page loads with no failed request, no broken
link or image, maths rendered by the vendored KaTeX, Japanese drawn with real glyphs; screenshots of three pages."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from dodai import roadmap
from dodai.book import build_book, content
from dodai.book.code import ROOT, excerpt
from dodai.errors import DodaiError

IDS = [it.id for it in roadmap.ITEMS]


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book") / "site"
    build_book(out)
    return out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if (tag, k) in (("a", "href"), ("img", "src"), ("link", "href"), ("script", "src")) and v:
                self.refs.append((tag, v))


def _pages(book: Path) -> list[Path]:
    return sorted(book.rglob("*.html"))


def test_every_item_has_a_page_in_both_languages(book):
    assert len(IDS) == 40 and set(content.PAGES) == set(IDS)
    for lang in ("ja", "en"):
        for i in IDS:
            page = (book / lang / f"{i}.html").read_text(encoding="utf-8")
            other = "en" if lang == "ja" else "ja"
            assert f'href="../{other}/{i}.html"' in page  # the same item in the other language
            assert f'<html lang="{lang}">' in page
    ja = (book / "ja" / "R4.1.html").read_text(encoding="utf-8")
    assert "これは何か" in ja and "式を計算するコード" in ja and 'class="math"' in ja
    toc = (book / "ja" / "index.html").read_text(encoding="utf-8")
    for step in ("ステップ1：入門", "ステップ2：構造理解", "ステップ3：実践", "おすすめ深堀り順"):
        assert step in toc
    assert all(f'href="{i}.html"' in toc for i in IDS)


def test_every_local_link_and_image_exists_and_nothing_points_off_line(book):
    for page in _pages(book):
        p = _Links()
        p.feed(page.read_text(encoding="utf-8"))
        for tag, ref in p.refs:
            assert not re.match(r"^[a-z]+:", ref) and not ref.startswith("//"), (page, ref)  # no CDN, no http
            target = (page.parent / urldefrag(ref)[0]).resolve()
            assert target.is_file(), f"{page.relative_to(book)}: broken {tag} {ref}"
    css = (book / "assets" / "katex" / "katex.min.css").read_text()
    for font in re.findall(r"url\(([^)]+)\)", css):  # every font KaTeX's stylesheet asks for is shipped
        assert (book / "assets" / "katex" / font).is_file(), font


def test_code_excerpts_are_the_sources_own_lines():
    n = 0
    for page in content.PAGES.values():
        for ref in page["code"]:
            ex = excerpt(ref)
            lines = (ROOT / ex.path).read_text(encoding="utf-8").splitlines()[ex.start - 1:ex.end]
            indent = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
            assert ex.text == "\n".join(x[indent:] for x in lines)
            assert ex.end >= ex.start
            n += 1
    assert n >= 40
    with pytest.raises(DodaiError, match="no definition"):
        excerpt("dodai/nn/attention.py::no_such_function")
    with pytest.raises(DodaiError, match="not found"):
        excerpt("dodai/nn/attention.py::attention_reference[this text is not there@@]")


def test_status_on_pages_is_the_derived_status(book):
    for i in ("R4.1", "R5.5", "R7.3"):
        ev = roadmap.evaluate(i)
        en = (book / "en" / f"{i}.html").read_text(encoding="utf-8")
        assert f'class="status {ev["status"]}"' in en
        for c in ev["claims"]:
            assert c["claim"].replace("'", "&#x27;").replace('"', "&quot;")[:40] in en


def test_japanese_text_is_covered_by_the_vendored_font(book):
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(book / "assets" / "fonts" / "NotoSansJP-subset.woff")).getBestCmap()
    text = "".join(p.read_text(encoding="utf-8") for p in (book / "ja").glob("*.html"))
    cjk = {c for c in text if "\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef"}
    missing = sorted(c for c in cjk if ord(c) not in cmap)
    assert not missing, f"re-run scripts/subset_font.py: the book's font lacks {''.join(missing)}"


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(DodaiError, match="not empty"):
        build_book(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "x"


def test_cli_writes_the_book(tmp_path, capsys):
    from dodai.cli import main

    assert main(["roadmap", "book", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "en" / "R9.3.html").is_file()


# --------------------------------------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

_TOFU_JS = """() => {
  const c = document.createElement('canvas'); c.width = 200; c.height = 40;
  const g = c.getContext('2d');
  const draw = (s) => { g.clearRect(0, 0, 200, 40); g.font = '24px dodai-ja'; g.fillText(s, 0, 30);
                         return Array.from(g.getImageData(0, 0, 200, 40).data).join(','); };
  return [draw('日本語の本'), draw('\\ue000\\ue001\\ue002\\ue003\\ue004')];
}"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_every_page_loads_in_chromium_with_maths_and_images(book, browser):
    page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("pageerror", lambda e: failed.append(f"script error: {e}"))
    n_math = 0
    for f in _pages(book):
        page.goto(f.as_uri(), wait_until="load")
        assert not failed, (f, failed)
        broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || e.naturalWidth === 0)"
                                                  ".map(e => e.src)")
        assert not broken, (f, broken)
        if f.parent.name in ("ja", "en") and f.name != "index.html":
            assert page.get_attribute("html", "data-math-done") == "1", f
            m = page.eval_on_selector_all(".math", "els => [els.length, els.filter(e => "
                                                   "e.classList.contains('math-ok') && e.querySelector('.katex'))"
                                                   ".length]")
            assert m[0] > 0 and m[0] == m[1], (f, m)  # every formula rendered by KaTeX, none left as TeX
            n_math += m[0]
    assert n_math > 80
    page.close()


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef]")


def test_japanese_renders_with_real_glyphs(book, browser):
    """Every element holding Japanese is drawn with the vendored CJK font, never with a system font that lacks the
    glyphs (chromium then draws boxes); and drawn glyphs differ from missing-glyph boxes."""
    page = browser.new_page()
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    checked = 0
    for rel in ("ja/index.html", "ja/R4.1.html", "ja/R9.3.html", "en/R1.1.html", "index.html"):
        page.goto((book / rel).as_uri(), wait_until="load")
        page.evaluate("() => document.fonts.ready.then(() => true)")
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        for nid in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "body *"})["nodeIds"]:
            node = cdp.send("DOM.describeNode", {"nodeId": nid, "depth": 1})["node"]
            own = "".join(c.get("nodeValue", "") for c in node.get("children", []) if c.get("nodeType") == 3)
            n_cjk = len(_CJK.findall(own))
            if not n_cjk:
                continue
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": nid})["fonts"]
            cjk_glyphs = sum(f["glyphCount"] for f in fonts if f["isCustomFont"] or "CJK" in f["familyName"])
            assert cjk_glyphs >= n_cjk, (rel, own[:40], fonts)
            checked += 1
    assert checked > 30
    page.goto((book / "ja" / "R4.1.html").as_uri(), wait_until="load")
    page.evaluate("() => document.fonts.load('24px dodai-ja', '日本語')")
    ja, tofu = page.evaluate(_TOFU_JS)
    assert ja != tofu and len(set(ja.split(","))) > 2  # drawn glyphs differ from missing-glyph boxes
    page.close()


def test_screenshots_of_three_pages(book, browser, tmp_path):
    from PIL import Image

    page = browser.new_page(viewport={"width": 1000, "height": 1400})
    for rel in ("index.html", "ja/R4.1.html", "en/R9.3.html"):
        shot = tmp_path / (rel.replace("/", "_") + ".png")
        page.goto((book / rel).as_uri(), wait_until="load")
        page.evaluate("() => document.fonts.ready.then(() => true)")
        page.screenshot(path=str(shot), full_page=True)
        img = Image.open(shot).convert("L")
        lo, hi = img.getextrema()
        assert img.size[0] == 1000 and img.size[1] >= 600 and hi - lo > 100, (rel, img.size, (lo, hi))
        colours = len(set(img.resize((100, 100)).getdata()))
        assert colours > 20, rel  # text, formulas and figures, not a blank page
    page.close()


def test_docs_code_references_hold_the_quoted_lines():
    """docs/*.md quote code under a `path:A-B` reference; each must still be exactly those lines."""
    from dodai.book.docrefs import check

    docs = sorted((ROOT / "docs").glob("*.md"))
    assert docs
    problems = [p for d in docs for p in check(d)]
    assert not problems, "\n".join(problems) + "\n(run python scripts/sync_docs.py)"


def test_docrefs_check_catches_a_stale_reference(tmp_path):
    from dodai.book.docrefs import check

    doc = tmp_path / "x.md"
    doc.write_text("`dodai/nn/attention.py:1-2`\n\n```python\ndef repeat_kv(x, n):\n    pass\n```\n")
    assert check(doc)
