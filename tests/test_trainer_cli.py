"""`dodai pretrain` end to end: a real run killed mid-way and resumed, and 2-process DDP vs 1 process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dodai.cli import main
from dodai.train.trainer import read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--eval-iters", "2",
        "--warmup-iters", "5", "--learning-rate", "3e-3", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread avoids OpenMP spin-waits on a busy machine; restored afterwards
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    # A small English-like text that needs no optional data.
    words = ("the quick brown fox jumps over the lazy dog while a wizard quietly brews seven odd potions "
             "and every morning the baker sells bread to patient neighbours ").split()
    import random

    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(800))
    p = tmp_path_factory.mktemp("data") / "words.txt"
    p.write_text(text)
    return p


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _losses(run: Path):
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in read_metrics(run)]


def test_kill_and_resume_gives_bitwise_equal_losses(text_file, tmp_path):
    args = ["pretrain", "--data", str(text_file), "--tokenizer", "char", *TINY, "--batch-size", "4",
            "--max-iters", "150", "--eval-interval", "10"]
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0  # the uninterrupted run, in-process
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dodai", *args, "--out", str(run)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = run / "ckpt" / "COMPLETE"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if marker.is_file():
                try:
                    if json.loads(marker.read_text())["step"] >= 20:
                        break
                except (ValueError, OSError):
                    pass  # the marker is being swapped in right now
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_at = max(r["step"] for r in read_metrics(run))
    assert killed_at < 150
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists()  # it really died mid-way
    assert main([*args, "--out", str(run), "--resume"]) == 0
    a, b = _losses(ref), _losses(run)
    assert [s for s, *_ in a] == list(range(0, 151, 10))
    assert a == b  # bitwise: exact float equality of every logged loss


def test_resume_without_checkpoint_is_an_error(text_file, tmp_path, capsys):
    rc = main(["pretrain", "--data", str(text_file), *TINY, "--max-iters", "2", "--out", str(tmp_path / "x"),
               "--resume"])
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err


def test_two_process_ddp_matches_one_process(text_file, tmp_path):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    args = ["pretrain", "--data", str(text_file), *TINY, "--batch-size", "8", "--max-iters", "30",
            "--eval-interval", "10", "--learning-rate", "1e-2"]
    one = tmp_path / "one"
    assert main([*args, "--out", str(one)]) == 0
    two = tmp_path / "two"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "dodai", *args, "--out", str(two)],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang kills both ranks too
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((two / "train_config.json").read_text())["world_size"] == 2
    a, b = read_metrics(one), read_metrics(two)
    assert [x["step"] for x in a] == [x["step"] for x in b] == [0, 10, 20, 30]
    assert a[-1]["val_loss"] < a[0]["val_loss"] - 0.5  # it trained
    for x, y in zip(a, b):
        assert y["train_loss"] == pytest.approx(x["train_loss"], abs=1e-5)
        assert y["val_loss"] == pytest.approx(x["val_loss"], abs=1e-5)


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "nope.txt"), *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and err.strip().count("\n") == 0
