"""Quick modes of the R4.1 / R4.2 / R4.4 experiments: each asserts its claim at small scale."""

import json

import pytest

pytest.importorskip("matplotlib")


def test_r4_1_reference_equals_sdpa_and_maps_are_causal(tmp_path):
    from dodai.experiments.r4_1 import run

    r = run(tmp_path, quick=True)
    assert r["max_diff_fp32"] < 1e-5 and r["max_diff_fp64"] < 1e-12
    assert r["model_logits_ref_vs_sdpa_max_diff"] < 1e-4
    assert r["attn_row_sum_max_err"] < 1e-5 and r["attn_future_weight_max"] == 0.0
    assert r["val_loss_end"] < r["uniform_loss"] - 0.5  # the model learned something about the text
    for f in ("report.md", "results.json", "attention_maps.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["max_diff_fp64"] == r["max_diff_fp64"]


def test_r4_2_gqa_and_mqa_shrink_the_cache_and_still_learn(tmp_path):
    from dodai.experiments.r4_2 import run

    r = run(tmp_path, quick=True)
    rows = {row["variant"]: row for row in r["rows"]}
    kv = [rows[v]["kv_bytes_per_token"] for v in ("MHA", "GQA", "MQA")]
    assert kv[0] == 2 * kv[1] == 4 * kv[2]
    assert kv[0] == 2 * 2 * 64 * 4  # n_layer * (K, V) * C * fp32 bytes
    assert rows["MHA"]["params"] > rows["GQA"]["params"] > rows["MQA"]["params"]
    assert all(row["val_loss"] < r["uniform_loss"] - 0.5 for row in r["rows"])
    assert (tmp_path / "loss_curves.png").stat().st_size > 0


def test_r4_4_gelu_and_swiglu_match_in_size_and_both_learn(tmp_path):
    from dodai.experiments.r4_4 import run

    r = run(tmp_path, quick=True)
    gelu, glu = r["rows"]
    assert abs(gelu["ffn_params_per_layer"] - glu["ffn_params_per_layer"]) <= 0.05 * gelu["ffn_params_per_layer"]
    assert gelu["val_loss"] < r["uniform_loss"] - 0.5 and glu["val_loss"] < r["uniform_loss"] - 0.5
    assert (tmp_path / "report.md").read_text().count("swiglu") >= 1
