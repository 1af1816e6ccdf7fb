"""R7.1 experiment, quick mode: retrieval metrics on the held-out SQuAD paragraphs are well-formed and far above
chance, every set-up answers the same questions, extractive answers are spans of retrieved paragraphs, the floor
has no sources, and the report, plot and results are written."""

from __future__ import annotations

import json

import pytest


@pytest.mark.models
def test_r7_1_quick(tmp_path, minilm_dir, smollm2_gguf):
    from dodai.experiments.r7_1 import ANSWER_SETUPS, KS, METHODS, run
    from dodai.rag.squad import load_docs

    res = run(tmp_path, quick=True)
    m = res["retrieval"]
    assert set(m) == set(METHODS)
    for name in METHODS:
        recalls = [m[name][f"recall@{k}"] for k in KS]
        assert recalls == sorted(recalls)  # recall@k never falls as k grows
        assert m[name]["recall@1"] >= 3 * 1 / res["n_docs"]  # far above a random ranking's 1/N
    docs, _ = load_docs("heldout")
    norm = [" ".join(d.split()) for d in docs]
    questions = [[r["question"] for r in res["rows"][s]] for s in ANSWER_SETUPS]
    assert all(q == questions[0] for q in questions) and len(questions[0]) == 4
    for s in ("bm25", "dense", "hybrid"):
        for r in res["rows"][s]:
            assert 0 <= r["f1"] <= 1 and r["em"] in (0.0, 1.0)
            if not r["abstained"]:
                assert any(r["answer"] in norm[d] for d in r["retrieved"]), r
                assert set(r["cited"]) <= set(r["retrieved"])
    assert res["answers"]["none"]["hit@k"] is None and all(r["retrieved"] == [] for r in res["rows"]["none"])
    assert 0 <= res["offtopic_abstention"] <= 1 and res["n_offtopic"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["n_docs"] == 12
    assert (tmp_path / "r7_1.png").stat().st_size > 1000 and "Retrieval" in (tmp_path / "report.md").read_text()
