"""R5.1 scaling-law sweep: the power-law fit recovers known parameters; quick mode: loss falls with size."""

import math

from dodai.experiments.r5_1 import fit_power_law, non_embedding_params, run
from dodai.models.gpt import GPT, GPTConfig


def test_fit_recovers_a_known_power_law():
    n = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5]
    loss = [5.0 * v ** -0.3 + 1.2 for v in n]
    fit = fit_power_law(n, loss, grid=2000)
    assert math.isclose(fit["alpha"], 0.3, rel_tol=0.02)
    assert math.isclose(fit["c"], 1.2, abs_tol=0.01)
    assert math.isclose(fit["a"], 5.0, rel_tol=0.1)


def test_non_embedding_params_leaves_out_the_tables():
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8, pos_encoding="learned"))
    total = sum(p.numel() for p in m.parameters())
    assert non_embedding_params(m) == total - 50 * 8 - 16 * 8


def test_r5_1_loss_decreases_with_size(tmp_path):
    r = run(tmp_path, quick=True)
    ns, losses = r["N"], r["loss"]
    assert ns == sorted(ns) and len(ns) >= 4
    assert all(b < a for a, b in zip(losses, losses[1:]))  # every larger model is better at the same D
    assert r["fit"]["alpha"] > 0
    assert (tmp_path / "scaling.png").is_file() and (tmp_path / "report.md").is_file()
