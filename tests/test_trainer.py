"""The trainer: schedule, loop, metrics, checkpoints, NaN stop, accumulation, time budget (in-process)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dodai.data.batching import to_tensor
from dodai.errors import DodaiError
from dodai.train import checkpoint as ck
from dodai.train.schedule import lr_at
from dodai.train.trainer import TrainConfig, read_metrics, train

V = 12


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread avoids OpenMP spin-waits on a busy machine; restored afterwards
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Bigram(nn.Module):
    """A tiny model with the causal-LM protocol; ``nan_after`` injects a NaN loss on that forward call."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.ln = nn.LayerNorm(16)
        self.head = nn.Linear(16, V)
        self.drop = nn.Dropout(0.1)
        self.calls, self.nan_after = 0, nan_after

    def forward(self, idx, targets=None):
        self.calls += int(self.training)
        logits = self.head(self.drop(self.ln(self.emb(idx))))
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1)) if targets is not None else None
        if self.training and self.nan_after is not None and self.calls > self.nan_after:
            loss = loss * float("nan")
        return logits, loss


def _data(n=3000, seed=0):
    # a learnable stream: mostly "next = current + 1 mod V", with 10 % noise
    g = torch.Generator().manual_seed(seed)
    x = [0]
    noise = torch.rand(n, generator=g)
    rnd = torch.randint(0, V, (n,), generator=g)
    for i in range(1, n):
        x.append(int(rnd[i]) if noise[i] < 0.1 else (x[-1] + 1) % V)
    ids = to_tensor(x, V)
    return ids[: int(0.9 * n)], ids[int(0.9 * n) :]


def _cfg(**kw):
    base = dict(batch_size=8, block_size=8, max_iters=60, eval_interval=20, eval_iters=3, warmup_iters=5,
                lr_decay_iters=60, learning_rate=1e-2, min_lr=1e-3, quiet=True, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_schedule_shape():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=100)
    assert lr_at(0, **kw) == pytest.approx(1 / 11)
    assert lr_at(9, **kw) == pytest.approx(10 / 11)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.55)  # cosine midpoint: halfway between max and min
    assert lr_at(100, **kw) == pytest.approx(0.1)
    assert lr_at(5000, **kw) == 0.1
    seq = [lr_at(i, **kw) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(seq, seq[1:]))
    assert lr_at(50, **kw, decay=False) == 1.0


def test_training_learns_and_writes_the_run_folder(tmp_path):
    tr, va = _data()
    torch.manual_seed(0)
    res = train(Bigram(), tr, va, _cfg(), tmp_path, bytes_per_token=2.0)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 20, 40, 60]
    for r in rows:
        assert {"step", "elapsed_s", "train_loss", "val_loss", "lr", "val_ppl", "val_bpb"} <= r.keys()
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / 2.0)
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
    assert rows[0]["val_loss"] == pytest.approx(math.log(V), abs=0.3)  # untrained ≈ uniform
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.8  # it learned the +1 rule
    assert res["val_loss"] == rows[-1]["val_loss"] and res["steps"] == 60
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "ckpt" / "COMPLETE").is_file() and (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "train_config.json").read_text())["max_iters"] == 60


def test_gradient_accumulation_matches_the_big_batch(tmp_path):
    # batch 8 in one micro-batch == 2 micro-batches of 4 (same windows: the generator draws them in order)
    tr, va = _data()
    out = {}
    for name, bs, acc in (("big", 8, 1), ("acc", 4, 2)):
        torch.manual_seed(0)
        m = Bigram()
        m.drop.p = 0.0
        train(m, tr, va, _cfg(batch_size=bs, gradient_accumulation_steps=acc, max_iters=20, eval_interval=10,
                              checkpoint=False), tmp_path / name)
        out[name] = m.state_dict()
    for k in out["big"]:
        torch.testing.assert_close(out["big"][k], out["acc"][k], rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    tr, va = _data()
    torch.manual_seed(0)
    m = Bigram(nan_after=25)  # training forward no. 26 = step 25 (eval calls run in eval mode)
    with pytest.raises(DodaiError, match=r"at step 25.*last good checkpoint \(step 20\)") as e:
        train(m, tr, va, _cfg(eval_interval=10), tmp_path)
    assert "\n" not in str(e.value)
    assert ck.find_checkpoint(tmp_path) == tmp_path / "ckpt"
    st = torch.load(tmp_path / "ckpt" / "trainer_state.pt", weights_only=True)
    assert st["step"] == 20
    # the kept checkpoint holds finite weights and resumes without the fault
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "ckpt" / "model.safetensors").values())


def test_max_minutes_stops_cleanly_with_a_final_eval(tmp_path):
    tr, va = _data()
    res = train(Bigram(), tr, va, _cfg(max_iters=10_000, max_minutes=0.5 / 60), tmp_path)
    rows = read_metrics(tmp_path)
    assert res["stopped_by_time"] and 0 < res["steps"] < 10_000
    assert rows[-1]["step"] == res["steps"]
    assert json.loads((tmp_path / "ckpt" / "COMPLETE").read_text())["step"] == res["steps"]


def test_bf16_autocast_runs(tmp_path):
    tr, va = _data()
    res = train(Bigram(), tr, va, _cfg(dtype="bfloat16", max_iters=10, eval_interval=10, checkpoint=False), tmp_path)
    assert math.isfinite(res["val_loss"])


def test_in_process_resume_is_bitwise(tmp_path):
    tr, va = _data()
    kw = dict(max_iters=30, lr_decay_iters=30, eval_interval=10)
    torch.manual_seed(0)
    train(Bigram(), tr, va, _cfg(**kw), tmp_path / "full")
    torch.manual_seed(0)
    train(Bigram(), tr, va, _cfg(**kw | {"max_iters": 20}), tmp_path / "part")  # stops at 20 with a checkpoint
    torch.manual_seed(123)  # a different fresh init: everything must come from the checkpoint
    train(Bigram(), tr, va, _cfg(**kw), tmp_path / "part", resume=True)
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in a] == [
        (r["step"], r["train_loss"], r["val_loss"]) for r in b
    ]


def test_rng_state_round_trip():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    st = ck.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ck.set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoint_fallback_and_corruption(tmp_path):
    m = Bigram()
    ck.save_checkpoint(tmp_path, m, {"step": 3})
    # a crash mid-swap: ckpt/ renamed to ckpt.old/, the new one never completed
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"partial")
    assert ck.find_checkpoint(tmp_path) == tmp_path / "ckpt.old"
    assert ck.load_checkpoint(tmp_path, Bigram())["step"] == 3
    (tmp_path / "ckpt.old" / "trainer_state.pt").write_bytes(b"\x00garbage")
    with pytest.raises(DodaiError, match="unreadable"):
        ck.load_checkpoint(tmp_path, Bigram())
    ck.save_checkpoint(tmp_path / "other", nn.Linear(3, 4), {"step": 1})
    with pytest.raises(DodaiError, match="does not fit the model"):
        ck.load_checkpoint(tmp_path / "other", nn.Linear(5, 4))
    with pytest.raises(DodaiError, match="no complete checkpoint"):
        ck.load_checkpoint(tmp_path / "nothing", Bigram())


def test_bad_configs(tmp_path):
    tr, va = _data()
    with pytest.raises(DodaiError, match="batch-size"):
        train(Bigram(), tr, va, _cfg(batch_size=0), tmp_path)
    with pytest.raises(DodaiError, match="fewer than block size"):
        train(Bigram(), tr, va[:5], _cfg(), tmp_path)
    with pytest.raises(DodaiError, match="dtype"):
        train(Bigram(), tr, va, _cfg(dtype="float16"), tmp_path)
