"""Rebuild the SQuAD 2.0 excerpt files of this folder from a SQuAD-format JSON file (not run by dodai itself).

Usage: ``python -m dodai.rag.data.make_squad_subset SQUAD.json`` — the input is the SQuAD 2.0 development set
(or an excerpt of it: whole articles); articles are split by title into a tuning part (``DEV_TITLES``) and a
held-out part (every other article), so no paragraph of the held-out part is ever seen while tuning.
Answerable questions keep all their distinct reference answers; unanswerable ones (``is_impossible``) are
written with ``"answers": []`` and ``"impossible": true``. See README.md for the source and the licence.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEV_TITLES = ("Normans", "Sky_(United_Kingdom)")
HERE = Path(__file__).parent


def convert(src: Path, out: Path = HERE) -> dict:
    data = json.loads(src.read_text(encoding="utf-8"))["data"]
    counts = {}
    for part in ("dev", "heldout"):
        docs, qas = [], []
        for art in data:
            if (art["title"] in DEV_TITLES) != (part == "dev"):
                continue
            for para in art["paragraphs"]:
                gold = len(docs)
                docs.append({"title": f"{art['title']} #{len(docs)}", "text": para["context"]})
                for q in para["qas"]:
                    answers = list(dict.fromkeys(a["text"] for a in q["answers"]))
                    row = {"id": q["id"], "question": q["question"].strip(), "answers": answers, "gold": gold}
                    if q.get("is_impossible"):
                        row["impossible"] = True
                    qas.append(row)
        for name, rows in (("docs", docs), ("qa", qas)):
            (out / f"squad2_{part}.{name}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        counts[part] = {"docs": len(docs), "questions": len(qas),
                        "answerable": sum(1 for q in qas if not q.get("impossible"))}
    return counts


if __name__ == "__main__":
    print(convert(Path(sys.argv[1])))
