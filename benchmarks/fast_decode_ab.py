"""SmolLM2-135M int4 decoding step: the fused native step (dodai.models.fast_decode) vs the per-layer PyTorch path,
interleaved in one process (so a shared machine's load hits both alike).

After a 200-token prefill, ``--steps`` single-token forwards per round on each path, alternating paths for
``--rounds`` rounds; reported: the 25th-percentile step time of each round (ms) and their ratio.

    .venv/bin/python benchmarks/fast_decode_ab.py [--threads 1] [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    import torch

    import dodai.models.fast_decode as fd
    from dodai.models.llama import load_llama_gguf
    from dodai.quant.int8 import quantize_model
    from dodai.weights.registry import resolve

    torch.set_num_threads(args.threads)
    model, _ = load_llama_gguf(resolve("smollm2-135m-instruct"))
    quantize_model(model, "int4")
    x = torch.tensor([list(range(100, 300))])
    fused = fd.fused_step
    res: dict[str, list[float]] = {"fused": [], "pytorch": []}
    print(f"load average before: {os.getloadavg()}")
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name in res:
                fd.fused_step = fused if name == "fused" else (lambda *a, **k: None)
                cache = model.new_cache(1, 200 + args.steps + 1)
                model(x, cache=cache, last_only=True)
                tok = torch.tensor([[5]])
                ts = []
                for _ in range(args.steps):
                    t = time.perf_counter()
                    model(tok, cache=cache, last_only=True)
                    ts.append(time.perf_counter() - t)
                ts.sort()
                res[name].append(ts[len(ts) // 4] * 1e3)
    fd.fused_step = fused
    print(f"load average after: {os.getloadavg()}; threads {args.threads}")
    for name, v in res.items():
        print(f"{name}: p25 step ms per round {[round(a, 2) for a in v]}")
    print("ratio (pytorch / fused) per round:", [round(b / a, 2) for a, b in zip(res["fused"], res["pytorch"])])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
