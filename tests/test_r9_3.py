"""R9.3 BERT vs GPT demo (quick mode): the encoder's prediction at the blank depends on the words to its
right, the decoder's logits there never do (causal mask); report and attention-mask plot are written."""

from __future__ import annotations


def test_r9_3_quick_right_context_matters_only_for_the_encoder(tmp_path):
    from dodai.experiments.r9_3 import run

    res = run(tmp_path, quick=True)
    for f in ("report.md", "results.json", "attention_masks.png"):
        assert (tmp_path / f).is_file(), f
    assert len(res["checks"]) == 4
    for c in res["checks"]:
        assert c["BERT max |Δlogit| at blank"] > 1e-4, c  # bidirectional: the right context is seen
        assert c["GPT max |Δlogit| at blank"] < 1e-4, c  # causal: it is not (0 up to round-off)
    for row in res["rows"]:
        assert row["BERT fill-mask (top 3)"]
