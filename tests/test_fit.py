"""dodai.train.fit, the one training loop: resume is bitwise for every loop built on it, DDP and FSDP2 with
2 gloo processes equal 1 process, gradient accumulation equals the big batch, the time budget drives the
schedule and ends the run on time, NaN halts, progress in logs is a few lines, torch.compile equals eager,
and bad input is a one-line error. (The losses of each converted loop against the pre-fit code are in
tests/test_fit_regression.py.)"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fit_scenarios as S
import pytest
import torch

from dodai.errors import DodaiError
from dodai.train import checkpoint as ck
from dodai.train.fit import FitConfig, fit
from dodai.train.progress import Progress

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Stop(Exception):
    """Raised from a step callback: the process 'dies' after the checkpoint of an earlier step."""


def _stop_at(n):
    def log(row):
        if row["step"] == n:
            raise Stop

    return log


def _lm_batches(seed=1, rows=8, block=8):
    data = S.lm_stream()
    g = torch.Generator().manual_seed(seed)

    def batches(i):
        ix = torch.randint(len(data) - block - 1, (rows,), generator=g)
        win = data[ix[:, None] + torch.arange(block + 1)]
        return win[:, :-1], win[:, 1:]

    return batches


def _lm_loss(m, b):
    return m(*b)[1]


def _equal_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ resume
def _sft(lora):
    def run(out, resume, log):
        from dodai.finetune import sft

        model = S.tiny_lm(99 if resume else 1)  # resumed: every weight must come from the checkpoint
        cfg = sft.SFTConfig(steps=6, batch_size=4, lr=1e-2, warmup=2, max_len=10, seed=3, lora_rank=2 if lora else 0,
                            lora_targets=["wq", "wv"], checkpoint_every=2)
        sft.prepare(model, cfg)
        return [r["loss"] for r in sft.train_sft(model, S.sft_data(), cfg, out_dir=out, resume=resume, log=log)], model
    return run


def _dpo(out, resume, log):
    from dodai.finetune import dpo

    policy, ref = S.tiny_lm(99 if resume else 3), S.tiny_lm(3)
    cfg = dpo.DPOConfig(steps=6, batch_size=4, lr=1e-2, seed=2, checkpoint_every=2)
    return [r["loss"] for r in dpo.train_dpo(policy, ref, S.pairs(20, 2), cfg, out_dir=out, resume=resume,
                                             log=log)], policy


def _reward(out, resume, log):
    from dodai.finetune import reward
    from dodai.finetune.policy import RewardModel

    rm = RewardModel(S.tiny_lm(99 if resume else 2))
    cfg = reward.RMConfig(steps=6, batch_size=4, lr=1e-2, seed=1, checkpoint_every=2)
    return [r["loss"] for r in reward.train_reward_model(rm, S.pairs(20, 1), cfg, out_dir=out, resume=resume,
                                                         log=log)], rm


def _grpo(out, resume, log):
    from dodai.finetune import grpo

    policy, ref = S.tiny_lm(99 if resume else 4), S.tiny_lm(4)
    cfg = grpo.GRPOConfig(steps=6, prompts_per_step=2, group_size=3, max_new_tokens=5, lr=1e-2, seed=4,
                          checkpoint_every=2)
    hist = grpo.train_grpo(policy, ref, S.prompts(8, 4), lambda i, c: S.low_share(c), {3}, cfg, out_dir=out,
                           resume=resume, log=log)
    return [r["loss"] for r in hist] + [r["reward"] for r in hist], policy


def _ppo(out, resume, log):
    from dodai.finetune import ppo

    policy, ref = S.tiny_lm(99 if resume else 5), S.tiny_lm(5)
    cfg = ppo.PPOConfig(steps=4, batch_size=4, max_new_tokens=5, lr=1e-2, ppo_epochs=2, target_kl=1.0, horizon=100,
                        seed=5, checkpoint_every=1)
    hist, head = ppo.train_ppo(policy, ref, S.prompts(8, 5),
                               lambda idx, ps, cs: torch.tensor([S.low_share(c) for c in cs]), {3}, cfg,
                               out_dir=out, resume=resume, log=log)
    return [(r["pg_loss"], r["vf_loss"], r["beta"], r["reward"]) for r in hist], torch.nn.ModuleList([policy, head])


def _mlm(out, resume, log):
    from dodai.models.bert import BertConfig
    from dodai.models.bert_heads import BertForMaskedLM
    from dodai.train.mlm import pretrain_mlm

    torch.manual_seed(99 if resume else 0)
    m = BertForMaskedLM(BertConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=16, add_pooler=False))
    blocks = S._bert_blocks()
    r = pretrain_mlm(m, blocks[16:], mask_id=4, special_ids=[0, 1, 2, 3], steps=6, batch_size=8, lr=1e-2,
                     val_blocks=blocks[:16], eval_every=2, seed=1, out_dir=out, resume=resume, log=log)
    return [v for _, v in r["curve"]] + [v for _, v in r["val"]], m


def _classifier(out, resume, log):
    from dodai.models.bert import BertConfig
    from dodai.models.bert_heads import BertForSequenceClassification, finetune_classifier

    torch.manual_seed(99 if resume else 0)
    g = torch.Generator().manual_seed(1)
    rows = [[2, *torch.randint(12, 40, (5,), generator=g).tolist(), 3] for _ in range(24)]
    cfg = BertConfig(vocab_size=41, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16)
    clf = BertForSequenceClassification(cfg, num_labels=2, pooling="mean")  # dropout on: its RNG is checkpointed
    r = finetune_classifier(clf, rows, [i % 2 for i in range(24)], pad_id=0, epochs=2, batch_size=8, lr=3e-3,
                            seed=2, out_dir=out, resume=resume, checkpoint_every=2, log=log)
    return [v for _, v in r["curve"]], clf


def _vlm(out, resume, log):
    from dodai.models.gpt import GPTConfig
    from dodai.models.vlm import VLM, VLMConfig
    from dodai.models.vlm import fit as vlm_fit

    lm = GPTConfig(vocab_size=20, block_size=24, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(99 if resume else 0)
    m = VLM(VLMConfig(image_size=8, patch_size=2, vit_width=16, vit_layers=1, vit_heads=2, lm=lm))
    g = torch.Generator().manual_seed(1)

    def batches(i):  # a stateful sampler: replayed on resume
        t = torch.randint(0, 20, (4, 7), generator=g)
        return torch.rand(4, 1, 8, 8, generator=g), t[:, :-1], t[:, 1:]

    hist = vlm_fit(m, batches, 6, lr=3e-3, warmup=2, log_every=1, out_dir=out, resume=resume, checkpoint_every=2,
                   log=log)
    return [v for _, v in hist], m


LOOPS = {"sft_full": _sft(False), "sft_lora": _sft(True), "dpo": _dpo, "reward": _reward, "grpo": _grpo,
         "ppo": _ppo, "mlm": _mlm, "classifier": _classifier, "vlm": _vlm}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_resume_after_a_crash_is_bitwise(name, tmp_path, monkeypatch):
    """Kill each loop after its step-4 checkpoint (PPO: iteration 2), resume with freshly initialised weights:
    the rest of the run equals the uninterrupted run exactly, and so do the final weights."""
    from dodai.finetune import grpo, ppo

    monkeypatch.setattr(grpo, "sample_batch", S.fake_sample_batch)  # rollouts: a deterministic stand-in
    monkeypatch.setattr(ppo, "sample_batch", S.fake_sample_batch)
    run = LOOPS[name]
    full, model_full = run(tmp_path / "full", False, None)
    stop = 3 if name == "ppo" else 5
    with pytest.raises(Stop):
        run(tmp_path / "part", False, _stop_at(stop))
    assert ck.find_checkpoint(tmp_path / "part") is not None
    resumed, model_resumed = run(tmp_path / "part", True, None)
    done = 2 if name == "ppo" else 4  # steps before the checkpoint; their rows are not repeated
    if name == "mlm":  # 6 step losses, then the evaluations at steps 2, 4, 6: the resumed run repeats only 6
        assert resumed == full[done:6] + full[8:]
    elif name == "grpo":
        assert resumed == full[done:6] + full[6 + done:]
    else:
        assert resumed == full[done:]
    assert len(resumed) > 0
    assert _equal_weights(model_full, model_resumed)


def test_a_stateful_batch_closure_is_replayed_on_resume(tmp_path):
    """A batch function with hidden state (a closure over a generator, as the experiments use) has no
    state_dict: fit draws the micro-batches before the checkpoint again, so the data position is exact."""
    cfg = FitConfig(steps=8, lr=1e-2, grad_accum=2, eval_every=3, schedule="cosine", warmup=2)
    torch.manual_seed(0)
    full_model = S.TinyLM(S.TinyConfig(block_size=8))
    full = fit(full_model, _lm_batches(), _lm_loss, cfg, out_dir=tmp_path / "a")
    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(S.TinyLM(S.TinyConfig(block_size=8)), _lm_batches(), _lm_loss, cfg, out_dir=tmp_path / "b",
            on_step=_stop_at(5))
    torch.manual_seed(7)
    model = S.TinyLM(S.TinyConfig(block_size=8))
    res = fit(model, _lm_batches(), _lm_loss, cfg, out_dir=tmp_path / "b", resume=True)
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full.history[3:]]
    assert _equal_weights(full_model, model)
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 8]  # the rows after the checkpoint were dropped, then rewritten


# ------------------------------------------------------------------------------------------------ parallel
def test_ddp_and_fsdp_with_two_processes_equal_one_process(tmp_path):
    """2 gloo processes (torchrun) vs 1 process: a tiny LM with accumulation and clipping under DDP and under
    FSDP2 (fully_shard), an FSDP2 run killed after its checkpoint and resumed, DPO (a fine-tuning path), and
    ``dodai pretrain --parallel fsdp`` (GPT with tied embeddings; checkpoints at steps 0, 10, 20 gathered from
    the shards; a final model folder that loads with the same weights)."""
    import random

    import fit_ddp_worker as W

    from dodai.cli import main
    from dodai.models import load_model
    from dodai.train.distributed import DistInfo

    rng = random.Random(0)
    words = "the quick brown fox jumps over the lazy dog while a wizard brews".split()
    text = tmp_path / "w.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)))
    out = tmp_path / "got.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO / "tests" / "fit_ddp_worker.py"), str(out), str(tmp_path), str(text)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.read_text())
    assert got["world_size"] == 2
    one = W.lm_run(DistInfo())
    assert one["loss"][-1] < one["loss"][0] - 0.2  # it trained
    for name in ("ddp", "fsdp"):
        for key in ("loss", "fixed"):
            assert got[name][key] == pytest.approx(one[key], abs=1e-5), (name, key)
    assert got["fsdp_resumed"]["loss"] == pytest.approx(one["loss"][4:], abs=1e-5)
    assert got["fsdp_resumed"]["fixed"] == pytest.approx(one["fixed"][3:], abs=1e-5)  # the event at step 6
    dpo_one = W.dpo_run()
    for key in ("loss", "margin", "accuracy"):
        assert got["dpo"][key] == pytest.approx(dpo_one[key], abs=1e-5), key
    assert dpo_one["loss"][-1] < dpo_one["loss"][0]
    assert main([*W.pretrain_args(text), "--out", str(tmp_path / "one")]) == 0
    a = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 10, 20]
    assert a[-1]["val_loss"] < a[0]["val_loss"] - 0.3  # it trained
    for x, y in zip(a, b):
        assert (y["train_loss"], y["val_loss"]) == pytest.approx((x["train_loss"], x["val_loss"]), abs=1e-5)
    m1, _ = load_model(tmp_path / "one")
    m2, _ = load_model(tmp_path / "pretrain")
    for (k, v), w in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(v, w, atol=1e-5, rtol=0, msg=k)


def test_gradient_accumulation_equals_the_big_batch():
    def run(rows, accum):
        torch.manual_seed(0)
        m = S.TinyLM(S.TinyConfig(block_size=8))
        big = _lm_batches(rows=8)
        cache = {}

        def batches(i):  # micro-batch i is a slice of the same 8-row draw
            k, j = divmod(i * rows, 8)
            if k not in cache:
                cache[k] = big(k)
            return tuple(t[j:j + rows] for t in cache[k])

        # SGD: the update is linear in the gradient. (Adam would turn the float noise of gradients that are zero
        # in exact arithmetic, such as the key bias's, into full-size steps of either sign.)
        fit(m, batches, _lm_loss, FitConfig(steps=5, optimizer="sgd", lr=0.5, momentum=0.9, grad_accum=accum,
                                            grad_clip=1.0))
        return m

    a, b = run(8, 1), run(4, 2)
    torch.manual_seed(0)
    assert not _equal_weights(a, S.TinyLM(S.TinyConfig(block_size=8)))  # it moved from its initial weights
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------------ time budget
def test_time_budget_drives_the_schedule_and_ends_on_time(tmp_path):
    torch.manual_seed(0)
    budget = 2.0
    cfg = FitConfig(time_budget_s=budget, lr=1e-2, min_lr=1e-3, schedule="cosine", warmup=0.2, evals=4)
    t0 = time.time()
    res = fit(S.TinyLM(S.TinyConfig(block_size=8)), _lm_batches(), _lm_loss, cfg, out_dir=tmp_path,
              evaluate=lambda m: {"val": 1.0})
    wall = time.time() - t0
    assert res.stopped_by == "time" and res.steps > 20
    assert budget - 0.5 < wall < budget + 1.0  # ends within about a step (plus the final event) of the budget
    lrs = [r["lr"] for r in res.history]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert lrs[:peak + 1] == sorted(lrs[:peak + 1])  # warmup: rises with elapsed time
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True)  # then decays
    assert lrs[0] < 0.3 * 1e-2 and lrs[peak] > 0.9e-2 and lrs[-1] < 0.25e-2
    assert res.history[peak]["seconds"] < 0.35 * budget  # the warmup took its 20 % of the budget
    steps_at = [e["step"] for e in res.evals]
    assert steps_at[0] == 0 and 4 <= len(steps_at) <= 6  # at the start, at every quarter, at the end
    assert json.loads((tmp_path / "ckpt" / "COMPLETE").read_text())["step"] == res.steps


# ------------------------------------------------------------------------------------------------ NaN, errors
class NanAfter(S.TinyLM):
    def __init__(self, n):
        super().__init__(S.TinyConfig(block_size=8))
        self.n, self.calls = n, 0

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        self.calls += int(self.training)
        if self.training and self.calls > self.n:
            loss = loss * float("nan")
        return logits, loss


def test_nan_halts_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(DodaiError, match=r"at step 7.*last good checkpoint \(step 6\)") as e:
        fit(NanAfter(7), _lm_batches(), _lm_loss, FitConfig(steps=20, eval_every=3), out_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert json.loads((tmp_path / "ckpt" / "COMPLETE").read_text())["step"] == 6
    res = fit(NanAfter(7), _lm_batches(), _lm_loss, FitConfig(steps=20, on_nan="stop"))
    assert res.stopped_by == "nan" and res.steps == 7 and len(res.history) == 8


def test_bad_input_is_a_one_line_error(tmp_path):
    m = S.TinyLM(S.TinyConfig(block_size=8))
    cases = [
        (lambda: fit(m, _lm_batches(), _lm_loss, FitConfig()), "steps or a time budget"),
        (lambda: fit(m, _lm_batches(), _lm_loss, FitConfig(steps=2, grad_accum=0)), "grad-accum"),
        (lambda: fit(m, _lm_batches(), _lm_loss, FitConfig(steps=2, dtype="float16")), "dtype"),
        (lambda: fit(m, _lm_batches(), _lm_loss, FitConfig(steps=2, optimizer="lion")), "optimizer"),
        (lambda: fit(m, 5, _lm_loss, FitConfig(steps=2)), "batches must be"),
        (lambda: fit(m, [_lm_batches()(0)], _lm_loss, FitConfig(steps=2)), "ran out after 1"),
        (lambda: fit(m, _lm_batches(), _lm_loss, FitConfig(steps=2), out_dir=tmp_path / "x", resume=True),
         "no complete checkpoint"),
    ]
    for call, msg in cases:
        with pytest.raises(DodaiError, match=msg) as e:
            call()
        assert "\n" not in str(e.value)
    frozen = S.TinyLM()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(DodaiError, match="nothing to train"):
        fit(frozen, _lm_batches(), _lm_loss, FitConfig(steps=2))
    # a checkpoint of another model: one line, not a traceback
    fit(S.TinyLM(S.TinyConfig(block_size=8)), _lm_batches(), _lm_loss, FitConfig(steps=2), out_dir=tmp_path / "y")
    with pytest.raises(DodaiError, match="does not fit"):
        fit(S.TinyLM(S.TinyConfig(block_size=8, n_embd=8)), _lm_batches(), _lm_loss, FitConfig(steps=4),
            out_dir=tmp_path / "y", resume=True)


def test_bf16_autocast_trains():
    torch.manual_seed(0)
    res = fit(S.TinyLM(S.TinyConfig(block_size=8)), _lm_batches(), _lm_loss,
              FitConfig(steps=30, lr=1e-2, dtype="bfloat16"))
    assert res.history[-1]["loss"] < res.history[0]["loss"] - 0.3


# ------------------------------------------------------------------------------------------------ progress
class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_in_a_log_is_a_line_per_ten_percent_and_per_eval():
    s = _Stream(tty=False)
    p = Progress(500, "train", stream=s)
    for step in range(1, 501):
        p.update(step, step, {"loss": 1.0 / step})
        if step % 250 == 0:
            p.write(f"step {step}: val 1.0")
    p.close()
    text = s.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 12  # 10 progress lines + 2 evaluations, not 500
    assert lines[0].startswith("train: step 50/500 10%")
    assert "ETA" in lines[0] and "step/s" in lines[0]


def test_progress_on_a_terminal_is_a_live_bar():
    s = _Stream(tty=True)
    p = Progress(50, "train", stream=s)
    for step in range(1, 51):
        p.update(step, step, {"loss": 0.5})
    p.close()
    assert "\r" in s.getvalue() and "50/50" in s.getvalue()


def test_fit_progress_goes_to_stderr_as_lines_when_not_a_tty(capsys):
    fit(S.TinyLM(S.TinyConfig(block_size=8)), _lm_batches(), _lm_loss,
        FitConfig(steps=200, eval_every=100, eval_at_start=False, quiet=False), evaluate=lambda m: {"val": 2.0})
    err = capsys.readouterr().err
    assert "\r" not in err
    assert len(err.splitlines()) <= 13 and "step 100: val 2.0000" in err


# ------------------------------------------------------------------------------------------------ compile
def test_compile_equals_eager_on_a_tiny_model():
    """torch.compile (TorchInductor; on CPU it generates C++) of the training step gives the eager losses
    and weights within float tolerance (fused kernels may sum in another order)."""
    class Bigram(torch.nn.Module):  # the fewer kernels, the less C++ to compile: seconds, not a minute
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(S.V, 16), torch.nn.Linear(16, S.V)

        def forward(self, x, y):
            logits = self.head(torch.tanh(self.emb(x)))
            return logits, torch.nn.functional.cross_entropy(logits.view(-1, S.V), y.reshape(-1))

    def run(compile_):
        torch.manual_seed(0)
        m = Bigram()
        res = fit(m, _lm_batches(), _lm_loss, FitConfig(steps=4, optimizer="sgd", lr=0.5, momentum=0.9,
                                                        grad_clip=1.0, compile=compile_))
        return [r["loss"] for r in res.history], m

    from torch._dynamo.utils import counters

    counters.clear()
    (eager, me), (comp, mc) = run(False), run(True)
    assert counters["stats"]["unique_graphs"] >= 1  # it really compiled (no silent fallback to eager)
    assert eager[-1] < eager[0]
    assert comp == pytest.approx(eager, rel=1e-4)
    for (k, x), y in zip(me.state_dict().items(), mc.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)


def test_compile_without_a_compiler_is_a_clean_error(monkeypatch):
    import dodai.train.fit as F

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(F.shutil, "which", lambda name: None)
    with pytest.raises(DodaiError, match="needs a C\\+\\+ compiler"):
        fit(S.TinyLM(), _lm_batches(), _lm_loss, FitConfig(steps=1, compile=True))


def test_copied_model_is_left_alone_by_the_probe_style_run():
    """fit trains the module it is given, in place, and nothing else (a deep copy stays as it was)."""
    torch.manual_seed(0)
    m = S.TinyLM(S.TinyConfig(block_size=8))
    before = copy.deepcopy(m)
    fit(copy.deepcopy(m), _lm_batches(), _lm_loss, FitConfig(steps=2, lr=1e-2))
    assert _equal_weights(m, before)
