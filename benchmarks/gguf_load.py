"""GGUF reading: dodai's reader vs the `gguf` package on the real SmolLM2-135M-Instruct Q4_1 file.

    .venv/bin/python benchmarks/gguf_load.py [--file PATH] [--repeats 5]

Two timings per engine, back to back in one process, medians over ``--repeats``:
  parse  open the file and read header, metadata (49,152 tokens, 48,900 merges) and tensor infos;
  load   dequantize every tensor to float32 (dodai: ``GGUFFile.load``, torch tensors;
         gguf: ``gguf.quants.dequantize`` on each ``ReaderTensor.data``, numpy arrays).
The first dequantized tensors of both are compared (bit-exact) as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def _dodai(path):
    from dodai.weights.gguf import GGUFFile

    t0 = time.perf_counter()
    g = GGUFFile(path)
    t1 = time.perf_counter()
    out = {name: g.load(name) for name in g.tensors}
    t2 = time.perf_counter()
    g.close()
    return t1 - t0, t2 - t1, out


def _gguf(path):
    import gguf

    t0 = time.perf_counter()
    r = gguf.GGUFReader(path)
    for f in r.fields.values():  # materialize metadata values like dodai does
        f.contents()
    t1 = time.perf_counter()
    out = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in r.tensors}
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=None, help="GGUF file (default: the registry's smollm2-135m-instruct)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per engine")
    args = ap.parse_args()
    if args.file is None:
        from dodai.weights.registry import resolve

        args.file = str(resolve("smollm2-135m-instruct"))
    times = {"dodai": ([], []), "gguf": ([], [])}
    for i in range(args.repeats):
        for name, fn in (("dodai", _dodai), ("gguf", _gguf)):
            p, ld, out = fn(args.file)
            times[name][0].append(p)
            times[name][1].append(ld)
            if i == 0:
                if name == "dodai":
                    first = out
                else:
                    for k in list(first)[:20]:
                        assert np.array_equal(first[k].numpy().reshape(-1), out[k].reshape(-1)), k
            del out
    print(f"file {args.file} ({os.path.getsize(args.file):,} bytes); {platform.processor() or platform.machine()}, "
          f"nproc {os.cpu_count()}, repeats {args.repeats}")
    print(f"{'engine':<8} {'parse s':>9} {'load-all s':>11}")
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in times.items()}
    for k, (p, ld) in med.items():
        print(f"{k:<8} {p:>9.3f} {ld:>11.3f}")
    print(f"ratio gguf/dodai: parse {med['gguf'][0] / med['dodai'][0]:.1f}x, "
          f"load {med['gguf'][1] / med['dodai'][1]:.2f}x")


if __name__ == "__main__":
    main()
