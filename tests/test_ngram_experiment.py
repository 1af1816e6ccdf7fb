"""R1.1 quick experiment: KN trigram < KN bigram < add-1 unigram on held-out text; the GPT beats the unigram."""

import json
import math

from dodai.experiments import EXPERIMENTS


def test_r1_1_quick(tmp_path):
    assert EXPERIMENTS["R1.1"] == "dodai.experiments.r1_1:run"
    from dodai.experiments.r1_1 import run

    r = run(tmp_path, quick=True)
    ppl = r["ppl"]
    assert ppl["trigram"] < ppl["bigram"] < ppl["unigram"] < r["vocab_size"]
    assert ppl["trigram-mle"] == math.inf  # reported, not a crash
    assert ppl["GPT"] < ppl["unigram"]
    assert (tmp_path / "perplexity.png").stat().st_size > 1000
    assert "trigram (KN)" in (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ppl"]["bigram"] == ppl["bigram"]
    assert all(len(s) > 0 for s in r["samples"].values())
