"""Gemma 3 270M (GGUF Q4_K_M) on CPU: dodai vs HF transformers (fp32) vs llama.cpp (the Q4_K_M file), 2 threads.

For each engine, in its own subprocess (so that peak RSS means something):

- **prefill**: one forward over a 200-token prompt (``<bos>`` + prose) into an empty KV cache, logits of the
  last position only, median of ``--repeats``;
- **decode**: 128 greedy tokens after that prompt through the engine's own generate loop, tokens/s over the
  127 steps after the first token (and per CPU-second of the process), median of ``--repeats``;
- **peak RSS** of the process.

dodai and HF dequantize the same GGUF to fp32 (dodai also runs bf16 and int8; int4 is not offered for Gemma,
see benchmarks/results/gemma3_formats.md); llama.cpp runs the Q4_K_M file as it is (4/5/6/8-bit weights,
8-bit activations in its dot products, F16 KV cache), through llama-cpp-python when it is installed
(``pip install -e .[bench]``, built from source). With llama.cpp present, the **teacher-forced top-1
agreement** is computed too: over English prose, Python code and Japanese text of ``--agree-tokens`` tokens each
(longer than the 512-token sliding window), the fraction of positions where dodai's argmax equals llama.cpp's,
and the same with a tolerance for near-ties (the reference's two best logits within 1e-3).

    .venv/bin/python benchmarks/gemma3.py [--repeats 3] [--write benchmarks/results/gemma3.md]
    .venv/bin/python benchmarks/gemma3.py --agreement-only [--write …]   # no timings: fine on a busy machine

Timing figures mean something only on a quiet machine: record them with the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

THREADS = 2
PROMPT_TOKENS = 200
NEW_TOKENS = 128
ENGINES = ["dodai", "dodai-int8", "dodai-bf16", "hf", "llamacpp"]


def _gguf() -> Path:
    from dodai.weights.registry import resolve

    return resolve("gemma3-270m")


def _texts() -> dict[str, str]:
    """English prose, Python code and Japanese text: ../shared/data when present, else the stdlib."""
    import inspect
    import json as json_mod

    shared = REPO.parent / "shared" / "data"
    out = {}
    austen = shared / "austen.txt"
    if austen.is_file():
        t = austen.read_text(encoding="utf-8", errors="replace")
        i = max(t.find("It is a truth universally"), 0)
        out["english (austen)"] = t[i:i + 8000]
    else:
        out["english (json docs)"] = (inspect.getdoc(json_mod) or "") * 4
    out["python code (json/decoder.py)"] = Path(json_mod.decoder.__file__).read_text(encoding="utf-8")[:8000]
    ja = shared / "ja_manpages.txt"
    if ja.is_file():
        out["japanese (manpages)"] = ja.read_text(encoding="utf-8", errors="replace")[20000:28000]
    return out


def _ids(tok, text: str, n: int) -> list[int]:
    ids = [tok.bos_id] + tok.encode(text)
    if len(ids) < n:
        raise SystemExit(f"benchmark text too short ({len(ids)} tokens, {n} wanted)")
    return ids[:n]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _prompt(tok) -> list[int]:
    return _ids(tok, next(iter(_texts().values())), PROMPT_TOKENS)


# ------------------------------------------------------------------------------------------ workers
def worker_dodai(repeats: int, fmt: str) -> dict:
    import torch

    from dodai.generate.sampling import generate
    from dodai.models import load_model

    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    model, tok = load_model(_gguf())
    if fmt != "fp32":
        from dodai.quant.int8 import quantize_model

        quantize_model(model, fmt)
    load_s = time.perf_counter() - t0
    ids = _prompt(tok)
    x = torch.tensor([ids])
    prefill = []
    with torch.inference_mode():
        model(x[:, :8], cache=model.new_cache(1, 16), last_only=True)  # warm-up
        for _ in range(repeats):
            cache = model.new_cache(1, PROMPT_TOKENS + NEW_TOKENS)
            t = time.perf_counter()
            model(x, cache=cache, last_only=True)
            prefill.append(time.perf_counter() - t)
    decode, decode_cpu, out = [], [], []
    for _ in range(repeats):
        stamps, cpu, out = [], [], []
        for tid in generate(model, ids, NEW_TOKENS, temperature=0.0):
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            out.append(tid)
        decode.append((NEW_TOKENS - 1) / (stamps[-1] - stamps[0]))
        decode_cpu.append((NEW_TOKENS - 1) / (cpu[-1] - cpu[0]))
    return {"engine": f"dodai {fmt}", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
            "decode_tok_cpu_s": decode_cpu, "tokens": out, "rss_mb": _rss_mb()}


def worker_hf(repeats: int) -> dict:
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    torch.set_num_threads(THREADS)
    path = _gguf()
    t0 = time.perf_counter()
    model = transformers.Gemma3ForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    ids = _prompt(tokenizer_from_gguf(path))  # the very ids dodai gets (tests/test_gemma3_real.py: equal to HF's)
    x = torch.tensor([ids])
    prefill = []
    with torch.inference_mode():
        model(x[:, :8], use_cache=True, logits_to_keep=1)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            model(x, use_cache=True, logits_to_keep=1)
            prefill.append(time.perf_counter() - t)

    class Stamps(BaseStreamer):
        def __init__(self):
            self.t, self.cpu, self.calls = [], [], 0

        def put(self, value):
            self.calls += 1
            if self.calls > 1:  # the first put() is the prompt itself
                self.t.append(time.perf_counter())
                self.cpu.append(time.process_time())

        def end(self):
            pass

    decode, decode_cpu, out = [], [], []
    for _ in range(repeats):
        s = Stamps()
        with torch.inference_mode():
            g = model.generate(x, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                               streamer=s, pad_token_id=0)
        out = g[0, len(ids):].tolist()
        decode.append((NEW_TOKENS - 1) / (s.t[-1] - s.t[0]))
        decode_cpu.append((NEW_TOKENS - 1) / (s.cpu[-1] - s.cpu[0]))
    return {"engine": "HF transformers fp32", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
            "decode_tok_cpu_s": decode_cpu, "tokens": out, "rss_mb": _rss_mb()}


def _llama(n_ctx: int, logits_all: bool):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(_gguf()), n_threads=THREADS, n_threads_batch=THREADS, n_ctx=n_ctx,
                           n_batch=n_ctx, n_ubatch=n_ctx, logits_all=logits_all, verbose=False)


def worker_llamacpp(repeats: int) -> dict:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"engine": "llama.cpp Q4_K_M", "skipped": "llama-cpp-python is not installed"}
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    t0 = time.perf_counter()
    llm = _llama(512, False)
    load_s = time.perf_counter() - t0
    ids = _prompt(tokenizer_from_gguf(_gguf()))
    prefill = []
    for _ in range(repeats):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        prefill.append(time.perf_counter() - t)
    decode, decode_cpu, out = [], [], []
    for _ in range(repeats):
        llm.reset()
        stamps, cpu, out = [], [], []
        for tid in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            out.append(int(tid))
            if len(out) == NEW_TOKENS:
                break
        decode.append((NEW_TOKENS - 1) / (stamps[-1] - stamps[0]))
        decode_cpu.append((NEW_TOKENS - 1) / (cpu[-1] - cpu[0]))
    return {"engine": "llama.cpp Q4_K_M", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
            "decode_tok_cpu_s": decode_cpu, "tokens": out, "rss_mb": _rss_mb()}


def worker_agreement(n: int) -> dict:
    """Teacher-forced top-1 agreement between dodai (fp32 dequantized) and llama.cpp (Q4_K_M), per text."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed"}
    import numpy as np
    import torch

    from dodai.models import load_model

    torch.set_num_threads(THREADS)
    model, tok = load_model(_gguf())
    llm = _llama(n, True)
    rows = []
    for name, text in _texts().items():
        ids = _ids(tok, text, n)
        with torch.inference_mode():
            ours = model(torch.tensor([ids]))[0][0].double().numpy()
        llm.reset()
        llm.eval(ids)
        theirs = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
        a, b = ours.argmax(-1), theirs.argmax(-1)
        top2 = np.sort(theirs, axis=-1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) < 1e-3
        rows.append({"text": name, "positions": len(ids), "agree": float((a == b).mean()),
                     "agree_or_tie": float(((a == b) | tie).mean()),
                     "agree_past_window": float((a[512:] == b[512:]).mean()) if len(ids) > 512 else None,
                     "max_abs": float(np.abs(ours - theirs).max())})
    return {"rows": rows}


# ------------------------------------------------------------------------------------------ driver
def run_worker(name: str, repeats: int, agree_tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(repeats), "--agree-tokens", str(agree_tokens)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"engine": name, "skipped": f"worker failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median reported)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    ap.add_argument("--agree-tokens", type=int, default=768, help="teacher-forced positions per text")
    ap.add_argument("--agreement-only", action="store_true",
                    help="only the teacher-forced agreement with llama.cpp (no timings)")
    ap.add_argument("--write", default=None, help="also write the markdown report to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        workers = {"dodai": lambda: worker_dodai(args.repeats, "fp32"),
                   "dodai-int8": lambda: worker_dodai(args.repeats, "int8"),
                   "dodai-bf16": lambda: worker_dodai(args.repeats, "bf16"),
                   "hf": lambda: worker_hf(args.repeats), "llamacpp": lambda: worker_llamacpp(args.repeats),
                   "agreement": lambda: worker_agreement(args.agree_tokens)}
        if args.worker not in workers:
            raise SystemExit(f"unknown worker {args.worker}")
        print(json.dumps(workers[args.worker]()))
        return 0

    engines = [] if args.agreement_only else [e for e in args.engines.split(",") if e]
    load_before = os.getloadavg()
    results = {}
    for e in engines:
        print(f"running {e} ...", file=sys.stderr, flush=True)
        results[e] = run_worker(e, args.repeats, args.agree_tokens)
        print(json.dumps({k: v for k, v in results[e].items() if k != "tokens"}), file=sys.stderr, flush=True)
    agreement = run_worker("agreement", 1, args.agree_tokens) if "llamacpp" in engines or args.agreement_only \
        else {"skipped": "llama.cpp not run"}
    load_after = os.getloadavg()

    def med(r, k):
        return statistics.median(r[k]) if k in r else None

    hf, lc = results.get("hf", {}), results.get("llamacpp", {})
    hf_dec, lc_dec, hf_pre = med(hf, "decode_tok_s"), med(lc, "decode_tok_s"), med(hf, "prefill_s")
    rows = ["| engine | prefill 200 tok (s) | decode 128 tok (tok/s) | decode vs HF | decode vs llama.cpp "
            "| prefill vs HF | decode tok per CPU-s | peak RSS (MB) | load (s) | greedy = HF |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for e in engines:
        r = results[e]
        if "skipped" in r:
            rows.append(f"| {r.get('engine', e)} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        pre, dec, cpu = med(r, "prefill_s"), med(r, "decode_tok_s"), med(r, "decode_tok_cpu_s")
        same = "-" if e == "hf" or "tokens" not in hf else \
            next((f"first {i}" for i, (a, b) in enumerate(zip(r["tokens"], hf["tokens"])) if a != b), "all 128")
        rows.append(f"| {r['engine']} | {pre:.3f} | {dec:.1f} | {f'{dec / hf_dec:.2f}x' if hf_dec else '-'} "
                    f"| {f'{dec / lc_dec:.2f}x' if lc_dec else '-'} | {f'{hf_pre / pre:.2f}x' if hf_pre else '-'} "
                    f"| {cpu:.1f} | {r['rss_mb']:.0f} | {r['load_s']:.1f} | {same} |")
    agree_rows = []
    if "rows" in agreement:
        agree_rows = ["| text | positions | top-1 agreement | agreement or near-tie | agreement past 512 "
                      "| max abs logit diff |", "|---|---|---|---|---|---|"]
        for a in agreement["rows"]:
            past = f"{100 * a['agree_past_window']:.1f} %" if a["agree_past_window"] is not None else "-"
            agree_rows.append(f"| {a['text']} | {a['positions']} | {100 * a['agree']:.1f} % "
                              f"| {100 * a['agree_or_tie']:.1f} % | {past} | {a['max_abs']:.2f} |")
    else:
        agree_rows = [f"teacher-forced agreement: skipped ({agreement.get('skipped')})"]
    cmd = "python benchmarks/gemma3.py " + " ".join(sys.argv[1:])
    lines = [
        "# Gemma 3 270M (Q4_K_M GGUF): prefill, decode and agreement with llama.cpp on CPU",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: nproc {os.cpu_count()}, {_cpu()}; torch/llama.cpp threads {THREADS}; repeats {args.repeats}",
        f"- load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
        f"- command: `{cmd.strip()}`",
        "- prompt: `<bos>` + the first 199 tokens of the first text; decode: 128 greedy tokens after it",
        "",
        *(rows if engines else ["(timings not run: --agreement-only)"]),
        "",
        *agree_rows,
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        Path(args.write).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
