"""Sparse attention scaling: dense (SDPA anchor and written-out reference) vs dodai's blocked
sliding-window and Longformer attention, T = 1k … 16k, in one process.

    .venv/bin/python benchmarks/sparse_attention.py [--lengths 1024 2048 4096 8192 16384] [--repeats 3]

Prints median ms and the largest intermediate tensor (MiB) per method and length, and each
method's time relative to dense SDPA measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from dodai.experiments.r6_5 import measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384],
                    help="sequence lengths")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per point (median)")
    ap.add_argument("--window", type=int, default=256, help="sliding window W")
    ap.add_argument("--heads", type=int, default=1, help="attention heads")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, nproc {os.cpu_count()}", file=sys.stderr)
    rows = measure(a.lengths, window=a.window, w_local=a.window // 2, n_global=16, heads=a.heads, head_dim=64,
                   repeats=a.repeats)
    anchor = {r["T"]: r["ms"] for r in rows if r["method"] == "dense_sdpa"}
    print("| method | T | median ms | × dense SDPA time | largest tensor MiB |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['T']} | {r['ms']:.1f} | {r['ms'] / anchor[r['T']]:.2f} | {r['MiB']:.2f} |")


if __name__ == "__main__":
    main()
