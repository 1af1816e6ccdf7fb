"""dodai pretrain vs nanoGPT's README CPU recipe on tiny-shakespeare (char vocabulary), back to back.

    .venv/bin/python benchmarks/nanogpt.py --nanogpt /work/ext/nanoGPT \
        --data /work/shared/data/tinyshakespeare.txt [--iters 2000] [--threads 1] [--repeats 1]

nanoGPT (https://github.com/karpathy/nanoGPT) must be checked out outside this repo. Its
``data/shakespeare_char/prepare.py`` downloads input.txt only when missing, so this script copies
``--data`` there first and runs prepare.py (char vocabulary of the whole text, first 90 % train).

Runs, each as its own process with the same thread count:

(a) nanoGPT ``train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
    --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
    --max_iters=N --lr_decay_iters=N --dropout=0.0`` and dodai's identical configuration
    (``dodai pretrain --tokenizer char`` with the same flags; nanoGPT's config also sets lr 1e-3 → 1e-4,
    warmup 100, β2 0.99, eval every 250 — dodai's defaults). Reported: median ms/iter (nanoGPT: its
    per-iteration log without the iterations that include an evaluation; dodai: the median of the
    per-interval medians in metrics.jsonl, which exclude evaluation), final val loss, process wall time.
    With ``--compile`` (the default; ``--no-compile`` to skip) dodai's identical configuration runs a second
    time with ``dodai pretrain --compile`` (the training step through torch.compile / TorchInductor; same
    model, data order and schedule, so the same loss curve up to rounding).
(b) dodai's best recipes (``--best`` flag sets, tried in order): process wall time and final val loss,
    against nanoGPT's final val loss and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128, dropout=0.0)

# dodai's candidate recipes for (b): RoPE (Su et al. 2021), a higher peak lr and a shorter cosine.
# (name -> (fraction of --iters to train, extra flags)); the schedule's decay ends at the last step.
BEST = {
    "rope-lr2e-3-45%": (0.45, ["--pos-encoding", "rope", "--learning-rate", "2e-3", "--warmup-iters", "50"]),
    "rope-lr3e-3-40%": (0.40, ["--pos-encoding", "rope", "--learning-rate", "3e-3", "--warmup-iters", "50"]),
    # the same recipe with the training step compiled (TorchInductor; its compile time is in the wall time)
    "rope-lr3e-3-40%-compile": (0.40, ["--pos-encoding", "rope", "--learning-rate", "3e-3", "--warmup-iters", "50",
                                       "--compile"]),
}


def _env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))


def run_nanogpt(ng: Path, iters: int, threads: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="nanogpt-out-"))
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           "--eval_iters=20", "--log_interval=1", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
           f"--out_dir={out}"] + [f"--{k}={v}" for k, v in RECIPE.items()]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ng, env=_env(threads), capture_output=True, text=True)
    wall = time.time() - t0
    shutil.rmtree(out, ignore_errors=True)
    if r.returncode != 0:
        raise SystemExit(f"nanoGPT failed:\n{r.stderr[-2000:]}")
    pat = r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms"
    times = [(int(m[1]), float(m[2])) for m in re.finditer(pat, r.stdout, re.M)]
    evals = [(int(m[1]), float(m[2]), float(m[3]))
             for m in re.finditer(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", r.stdout, re.M)]
    # iteration k's time includes the evaluation done at the top of iteration k (k % 250 == 0); drop those
    pure = [t for k, t in times if k % 250 != 0]
    return {"ms_per_iter": statistics.median(pure), "val_loss": evals[-1][2], "train_loss": evals[-1][1],
            "step": evals[-1][0], "wall_s": wall, "curve": [(k, round(v, 4)) for k, _, v in evals],
            "cmd": " ".join(cmd)}


def run_dodai(data: Path, iters: int, threads: int, extra: list[str] | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="dodai-bench-"))
    cmd = [sys.executable, "-m", "dodai", "pretrain", "--data", str(data), "--tokenizer", "char",
           "--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
           "--dropout", "0", "--eval-iters", "20", "--eval-interval", "250", "--max-iters", str(iters),
           "--quiet", "--threads", str(threads), "--out", str(out)] + (extra or [])
    # later flags win in argparse, so `extra` can override max-iters etc.; lr-decay follows max-iters
    t0 = time.time()
    r = subprocess.run(cmd, cwd=REPO, env=_env(threads), capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        raise SystemExit(f"dodai failed:\n{r.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    meds = [r_["ms_per_iter"] for r_ in rows if "ms_per_iter" in r_]
    return {"ms_per_iter": statistics.median(meds), "val_loss": rows[-1]["val_loss"],
            "train_loss": rows[-1]["train_loss"], "step": rows[-1]["step"], "wall_s": wall,
            "train_elapsed_s": rows[-1]["elapsed_s"], "curve": [(r_["step"], round(r_["val_loss"], 4)) for r_ in rows],
            "cmd": " ".join(cmd)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", required=True, type=Path, help="nanoGPT checkout (outside this repo)")
    ap.add_argument("--data", required=True, type=Path, help="tinyshakespeare.txt")
    ap.add_argument("--iters", type=int, default=2000, help="iterations of the identical-config runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every run")
    ap.add_argument("--repeats", type=int, default=1, help="back-to-back repeats of (a)")
    ap.add_argument("--best", nargs="*", default=list(BEST), help=f"recipes for (b), from {list(BEST)}")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="in (a), also run dodai's identical configuration with --compile")
    args = ap.parse_args()

    d = args.nanogpt / "data" / "shakespeare_char"
    if not (d / "input.txt").is_file() or (d / "input.txt").read_bytes() != args.data.read_bytes():
        shutil.copyfile(args.data, d / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=d, check=True, capture_output=True)

    res = {"a": [], "b": {}}
    for i in range(args.repeats):
        ng = run_nanogpt(args.nanogpt, args.iters, args.threads)
        dd = run_dodai(args.data, args.iters, args.threads)
        row = {"nanogpt": ng, "dodai": dd, "load": os.getloadavg()}
        if args.compile:
            row["dodai_compile"] = run_dodai(args.data, args.iters, args.threads, ["--compile"])
        res["a"].append(row)
        for name in ("dodai", "dodai_compile"):
            if name in row:
                d = row[name]
                print(f"[a{i}] nanoGPT {ng['ms_per_iter']:.1f} ms/iter val {ng['val_loss']:.4f} "
                      f"curve {ng['curve']} wall "
                      f"{ng['wall_s']:.1f}s | {name} {d['ms_per_iter']:.1f} ms/iter val {d['val_loss']:.4f} wall "
                      f"{d['wall_s']:.1f}s | speed ratio (nanoGPT ms / dodai ms) "
                      f"{ng['ms_per_iter'] / d['ms_per_iter']:.2f}x; curve {d['curve']}", flush=True)
    ng_ms = statistics.median(x["nanogpt"]["ms_per_iter"] for x in res["a"])
    dd_ms = statistics.median(x["dodai"]["ms_per_iter"] for x in res["a"])
    if args.compile:
        dc_ms = statistics.median(x["dodai_compile"]["ms_per_iter"] for x in res["a"])
        print(f"(a) median ms/iter: dodai --compile {dc_ms:.2f}; dodai --compile speed = {ng_ms / dc_ms:.2f}x nanoGPT")
    ng_wall = statistics.median(x["nanogpt"]["wall_s"] for x in res["a"])
    ng_val = statistics.median(x["nanogpt"]["val_loss"] for x in res["a"])
    print(f"(a) median ms/iter: nanoGPT {ng_ms:.2f}, dodai {dd_ms:.2f}; dodai speed = {ng_ms / dd_ms:.2f}x nanoGPT")
    for name in args.best:
        frac, flags = BEST[name]
        n = max(1, round(frac * args.iters))
        b = run_dodai(args.data, n, args.threads, flags + ["--eval-interval", str(max(1, n // 4))])
        res["b"][name] = b
        print(f"(b) {name}: val {b['val_loss']:.4f} (target {ng_val:.4f}) wall {b['wall_s']:.1f}s = "
              f"{b['wall_s'] / ng_wall:.0%} of nanoGPT's {ng_wall:.1f}s; curve {b['curve']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
