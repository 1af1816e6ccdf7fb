"""R6.5 Sparse attention: time and memory vs sequence length for dense, sliding-window and
local + global attention.

Methods (one head group, B = 1, fp32, CPU):

* ``dense_sdpa``: causal ``torch.nn.functional.scaled_dot_product_attention`` (fused, the fast dense
  baseline; it still does O(T²) work).
* ``dense_ref``: the written-out softmax(q kᵀ) v with a causal mask (materialises T×T scores).
* ``sliding``: :func:`dodai.nn.sparse.sliding_window_attention` (Mistral window W, blocked, O(T·W)).
* ``longformer``: :func:`dodai.nn.sparse.longformer_attention` (w per side + G global tokens, Beltagy et al. 2020).

Memory is the **largest single tensor created during the call** (MiB), measured with a
``TorchDispatchMode`` that sees every aten op's outputs. It is a lower bound on peak memory and the
quantity that decides whether attention fits: T×T scores for dense_ref, n×W×2W for sliding. Internal
scratch buffers of fused kernels (SDPA) are invisible to it, so dense_sdpa's figure is only its
output. Time is the median wall time of several calls on a shared, busy CPU (noisy).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dodai.nn.attention import attention_reference
from dodai.nn.sparse import longformer_attention, sliding_window_attention
from dodai.report import Report
from dodai.viz import pyplot


class _LargestTensor(TorchDispatchMode):
    """Records the byte size of the largest tensor any aten op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def methods(window: int, w_local: int, n_global: int):
    glob = list(range(n_global))  # e.g. a [CLS]-like prefix of global tokens
    return {
        "dense_sdpa": lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        "dense_ref": lambda q, k, v: attention_reference(q, k, v, causal=True),
        "sliding": lambda q, k, v: sliding_window_attention(q, k, v, window),
        "longformer": lambda q, k, v: longformer_attention(q, k, v, w_local, glob),
    }


def measure(lengths, window=256, w_local=128, n_global=16, heads=4, head_dim=64, repeats=3,
            dense_ref_max=8192) -> list[dict]:
    """One row per (method, T): median ms and largest-tensor MiB."""
    rows = []
    for t in lengths:
        g = torch.Generator().manual_seed(t)
        q, k, v = (torch.randn(1, heads, t, head_dim, generator=g) for _ in range(3))
        for name, fn in methods(window, w_local, n_global).items():
            if name == "dense_ref" and t > dense_ref_max:
                continue  # T×T fp32 scores (several copies) would not fit a shared machine
            with torch.no_grad():
                with _LargestTensor() as mode:
                    fn(q, k, v)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn(q, k, v)
                    times.append((time.perf_counter() - t0) * 1e3)
            rows.append({"method": name, "T": t, "ms": statistics.median(times), "MiB": mode.largest / 2**20})
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        cfg = dict(lengths=[256, 1024], window=64, w_local=32, n_global=4, heads=1, head_dim=32, repeats=1)
    else:
        cfg = dict(lengths=[1024, 2048, 4096, 8192, 16384], window=256, w_local=128, n_global=16, heads=1,
                   head_dim=64, repeats=3)
    rows = measure(**cfg)
    rep = Report(out_dir, "R6.5 Sparse attention: time and memory vs sequence length")
    rep.text(__doc__.split("\n\n", 1)[1])
    rep.text(f"Configuration: {cfg}")
    rep.table(rows, ["method", "T", "ms", "MiB"])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in methods(1, 1, 0):
        pts = [(r["T"], r["ms"], r["MiB"]) for r in rows if r["method"] == name]
        if pts:
            ts, ms, mib = zip(*pts)
            axes[0].loglog(ts, ms, "o-", label=name)
            axes[1].loglog(ts, mib, "o-", label=name)
    axes[0].set(xlabel="sequence length T", ylabel="ms (median)", title="time")
    axes[1].set(xlabel="sequence length T", ylabel="largest tensor (MiB)", title="memory")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scaling.png", dpi=100)
    plt.close(fig)
    rep.image(out_dir / "scaling.png", "time and largest intermediate vs T (log-log)")

    def growth(name, key):
        vals = {r["T"]: r[key] for r in rows if r["method"] == name}
        ts = sorted(vals)
        return vals[ts[-1]] / vals[ts[0]], ts[-1] / ts[0]

    results = {"config": cfg, "rows": rows}
    for name in ("dense_ref", "sliding", "longformer"):  # dense_ref stops at a shorter T in full mode
        results[f"{name}_memory_growth"], results[f"{name}_length_growth"] = growth(name, "MiB")
        results["length_growth"] = results[f"{name}_length_growth"]  # the sliding/longformer range (kept key)
        results[f"{name}_time_growth"], _ = growth(name, "ms")
    rep.text(f"Memory growth from T={cfg['lengths'][0]} to {cfg['lengths'][-1]} "
             f"(dense_ref to its largest T, {cfg['lengths'][0] * results['dense_ref_length_growth']:.0f}): "
             f"dense_ref ×{results['dense_ref_memory_growth']:.1f}, "
             f"sliding ×{results['sliding_memory_growth']:.1f}, "
             f"longformer ×{results['longformer_memory_growth']:.1f}.")
    rep.results.update(results)
    rep.write()
    return results
