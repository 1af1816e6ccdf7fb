"""R7.1 experiment, quick mode: hybrid retrieval keeps up with the better single method, both single
methods are far above chance, the report and plot are written, answers' citations are checked."""

from __future__ import annotations

import json

import pytest


@pytest.mark.models
def test_r7_1_quick(tmp_path, minilm_dir, smollm2_gguf):
    from dodai.experiments.r7_1 import KS, run

    res = run(tmp_path, quick=True)
    m = res["metrics"]
    best_single = max(m["bm25"]["mrr"], m["dense"]["mrr"])
    for fused in ("hybrid", "weighted"):
        assert m[fused]["mrr"] >= best_single - 0.05, (fused, m)
    for single in ("bm25", "dense"):
        assert m[single]["recall@10"] >= 10 * res["random_recall"]["recall@10"], (single, m)
        assert m[single]["recall@1"] >= 0.4
    for name in m:
        recalls = [m[name][f"recall@{k}"] for k in KS]
        assert recalls == sorted(recalls)  # recall@k never falls as k grows
    assert res["off_topic"]["abstained"] and res["off_topic"]["best_cosine"] < res["mean_relevant_cosine"]
    for a in res["answers"]:
        assert a["answer"]
        assert all(1 <= n <= len(a["shown_docs"]) for n in a["citations"])
    assert (tmp_path / "recall_at_k.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["n_docs"] == res["n_docs"] == 120
    assert "Recall@k" in (tmp_path / "report.md").read_text()
