"""HF transformers fp32 prefill/decode on the same GGUF and prompt ids as ``dodai bench generate --hf``.

Run by :func:`dodai.bench.bench_hf` in a child process (``python benchmarks/hf_generate_worker.py SPEC_JSON``)
and prints one JSON line; dodai itself never imports transformers.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dodai.bench import peak_rss_mb  # noqa: E402


def _hf_worker(spec: dict) -> dict:
    """HF transformers fp32 prefill/decode on the same GGUF and the same prompt ids (runs in a child)."""
    import torch

    try:
        import transformers
        from transformers.generation.streamers import BaseStreamer
    except ImportError:
        return {"engine": "HF transformers fp32", "skipped": "transformers is not installed"}
    from dodai.weights.registry import resolve

    torch.set_num_threads(spec["threads"])
    path = Path(resolve(spec["model"]))
    if path.suffix != ".gguf":
        return {"engine": "HF transformers fp32", "skipped": "HF comparison needs a GGUF or registry model"}
    t = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    load_s = time.perf_counter() - t
    ids, n = spec["ids"], spec["new_tokens"]
    x = torch.tensor([ids])
    prefill = []
    with torch.inference_mode():
        model(x[:, :1], use_cache=True, logits_to_keep=1)  # warm-up
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            model(x, use_cache=True, logits_to_keep=1)
            prefill.append(time.perf_counter() - t)

    class Stamps(BaseStreamer):
        def __init__(self):
            self.t, self.calls = [], 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:  # the first put() is the prompt
                self.t.append(time.perf_counter())

        def end(self):
            pass

    decode = []
    for _ in range(spec["repeats"]):
        s = Stamps()
        with torch.inference_mode():
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, streamer=s, pad_token_id=0)
        decode.append((n - 1) / (s.t[-1] - s.t[0]))
    return {"engine": "HF transformers fp32", "load_s": load_s, "prefill_s": statistics.median(prefill),
            "decode_tok_s": statistics.median(decode), "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    print(json.dumps(_hf_worker(json.loads(sys.argv[1]))))
