"""Training-step speed of dodai's GPT vs nanoGPT's model.py on nanoGPT's CPU recipe.

The recipe (nanoGPT README, shakespeare_char on CPU): char vocab 65, 4 layers, 4 heads, 128 dims,
block 64, batch 12, dropout 0, bias False (train.py's default), AdamW lr 1e-3 betas (0.9, 0.99),
weight decay 0.1, grad clip 1.0. One step = forward + backward + clip + AdamW step.
Both models are built in this process with the same seed and timed in alternating rounds, so machine
load hits both alike. nanoGPT is read from $NANOGPT_DIR (default /work/ext/nanoGPT).

    .venv/bin/python benchmarks/gpt_train_step.py [--steps 50] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dodai.models.gpt import GPT, GPTConfig  # noqa: E402

CFG = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
BATCH = 12


def load_nanogpt(folder: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_step(model, groups):
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))

    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, batches) -> tuple[float, float]:
    """(wall ms/iter, process CPU ms/iter). With one thread, CPU time is the steadier figure on a busy
    shared machine (it does not count the time the process waits for a core)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in batches:
        step(x, y)
    n = len(batches)
    return (time.perf_counter() - t0) / n * 1000.0, (time.process_time() - c0) / n * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nano = load_nanogpt(Path(os.environ.get("NANOGPT_DIR", "/work/ext/nanoGPT")))

    torch.manual_seed(0)
    m_nano = nano.GPT(nano.GPTConfig(**CFG))
    torch.manual_seed(0)
    m_dodai = GPT(GPTConfig(**CFG))
    print(f"params: nanoGPT {sum(p.numel() for p in m_nano.parameters()):,}  "
          f"dodai {sum(p.numel() for p in m_dodai.parameters()):,}", file=sys.stderr)
    steps = {
        "nanoGPT": make_step(m_nano, [
            {"params": [p for p in m_nano.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in m_nano.parameters() if p.dim() < 2], "weight_decay": 0.0}]),
        "dodai": make_step(m_dodai, m_dodai.optimizer_param_groups(0.1)),
    }
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.steps):
        x = torch.randint(0, 65, (BATCH, 64), generator=g)
        batches.append((x, torch.roll(x, -1, dims=1)))
    for step in steps.values():  # warm-up
        time_steps(step, batches[:5])
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            w, c = time_steps(steps[name], batches)
            times[name].append(w)
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in times.items()}
    mcpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, nproc {os.cpu_count()}, "
          f"{args.rounds} rounds x {args.steps} steps")
    for name in steps:
        print(f"{name:8s} median wall {med[name]:.2f} ms/iter, CPU {mcpu[name]:.2f} ms/iter; wall rounds: "
              + " ".join(f"{t:.1f}" for t in times[name]))
    print(f"dodai speed vs nanoGPT (it/s ratio): wall {med['nanoGPT'] / med['dodai']:.3f}x, "
          f"CPU time {mcpu['nanoGPT'] / mcpu['dodai']:.3f}x")


if __name__ == "__main__":
    main()
