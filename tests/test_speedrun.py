"""`dodai speedrun` end to end at smoke-test scale: report, learning, loadable run folder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dodai.speedrun import size_for_budget, speedrun


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread avoids OpenMP spin-waits on a busy machine; restored afterwards
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_speedrun_small_budget_end_to_end(tmp_path):
    out = tmp_path / "sr"
    res = speedrun(out, minutes=0.15, seed=0, quiet=True, vocab_size=320, threads=1)
    report = (out / "report.md").read_text()
    for section in ("Final evaluation", "Loss curve", "Samples", "Tokenizer", "bytes_per_token"):
        assert section in report
    assert (out / "loss.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["val_loss"] == res["val_loss"]
    # it learned: val loss fell from the uniform ln(V) of an untrained model
    assert abs(res["initial_val_loss"] - math.log(res["tokenizer"]["vocab_size"])) < 0.3
    assert res["val_loss"] < res["initial_val_loss"] - 0.5
    assert res["steps"] >= 10 and len(res["samples"]) == 4
    assert all(s["text"].startswith(s["prompt"]) for s in res["samples"])
    assert 1.2 < res["tokenizer"]["val_bytes_per_token"] < 4  # BPE merges: > 1 byte per token
    # the run folder is a model folder: loads and scores held-out text like the report says
    from dodai.models import load_model

    model, tok = load_model(out)
    ids = torch.tensor([tok.encode("Return the number of items in the container.")])
    with torch.no_grad():
        _, loss = model(ids[:, :-1], ids[:, 1:])
    assert float(loss) < math.log(tok.vocab_size)


def test_size_for_budget_grows_with_the_budget():
    small, mid, big = size_for_budget(0.2), size_for_budget(5), size_for_budget(30)
    assert small["n_embd"] < mid["n_embd"] < big["n_embd"]


def test_bad_budget_is_a_one_line_error(tmp_path, capsys):
    from dodai.cli import main

    assert main(["speedrun", "--minutes", "0", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--minutes must be > 0" in capsys.readouterr().err
