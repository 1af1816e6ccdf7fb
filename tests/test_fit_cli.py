"""The training commands on dodai.train.fit: a crashed `dodai sft` resumes to the uninterrupted run's losses,
`dodai dpo` accumulates gradients and checkpoints, `dodai pretrain --budget-minutes` ends with its budget."""

from __future__ import annotations

import json
import time

import pytest
import torch

from dodai.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from dodai.finetune import tasks

    model, tok = tasks.tiny_model_and_tokenizer(seed=2, n_layer=1, n_embd=16)
    d = tmp_path_factory.mktemp("base")
    model.save(d, tokenizer=tok)
    return str(d)


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sft_crash_and_resume_equals_the_uninterrupted_run(base, tmp_path, capsys, monkeypatch):
    from dodai.finetune import sft

    args = ["sft", "--model", base, "--data", "dates", "--task-size", "24", "--lora-rank", "2", "--steps", "6",
            "--batch-size", "4", "--learning-rate", "1e-2", "--warmup-iters", "2", "--checkpoint-every", "2",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    full = _rows(tmp_path / "full" / "metrics.jsonl")
    capsys.readouterr()

    real, calls = sft.masked_lm_loss, []

    def dies_in_step_5(model, x, y):  # the process "dies" during step 5, after the step-4 checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return real(model, x, y)

    monkeypatch.setattr(sft, "masked_lm_loss", dies_in_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        main([*args, "--out", str(tmp_path / "run")])
    monkeypatch.setattr(sft, "masked_lm_loss", real)
    assert [r["step"] for r in _rows(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main([*args, "--out", str(tmp_path / "run"), "--resume"]) == 0
    got = _rows(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 7))
    assert [r["loss"] for r in got] == [r["loss"] for r in full]  # bitwise
    a = (tmp_path / "full" / "adapters.safetensors").read_bytes()
    assert (tmp_path / "run" / "adapters.safetensors").read_bytes() == a


def test_dpo_grad_accum_checkpoints_and_resumes(base, tmp_path, capsys):
    common = ["dpo", "--model", base, "--data", "dates", "--task-size", "12", "--batch-size", "2", "--grad-accum", "2",
              "--lora-rank", "2", "--checkpoint-every", "1", "--quiet", "--out", str(tmp_path / "d")]
    assert main([*common, "--steps", "2"]) == 0
    assert json.loads((tmp_path / "d" / "ckpt" / "COMPLETE").read_text())["step"] == 2
    assert main([*common, "--steps", "3", "--resume"]) == 0  # one more step from the checkpoint
    assert [r["step"] for r in _rows(tmp_path / "d" / "metrics.jsonl")] == [1, 2, 3]
    assert main([*common[:-1], str(tmp_path / "e"), "--steps", "1", "--grad-accum", "0"]) == 2
    assert "--grad-accum" in capsys.readouterr().err


def test_pretrain_budget_minutes_ends_with_the_budget(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    t0 = time.time()
    assert main(["pretrain", "--data", str(text), "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                 "--block-size", "16", "--batch-size", "4", "--eval-iters", "2", "--max-iters", "100000",
                 "--budget-minutes", str(3 / 60), "--quiet", "--threads", "1", "--out", str(tmp_path / "r")]) == 0
    wall = time.time() - t0
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert 5 <= len(rows) <= 13  # start, every tenth of the budget, end
    assert rows[-1]["elapsed_s"] < 3.0 + 1.0  # training (with its evaluations) ended with the budget
    assert wall < 3.0 + 15  # + data, tokenizer and model setup
    assert rows[-1]["step"] > 10 and rows[-1]["val_loss"] < rows[0]["val_loss"]

