#!/usr/bin/env python
"""Rewrite the `dodai/...py:A-B` references of docs/*.md to where their quoted code is now (dodai.book.docrefs)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dodai.book.docrefs import ROOT, check, sync  # noqa: E402

bad = 0
for doc in sorted((ROOT / "docs").glob("*.md")):
    for m in sync(doc):
        print(f"{doc.name}: quoted code found nowhere in dodai/: {m}")
        bad += 1
    for p in check(doc):
        print(p)
        bad += 1
sys.exit(1 if bad else 0)
