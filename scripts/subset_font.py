#!/usr/bin/env python
"""Make the book's Japanese web font: a subset of Noto Sans CJK JP Regular (SIL Open Font License 1.1).

    apt-get download fonts-noto-cjk && dpkg -x fonts-noto-cjk_*.deb /tmp/noto
    .venv/bin/python scripts/subset_font.py /tmp/noto/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

Keeps: kana, CJK and full-width punctuation, every character of the book's Japanese text (dodai/book/content.py,
dodai/claims.py, dodai/roadmap.py labels, dodai/book/__init__.py) and the most frequent kanji of the ja-manpages
corpus when it is cached (so a new sentence usually needs no new subset). Writes
dodai/book/assets/fonts/NotoSansJP-subset.woff (WOFF, zlib; needs fontTools, which matplotlib installs).
tests/test_book.py fails if a Japanese character of the book is missing from the font.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "dodai" / "book" / "assets" / "fonts" / "NotoSansJP-subset.woff"
SOURCES = ["dodai/book/content.py", "dodai/claims.py", "dodai/roadmap.py", "dodai/book/__init__.py"]
N_CORPUS_KANJI = 2500


def wanted_text() -> str:
    chars = set()
    for lo, hi in ((0x3000, 0x30FF), (0xFF00, 0xFFEF), (0x2000, 0x206F), (0x2190, 0x22FF)):
        chars.update(chr(c) for c in range(lo, hi + 1))
    for rel in SOURCES:
        chars.update((ROOT / rel).read_text(encoding="utf-8"))
    corpus = Path.home() / ".cache" / "dodai" / "corpora" / "ja-manpages.txt"
    if corpus.is_file():
        counts = collections.Counter(c for c in corpus.read_text(encoding="utf-8") if "\u4e00" <= c <= "\u9fff")
        chars.update(c for c, _ in counts.most_common(N_CORPUS_KANJI))
    chars.update(chr(c) for c in range(0x20, 0x7F))
    return "".join(sorted(chars))


def main() -> int:
    src = Path(sys.argv[1])
    font = TTCollection(str(src)).fonts[0] if src.suffix == ".ttc" else None
    if font is None:
        from fontTools.ttLib import TTFont
        font = TTFont(str(src))
    name = font["name"].getDebugName(4)
    if "JP" not in (name or ""):
        sys.exit(f"expected the JP face first in {src}, got {name!r}")
    opts = subset.Options()
    opts.flavor = "woff"
    opts.layout_features = []  # no GSUB/GPOS: plain glyphs are all the book needs, at half the size
    opts.name_IDs = ["*"]
    opts.notdef_outline = True
    sub = subset.Subsetter(opts)
    sub.populate(text=wanted_text())
    sub.subset(font)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    font.flavor = "woff"
    font.save(str(OUT))
    print(f"{OUT}: {OUT.stat().st_size:,} bytes, {len(font.getBestCmap()):,} characters from {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
