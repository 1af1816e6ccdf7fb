"""Per-step cost of dodai.train.fit against the hand-written loop it replaced, side by side in one process.

    .venv/bin/python benchmarks/fit_overhead.py [--steps 150] [--repeats 3] [--threads 1]

(a) ``dodai.train.trainer.train`` before and after it moved onto fit: the pre-fit ``trainer.py`` is read
    from git (commit ``PRE_FIT``) and imported as a module; both train the nanoGPT CPU recipe's shape
    (GPT 4 layers × 4 heads × 128, block 64, batch 12) on the same char stream. Reported: the median of
    the per-interval ``ms_per_iter`` medians in metrics.jsonl (evaluation excluded), runs interleaved
    old/new ``--repeats`` times.
(b) the same for a tiny model (one attention layer, 16 wide, well under a millisecond a step), where the
    loop's own Python work is the largest share: a plain loop written out here vs fit, same model, batches
    and optimizer; mean time per step from batch to optimizer step.
(c) the loop's own cost alone: a 4-number parameter, loss = sum(p²), 3000 steps, *CPU time* of this process
    per step (less sensitive to other jobs than wall time): a plain loop vs fit.

A ratio above 1 means fit is slower. Results go to benchmarks/results/fit_overhead.md with the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
PRE_FIT = "42ddee6"  # the last commit whose trainer.py had its own loop


def old_trainer():
    src = subprocess.run(["git", "show", f"{PRE_FIT}:dodai/train/trainer.py"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_trainer.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_trainer", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_trainer"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def gpt_run(mod, steps: int, out: Path) -> float:
    import torch
    from fit_scenarios import lm_stream

    from dodai.models.gpt import GPT, GPTConfig

    ids = lm_stream(60_000, vocab=65).to(torch.uint16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False))
    cfg = mod.TrainConfig(batch_size=12, block_size=64, max_iters=steps, lr_decay_iters=steps, warmup_iters=10,
                          eval_interval=max(1, steps // 3), eval_iters=2, quiet=True, checkpoint=False)
    mod.train(model, ids[:54_000], ids[54_000:], cfg, out)
    rows = [r for r in mod.read_metrics(out) if "ms_per_iter" in r]
    return statistics.median(r["ms_per_iter"] for r in rows)


def tiny_runs(steps: int) -> tuple[float, float]:
    import fit_scenarios as S
    import torch

    from dodai.train.fit import FitConfig, fit

    def batches():
        data = S.lm_stream()
        g = torch.Generator().manual_seed(1)

        def b(i):
            ix = torch.randint(len(data) - 9, (8,), generator=g)
            w = data[ix[:, None] + torch.arange(9)]
            return w[:, :-1], w[:, 1:]
        return b

    torch.manual_seed(0)
    m = S.TinyLM(S.TinyConfig(block_size=8))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    b = batches()
    times = []
    for i in range(steps):  # the plain loop
        t = time.perf_counter()
        x, y = b(i)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
        loss = m(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t)
    plain = sum(times) / steps * 1000
    torch.manual_seed(0)
    m = S.TinyLM(S.TinyConfig(block_size=8))
    res = fit(m, batches(), lambda m, b: m(*b)[1], FitConfig(steps=steps, lr=1e-3, grad_clip=1.0, schedule="cosine",
                                                            decay_matrices_only=False))
    return plain, res.train_time_s / steps * 1000  # fit times each step the same way (batch to optimizer step)


def overhead_runs(n: int = 3000) -> tuple[float, float]:
    """(plain, fit) microseconds of this process's CPU time per step on a model with no compute."""
    import torch

    from dodai.train.fit import FitConfig, fit

    def model():
        m = torch.nn.Module()
        m.p = torch.nn.Parameter(torch.ones(4))
        return m

    m = model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    t = time.process_time()
    for _ in range(n):
        for g in opt.param_groups:
            g["lr"] = 1e-3
        loss = (m.p * m.p).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        loss.item()
    plain = (time.process_time() - t) / n * 1e6
    m = model()
    t = time.process_time()
    fit(m, lambda i: None, lambda m, b: (m.p * m.p).sum(),
        FitConfig(steps=n, lr=1e-3, grad_clip=1.0, decay_matrices_only=False))
    return plain, (time.process_time() - t) / n * 1e6


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import dodai.train.trainer as new

    old = old_trainer()
    g_old, g_new, t_plain, t_fit, o_plain, o_fit = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            g_old.append(gpt_run(old, args.steps, Path(d) / f"old{r}"))
            g_new.append(gpt_run(new, args.steps, Path(d) / f"new{r}"))
            p, f = tiny_runs(args.steps * 4)
            t_plain.append(p)
            t_fit.append(f)
            p, f = overhead_runs()
            o_plain.append(p)
            o_fit.append(f)
    med = statistics.median
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    load = open("/proc/loadavg").read().split()[:3]
    lines = [
        "# fit overhead vs the pre-fit loops",
        "",
        f"- command: `.venv/bin/python benchmarks/fit_overhead.py --steps {args.steps} --repeats {args.repeats} "
        f"--threads {args.threads}`",
        f"- date: {time.strftime('%Y-%m-%d')}; machine: {platform.machine()} {cpu}, {args.threads} torch thread(s); "
        f"load average before the report: {' '.join(load)}; torch {torch.__version__}",
        "",
        "| model | old loop ms/step (runs) | fit ms/step (runs) | fit / old (medians) |",
        "|---|---|---|---|",
        f"| GPT 4×4×128, block 64, batch 12 (pretrain train()) | {med(g_old):.2f} "
        f"({', '.join(f'{x:.2f}' for x in g_old)}) | {med(g_new):.2f} ({', '.join(f'{x:.2f}' for x in g_new)}) "
        f"| {med(g_new) / med(g_old):.3f} |",
        f"| tiny LM (1 layer × 16), plain loop vs fit | {med(t_plain):.3f} "
        f"({', '.join(f'{x:.3f}' for x in t_plain)}) | {med(t_fit):.3f} ({', '.join(f'{x:.3f}' for x in t_fit)}) "
        f"| {med(t_fit) / med(t_plain):.3f} |",
        f"| no compute (4 numbers): CPU µs/step, plain loop vs fit | {med(o_plain):.0f} "
        f"({', '.join(f'{x:.0f}' for x in o_plain)}) | {med(o_fit):.0f} ({', '.join(f'{x:.0f}' for x in o_fit)}) "
        f"| {med(o_fit) / med(o_plain):.3f} (fit adds {med(o_fit) - med(o_plain):.0f} µs a step) |",
        "",
    ]
    if float(load[0]) > (os.cpu_count() or 1):
        lines += [f"The load average ({load[0]}) was above the {os.cpu_count()} cores: other jobs shared the CPU, "
                  "so these timings mostly measure them. Re-run on an idle machine for a figure.", ""]
    text = "\n".join(lines)
    print(text)
    (REPO / "benchmarks" / "results" / "fit_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
