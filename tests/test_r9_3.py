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
    m = res["masks"]  # measured from the models' outputs, not drawn
    assert m["encoder_all_ones"] and m["encoder_dependency_fraction"] == 1.0
    assert m["decoder_equals_lower_triangle"]
    T = m["decoder_tokens"]
    assert m["decoder_dependency_fraction"] == (T * (T + 1) / 2) / (T * T)
    for row in res["rows"]:
        assert row["BERT fill-mask (top 3)"]


def test_dependency_matrix_reads_the_mask_from_the_model():
    """A model whose position i sees only position i - 1 gives exactly that pattern (not a drawn mask)."""
    import torch

    from dodai.experiments.r9_3 import dependency_matrix

    emb = torch.nn.Embedding(10, 3)

    def shifted(ids):  # output i depends on token i-1 only
        e = emb(ids)
        return torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], 1)

    dep = dependency_matrix(shifted, [1, 2, 3, 4], 10)
    assert torch.equal(dep, torch.diag(torch.ones(3, dtype=torch.bool), -1))
