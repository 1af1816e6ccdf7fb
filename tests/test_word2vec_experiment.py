"""R1.5 quick experiment: plurals rank near their singulars for skip-gram and CBOW; outputs written."""

import json

from dodai.embeddings.word2vec import WordVectors
from dodai.experiments import EXPERIMENTS


def test_r1_5_quick(tmp_path):
    assert EXPERIMENTS["R1.5"] == "dodai.experiments.r1_5:run"
    from dodai.experiments.r1_5 import run

    r = run(tmp_path, quick=True)
    for name in ("sg", "cbow"):
        m = r["models"][name]
        assert m["plural_pairs"] >= 30
        # Random words would sit at 0.5 on average (sd ~0.04 for 30+ pairs).
        assert m["plural_rank"] < 0.4, m
        assert (tmp_path / f"pca_{name}.png").stat().st_size > 1000
        kv = WordVectors.load_word2vec_format(tmp_path / f"vectors_{name}.txt")
        assert "file" in kv and kv.vectors.shape[1] == 32
    assert json.loads((tmp_path / "results.json").read_text())["models"]["sg"]["plural_rank"] == r["models"]["sg"][
        "plural_rank"]
