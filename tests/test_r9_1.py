"""R9.1 quick mode: every equation of one attention layer, recomputed with plain torch ops, matches the
model's own computation, and the identities behind the equations hold."""

import json
import math

import pytest
import torch


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from dodai.experiments.r9_1 import run

    out = tmp_path_factory.mktemp("r9_1")
    return out, run(out, quick=True)


def test_every_step_matches_the_model(quick_run):
    _, res = quick_run
    names = [s["tensor"] for s in res["steps"]]
    for t in ("x̂", "Q", "K", "V", "Q'", "K'", "A", "O", "y"):
        assert t in names
    for s in res["steps"]:
        assert s["max_abs_diff"] <= 1e-5, s
    # from the same x̂ on, float64 formula and float64 model agree to rounding (RoPE tables in float64)
    for s in res["steps"][2:-2]:
        assert s["max_abs_diff"] <= 1e-12, s
    assert res["steps"][-1]["max_abs_diff"] <= 1e-12  # the module called with float64 RoPE tables
    assert res["H_kv"] < res["H"]  # the quick model uses GQA, so the grouping is exercised


def test_identities(quick_run):
    _, res = quick_run
    assert res["row_sum_err"] <= 1e-12
    assert res["future_weight"] == 0.0
    assert res["rope_relative_err"] <= 1e-9
    # the same (q, k) pair at different distances gets different scores: RoPE encodes distance
    assert max(res["rope_distance_scores"]) - min(res["rope_distance_scores"]) > 1e-3
    for row in res["score_variance"]:
        assert abs(row["var(q·k)"] / row["D"] - 1) < 0.1
        assert abs(row["var(q·k/√D)"] - 1) < 0.1
    assert res["gqa_group_diff"] == 0.0 and res["gqa_distinct_kv_heads"] == res["H_kv"]


def test_outputs_written(quick_run):
    out, res = quick_run
    assert (out / "attention_maps.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["steps"]
    assert "level of equations" in (out / "report.md").read_text()


def test_rope_by_pairs_matches_complex_rotation():
    """The independent RoPE formula equals multiplying (x_i + i·x_{i+D/2}) by e^{i·p·θ^(-2i/D)}."""
    from dodai.experiments.r9_1 import rope_by_pairs

    torch.manual_seed(0)
    d, t, theta = 8, 5, 10000.0
    x = torch.randn(t, d, dtype=torch.float64)
    pos = torch.arange(3, 3 + t)
    z = torch.complex(x[:, : d // 2], x[:, d // 2:])
    ang = pos[:, None].double() * theta ** (-2.0 * torch.arange(d // 2).double() / d)
    zr = z * torch.polar(torch.ones_like(ang), ang)
    expected = torch.cat([zr.real, zr.imag], dim=-1)
    torch.testing.assert_close(rope_by_pairs(x, pos, theta), expected)
    # rotations keep lengths
    torch.testing.assert_close(rope_by_pairs(x, pos, theta).norm(dim=-1), x.norm(dim=-1))
    assert math.isclose(float(rope_by_pairs(x, torch.zeros(t, dtype=torch.long), theta).sub(x).abs().max()), 0.0)
