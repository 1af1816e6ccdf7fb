"""Continuous batching in-process, no HTTP: SmolLM2 int4 on the server's paged KV backend, B rows decoding together.

The engine and :class:`dodai.generate.paged.PagedBackend` that ``dodai serve`` runs, driven directly: B greedy
requests (prompts of 61 tokens, 48 new tokens each) are added at once; every engine step is timed and the median
decode step (prefill steps left out) gives tokens/s = B / step. Set beside ``benchmarks/serve.py``'s figures this
separates the model and engine from the server's HTTP/streaming path.

    .venv/bin/python benchmarks/paged_batch.py [--batches 1,8,16] [--threads 2] [--write results/paged_batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--write", default=None)
    args = ap.parse_args()
    import torch

    from dodai.generate.engine import Engine, Request
    from dodai.generate.paged import PagedBackend
    from dodai.generate.processors import LogitsPipeline
    from dodai.models.llama import load_llama_gguf
    from dodai.quant.int8 import quantize_model
    from dodai.weights.registry import resolve

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve import _uptime, cpu_model

    torch.set_num_threads(args.threads)
    model, _ = load_llama_gguf(resolve("smollm2-135m-instruct"))
    quantize_model(model, "int4")
    prompts = [[1] + list(range(100 + 7 * i, 160 + 7 * i)) for i in range(64)]
    before = _uptime()

    def run(b: int) -> dict:
        eng = Engine(model, PagedBackend(model, max_batch=max(16, b), context=1024))
        reqs = [Request(prompts[i], args.new_tokens, LogitsPipeline(temperature=0.0)) for i in range(b)]
        for r in reqs:
            eng.add(r)
        steps = []
        with torch.inference_mode():
            while not all(r.done for r in reqs):
                prefilling = bool(eng.backend.prefilling)
                t = time.perf_counter()
                eng.step()
                if not prefilling:
                    steps.append(time.perf_counter() - t)
        steps.sort()
        p50 = steps[len(steps) // 2]
        return {"batch": b, "decode_steps": len(steps), "step_p50_ms": p50 * 1e3, "tokens_per_s": b / p50}

    run(1)  # warm-up (kernels compiled, plans built)
    rows = [run(int(b)) for b in args.batches.split(",")]
    single = next((r for r in rows if r["batch"] == 1), None)
    for r in rows:
        r["over_single"] = r["tokens_per_s"] / single["tokens_per_s"] if single else None
        print(f"B={r['batch']:2d}: step p50 {r['step_p50_ms']:.1f} ms, {r['tokens_per_s']:.1f} tok/s"
              + (f", {r['over_single']:.2f}x one row" if single else ""), file=sys.stderr)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git = ""
    result = {"command": "python benchmarks/paged_batch.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(), "threads": args.threads,
              "commit": git, "uptime_before": before, "uptime_after": _uptime(), "load_average": os.getloadavg(),
              "new_tokens": args.new_tokens, "rows": rows}
    print(json.dumps(result, indent=2))
    if args.write:
        Path(args.write).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
