"""`dodai speedrun`: the time rule (the budget is the budget, also when steps are slow), progress lines in a
log, the end-to-end report with baselines, the run folder as a model for `generate` / `chat`, the size rule,
and the baselines' arithmetic on inputs small enough to check by hand."""

from __future__ import annotations

import bz2
import json
import lzma
import math
import time

import pytest
import torch

from dodai.errors import DodaiError
from dodai.speedrun import CPU_LADDER, choose_shape, params_of, speedrun
from dodai.speedrun_baselines import (
    COMPRESSORS,
    compressor_baselines,
    compressor_bits_per_byte,
    lm_bits_per_byte,
    mixture_bits_per_byte,
    ngram_baselines,
    ngram_bits_per_byte,
)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    """~60 kB of the built-in corpus as one user file (the --data path): small enough for seconds-long runs."""
    from dodai.data.prepare import load_split

    path = tmp_path_factory.mktemp("data") / "docs.txt"
    path.write_text(load_split("python-docs", 0.1, seed=0).train[:60_000], encoding="utf-8")
    return path


def _slow_loss(monkeypatch, seconds: float):
    import dodai.train.trainer as trainer

    real = trainer.lm_loss

    def slow(model, batch):
        time.sleep(seconds)
        return real(model, batch)

    monkeypatch.setattr(trainer, "lm_loss", slow)


@pytest.mark.parametrize("slow_s", [0.0, 0.25])
def test_training_uses_the_budget_also_with_slow_steps_and_logs_a_few_lines(tmp_path, small_text, monkeypatch,
                                                                            capsys, slow_s):
    if slow_s:
        _slow_loss(monkeypatch, slow_s)  # every optimizer step (and the probe's) takes >= 0.25 s
    budget_s = 0.1 * 60
    res = speedrun(tmp_path / "sr", minutes=0.1, seed=0, vocab_size=300, data=small_text, threads=1, size="xs",
                   baselines=False, nanogpt=False)
    # the time rule: training (with its evaluations) ends within 5 % or 1 s of the budget, whatever a step costs
    assert abs(res["train_s"] - budget_s) <= max(0.05 * budget_s, 1.0), res["train_s"]
    assert res["stopped_by"] == "time"
    if slow_s:
        assert res["steps"] <= budget_s / slow_s + 1  # the sleep did slow the steps down
    else:
        assert res["steps"] >= 5
    # stderr is not a terminal here: a bounded number of plain lines, no carriage-return bar
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    evals = [ln for ln in lines if ln.startswith("step ")]
    assert 8 <= len(evals) <= 14, evals  # ~10 evaluations per budget, plus the first and the last
    assert len(lines) <= 45, lines


def test_end_to_end_report_baselines_and_the_run_folder_is_a_model(tmp_path, small_text, capsys):
    out = tmp_path / "sr"
    res = speedrun(out, minutes=0.06, seed=0, quiet=True, vocab_size=300, data=small_text, threads=1, size="xs")
    report = (out / "report.md").read_text(encoding="utf-8")
    for section in ("Why this model", "Baselines", "Loss vs time", "Samples", "Tokenizer", "xz -9e",
                    "Kneser-Ney", "nanoGPT recipe", "AMD" if "AMD" in res["machine"]["cpu"] else "Machine"):
        assert section in report, section
    assert (out / "loss_vs_time.png").stat().st_size > 5000
    saved = json.loads((out / "results.json").read_text())
    assert saved["val_bpb"] == res["val_bpb"]
    # the headline ratios are the model's bits/byte over each baseline's
    kinds = {b["kind"] for b in res["baselines"]}
    assert kinds == {"compressor", "n-gram", "nanoGPT"}
    for b in res["baselines"]:
        assert b["speedrun_ratio"] == pytest.approx(res["val_bpb"] / b["bits_per_byte"])
    xz = next(b for b in res["baselines"] if b["baseline"].startswith("xz"))
    assert res["ratio_to_xz"] == pytest.approx(res["val_bpb"] / xz["bits_per_byte"])
    assert 0.5 < xz["bits_per_byte"] < 4  # English prose with its own training text as context
    mix = res["mixture_with_kneser_ney"]
    assert mix["with"].startswith("5-gram") and 0 < mix["bits_per_byte"] < 12
    assert mix["ratio_to_xz"] == pytest.approx(mix["bits_per_byte"] / xz["bits_per_byte"])
    assert "logprobs" not in saved["baselines"][0]
    # it learned something in seconds: below the uniform distribution's bits/byte, and below where it started
    uniform_bpb = math.log2(res["tokenizer"]["vocab_size"]) / res["tokenizer"]["val_bytes_per_token"]
    assert res["val_bpb"] < uniform_bpb
    assert res["evals"][-1]["val_loss"] < res["initial_val_loss"]
    assert res["nanogpt"]["steps"] >= 1 and res["nanogpt"]["train_s"] <= 0.06 * 60 + 1.0
    # samples: three prompts from the validation text, two temperatures each
    assert len(res["samples"]) == 6 and {s["temperature"] for s in res["samples"]} == {0.7, 1.0}
    assert all(s["text"].startswith(s["prompt"]) and len(s["text"]) > len(s["prompt"]) for s in res["samples"])
    assert res["machine"]["torch_threads"] == 1 and res["machine"]["cpu"]
    # the run folder is a model folder: dodai generate and dodai chat work on it
    from dodai.cli import main

    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--prompt", "Return the", "--max-new-tokens", "8",
                 "--seed", "0"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() and "8 tokens" in cap.err  # the continuation is printed, 8 new tokens
    import io
    import sys

    stdin = sys.stdin
    sys.stdin = io.StringIO("Return the\n/exit\n")
    try:
        rc = main(["chat", "--model", str(out), "--max-new-tokens", "8", "--seed", "0"])
    finally:
        sys.stdin = stdin
    assert rc == 0
    assert capsys.readouterr().out.strip()


def test_size_rule_grows_with_throughput_and_budget():
    probe = next(s for s in CPU_LADDER if s[0] == "m")
    slow, _ = choose_shape(CPU_LADDER, probe, 2_000, 300, 2048)
    fast, rows = choose_shape(CPU_LADDER, probe, 40_000, 300, 2048)
    longer, _ = choose_shape(CPU_LADDER, probe, 2_000, 3000, 2048)
    order = [s[0] for s in CPU_LADDER]
    assert order.index(slow[0]) < order.index(fast[0])
    assert order.index(slow[0]) < order.index(longer[0])
    # the chosen shape meets the tokens-per-parameter rule; the next one up does not
    i = order.index(fast[0])
    assert rows[i]["fits"] and (i == len(rows) - 1 or not rows[i + 1]["fits"])
    # the probe shape's prediction is the probe itself
    assert rows[order.index("m")]["predicted_tokens_per_s"] == pytest.approx(40_000, rel=1e-6)
    assert params_of(probe, 2048) == 12 * 4 * 128 * 128 + 2048 * 128 + 9 * 128


# ---------------------------------------------------------------- baselines' arithmetic, by hand
def test_compressor_bits_per_byte_is_the_size_it_adds_to_the_context():
    ctx, text = b"hello world " * 50, b"hello world"
    # an identity "compressor" adds exactly the text's bytes: 8 bits per byte
    assert compressor_bits_per_byte(ctx, text, lambda b: b) == 8.0
    # one that stores 1 byte per 4 input bytes (rounding up): 3 bytes for 11 -> 24 bits / 11 bytes
    assert compressor_bits_per_byte(b"x" * 8, text, lambda b: b"." * math.ceil(len(b) / 4)) == pytest.approx(
        24 / 11)
    # real compressors: a text that repeats the context costs far less than on its own
    for fn in COMPRESSORS.values():
        given = compressor_bits_per_byte(ctx, text, fn)
        alone = 8 * len(fn(text)) / len(text)
        assert given < alone
    assert compressor_bits_per_byte(ctx, text, COMPRESSORS["xz -9e"]) == 8 * (
        len(lzma.compress(ctx + text, preset=9 | lzma.PRESET_EXTREME))
        - len(lzma.compress(ctx, preset=9 | lzma.PRESET_EXTREME))) / len(text)
    rows = compressor_baselines("abc " * 100, "abc abc")
    bz = next(r for r in rows if r["baseline"].startswith("bzip2"))
    ctx2 = ("abc " * 100 + "\n\n").encode()
    assert bz["bits_per_byte"] == 8 * (len(bz2.compress(ctx2 + b"abc abc", 9)) - len(bz2.compress(ctx2, 9))) / 7
    with pytest.raises(DodaiError):
        compressor_bits_per_byte(ctx, b"", lambda b: b)


def test_unigram_and_kneser_ney_bits_per_byte_by_hand():
    # unigram, add-one, V = 2, train 0 0 1 1: p(0) = p(1) = 3/6; val "0 1" of 4 bytes: 2 bits / 4 bytes
    rows = ngram_baselines([0, 0, 1, 1], [0, 1], n_bytes=4, vocab_size=2, orders=(2,))
    uni = next(r for r in rows if r["baseline"].startswith("unigram"))
    assert uni["bits_per_byte"] == pytest.approx(0.5)
    # V = 3, train 0 0 0 1: p(0) = 4/7, p(2) = 1/7; val "0 2" of 3 bytes
    rows = ngram_baselines([0, 0, 0, 1], [0, 2], n_bytes=3, vocab_size=3, orders=())
    assert rows[0]["bits_per_byte"] == pytest.approx((-math.log2(4 / 7) - math.log2(1 / 7)) / 3)
    # bigram Kneser-Ney (D = 0.75), train 0 1 0 1 (BOS-padded), V = 2. Unigram continuation counts: token 0
    # follows BOS and 1, token 1 follows 0 only: p1(0) = 0.75 * 1/2 ... computed here from the formula:
    # lower order: counts N1+(. w): w=0 -> 2 (BOS, 1), w=1 -> 1 (0); total 3, distinct 2
    p1 = {w: max(c - 0.75, 0) / 3 + 0.75 * 2 / 3 * 0.5 for w, c in ((0, 2), (1, 1))}
    # history BOS: saw 0 once; history 0: saw 1 twice; history 1: saw 0 once
    p_0_bos = max(1 - 0.75, 0) / 1 + 0.75 * 1 / 1 * p1[0]
    p_1_0 = max(2 - 0.75, 0) / 2 + 0.75 * 1 / 2 * p1[1]
    from dodai.basics.ngram import NGramLM

    lm = NGramLM(2, "kn", vocab_size=2).fit([0, 1, 0, 1])
    assert ngram_bits_per_byte(lm, [0, 1], n_bytes=5) == pytest.approx((-math.log2(p_0_bos) - math.log2(p_1_0)) / 5)
    with pytest.raises(DodaiError):
        ngram_bits_per_byte(lm, [0, 1], n_bytes=0)


def test_mixture_bits_per_byte_by_hand():
    a = [math.log(0.5), math.log(0.25)]
    b = [math.log(0.25), math.log(0.25)]
    # 0.5 * 0.5 + 0.5 * 0.25 = 0.375, then 0.25: (-log2 0.375 - log2 0.25) / 2 bytes
    assert mixture_bits_per_byte(a, b, 2) == pytest.approx((-math.log2(0.375) + 2) / 2)
    assert mixture_bits_per_byte(a, b, 2, weight=1.0) == pytest.approx(1.5)  # all weight on a: 1 + 2 bits
    with pytest.raises(DodaiError):
        mixture_bits_per_byte(a, b[:1], 2)


class _Uniform(torch.nn.Module):
    """Uniform logits over V; counts the tokens it is asked to score."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return torch.zeros(*x.shape, self.v), None


class _Copy(torch.nn.Module):
    """Puts all mass on 'the next token equals the current one' (log p = 0 for a repeat, -inf-ish otherwise)."""

    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return torch.nn.functional.one_hot(x, self.v).float() * 50.0, None


@pytest.mark.parametrize("n,block,stride", [(1, 4, None), (7, 4, None), (10, 4, 1), (33, 8, 3), (16, 16, 16)])
def test_lm_bits_per_byte_scores_every_token_once(n, block, stride):
    ids = torch.arange(n) % 5
    # uniform over V = 8: 3 bits per token, so n tokens over 2n bytes is 1.5 bits/byte exactly
    lps = []
    assert lm_bits_per_byte(_Uniform(8), ids, 2 * n, block, stride, logprobs=lps) == pytest.approx(1.5)
    assert lps == pytest.approx([-math.log(8)] * n)


def test_lm_bits_per_byte_gives_the_first_token_its_context():
    ids = torch.full((9,), 3)
    # a model that predicts "same as before": free when the first token is predicted from a 3, one miss if not
    free = lm_bits_per_byte(_Copy(6), ids, 9, block=4, first_context=3)
    miss = lm_bits_per_byte(_Copy(6), ids, 9, block=4, first_context=0)
    assert free < 1e-6 and miss > 50 / math.log(2) / 9 * 0.9
    lps = []
    lm_bits_per_byte(_Copy(6), ids, 9, block=4, first_context=0, logprobs=lps)
    assert lps[0] < -49 and max(abs(x) for x in lps[1:]) < 1e-6  # only the first token, in order


# ---------------------------------------------------------------- bad input
def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    from dodai.cli import main

    assert main(["speedrun", "--minutes", "0", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--minutes must be > 0" in capsys.readouterr().err
    assert main(["speedrun", "--minutes", "1", "--data", str(tmp_path / "missing.txt"), "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.txt" in err and len(err.splitlines()) == 1
    assert main(["speedrun", "--size", "huge", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--size" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words", encoding="utf-8")
    assert main(["speedrun", "--data", str(tiny), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "too little text" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["speedrun", "--device", "cuda", "--out", str(tmp_path / "x"), "--quiet"]) == 2
        assert "CUDA" in capsys.readouterr().err
