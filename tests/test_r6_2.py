"""R6.2 experiment, quick mode on the real SmolLM2: parameter accounting, held-out reading, chat."""

import json

import pytest


def test_architecture_counts_match_hf():
    """dodai's GPT at GPT-2 small's shapes has exactly HF GPT2LMHeadModel's parameter count."""
    transformers = pytest.importorskip("transformers")
    import torch

    from dodai.experiments.r6_2 import architectures

    gpt, llama = architectures()
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert gpt["params"]["total"] == sum(p.numel() for p in hf.parameters())
    # SmolLM2's KV cache per token is a third of a multi-head model's at the same width and depth (9 q / 3 kv)
    assert llama["kv_cache_bytes_per_token"] == 2 * 3 * 64 * 4 * 30
    assert sum(v for k, v in llama["params"].items() if k != "total") == llama["params"]["total"]


def test_r6_2_quick(tmp_path, smollm2_gguf):
    from dodai.experiments.r6_2 import run

    res = run(tmp_path, quick=True)
    smol = res["architectures"][1]
    assert smol["params"]["total"] == res["params_loaded"]  # meta-built shapes == the loaded real model
    assert res["held_out"]["docs"] == 2
    # a trained model: far below the ~4 bits/byte of a uniform guess over 49,152 tokens of ~3.5 bytes
    assert res["held_out"]["bits_per_byte"] < 1.5
    assert res["loss_last_quarter"] < res["loss_first_quarter"]  # more context, lower loss
    # knowledge, teacher-forced (a greedy chat answer of this 4-bit 135M model flips with the thread count)
    assert res["facts"][0]["top"][0][0] == " Paris"
    assert res["chat"][0]["answer"] and res["chat"][0]["finish"] in ("eos", "length")
    assert (tmp_path / "loss_by_position.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["held_out"]["bits_per_byte"] > 0
    assert "Two families" in (tmp_path / "report.md").read_text()
