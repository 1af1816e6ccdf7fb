"""R4.3 / R6.4 length extrapolation, quick mode: ALiBi degrades least beyond the training length."""

import math

import torch

from dodai.experiments.r4_3 import beyond_loss, run
from dodai.models.gpt import GPT, GPTConfig


def test_beyond_loss_scores_the_same_targets_at_every_length():
    # a model that ignores its input (zero weights -> uniform logits) has loss log(V) at every length,
    # and the windows of every length end on the same characters
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=64, n_layer=1, n_head=2, n_embd=16, pos_encoding="alibi"))
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    ids = torch.randint(11, (8 * 8 + 5 * 8 + 1,))
    for f in (1, 2, 8):
        assert math.isclose(beyond_loss(model, ids, 8, f, 5), math.log(11), rel_tol=1e-6)


def test_r4_3_alibi_extrapolates_best(tmp_path):
    r = run(tmp_path, quick=True)
    ratio, beyond = r["ratio_4x"], r["beyond"]
    assert set(ratio) == {"none", "sinusoidal", "rope", "alibi", "t5"}  # learned: no positions past L
    # Press et al. 2021's direction, on the loss of the characters beyond L (same characters at 1x and 4x):
    # ALiBi's ppl(4L)/ppl(L) is the smallest of all schemes, ALiBi does not get worse with 4x the context,
    # and rotary degrades measurably.
    assert ratio["alibi"] == min(ratio.values())
    assert ratio["alibi"] < 1.005
    assert ratio["rope"] > 1.03
    assert beyond["alibi"]["4"] < min(beyond["sinusoidal"]["4"], beyond["rope"]["4"])
    # every model learned something: well below the uniform distribution's perplexity at L
    assert all(d["1"] < 0.25 * r["uniform_ppl"] for d in beyond.values())
    assert r["rows"][1]["pos_encoding"] == "learned" and r["rows"][1]["beyond L @2L"] == "n/a"
    assert (tmp_path / "report.md").is_file() and (tmp_path / "extrapolation.png").is_file()
