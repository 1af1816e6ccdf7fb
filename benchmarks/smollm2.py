"""SmolLM2-135M-Instruct on CPU: dodai vs HF transformers (fp32) vs llama.cpp (Q4_1), 2 threads.

For each engine, in its own subprocess (so that peak RSS means something):

- **prefill**: one forward over a 200-token prompt into an empty KV cache, logits of the last
  position only (what a generate loop needs; HF ``logits_to_keep=1``), median of ``--repeats``;
- **decode**: 128 greedy tokens after that prompt through the engine's own generate loop
  (dodai ``dodai.generate.sampling.generate``, HF ``generate(do_sample=False)``, llama.cpp
  ``generate``), tokens/s over the 127 steps after the first token, median of ``--repeats``;
- **decode per CPU-second**: the same 127 steps over the process's CPU time (all its threads), a
  figure less sensitive than wall time to other jobs on a shared machine;
- **peak RSS** of the process (``ru_maxrss``) after loading and running.

dodai and HF load the same GGUF file and dequantize it to fp32 (dodai also in bf16, and int8: weight-only
int8 with per-channel scales from :mod:`dodai.quant`, computed on bf16 activations; and int4: Q4_1-style
groups of 32 on PyTorch's CPU 4-bit kernel, int8 output head, :mod:`dodai.quant.int4`); llama.cpp runs
the Q4_1 file as it is, through llama-cpp-python when it is installed. With llama.cpp present, the
teacher-forced top-1 agreement (the fraction of positions of a 256-token text where dodai's argmax
equals llama.cpp's) is computed too.

    .venv/bin/python benchmarks/smollm2.py [--repeats 3] [--write benchmarks/results/smollm2.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
ENGINES = ["dodai", "dodai-int4", "dodai-int8", "dodai-bf16", "hf", "llamacpp"]

_FALLBACK_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
    "considered the rightful property of some one or other of their daughters. "
)


def _text() -> str:
    p = REPO.parent / "shared" / "data" / "austen.txt"
    if p.is_file():
        t = p.read_text(encoding="utf-8", errors="replace")
        i = t.find("It is a truth universally")
        return t[max(i, 0):max(i, 0) + 20000]
    return _FALLBACK_TEXT * 20


def _gguf() -> Path:
    from dodai.weights.registry import resolve

    return resolve("smollm2-135m-instruct")


def _prompt_ids(tok, n: int) -> list[int]:
    ids = tok.encode(_text())
    if len(ids) < n:
        raise SystemExit(f"benchmark text too short ({len(ids)} tokens)")
    return ids[:n]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _dodai_bytes_per_token(model) -> int:
    """Bytes a dodai decoding step reads: every projection's weight as stored (int4 codes + bf16 (scale, zero)
    pairs, int8 + scales, or the float matrix; a tied head once), the norms, one embedding row, and the KV
    cache at the decode's mean context (PROMPT_TOKENS + NEW_TOKENS / 2 positions)."""
    import torch.nn as nn

    from dodai.nn.norm import RMSNorm
    from dodai.quant.int4 import Int4Linear
    from dodai.quant.int8 import Int8Linear

    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, Int4Linear):
            ts = [m.packed, m.scales_zeros]
        elif isinstance(m, Int8Linear):
            ts = [m.qweight, m.scale_bf16]
        elif isinstance(m, (nn.Linear, RMSNorm)):
            ts = [m.weight]
        else:
            continue
        for t in ts:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    c = model.config
    emb = model.tok_embeddings.weight
    total += c.n_embd * emb.element_size()
    kv_elem = emb.element_size()  # the cache is in the model's float dtype
    total += 2 * c.n_layer * c.n_kv_head * c.head_dim * kv_elem * (PROMPT_TOKENS + NEW_TOKENS // 2)
    return total


def _llamacpp_bytes_per_token(path) -> int:
    """Bytes a llama.cpp decoding step reads: every tensor of the GGUF once (the tied token_embd is the output
    matrix; the embedding lookup reads one of its rows), plus the f16 KV cache at the mean context."""
    from dodai.weights.gguf import GGUFFile

    gf = GGUFFile(path)
    try:
        total = sum(t.nbytes for t in gf.tensors.values())
    finally:
        gf.close()
    layers, kv_heads, head_dim = 30, 3, 64  # SmolLM2-135M
    return total + 2 * layers * kv_heads * head_dim * 2 * (PROMPT_TOKENS + NEW_TOKENS // 2)


# ------------------------------------------------------------------------------------------ workers
def worker_dodai(repeats: int, dtype_name: str) -> dict:
    import torch

    from dodai.generate.sampling import generate
    from dodai.models.llama import load_llama_gguf

    torch.set_num_threads(THREADS)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    t0 = time.perf_counter()
    model, tok = load_llama_gguf(_gguf(), dtype=dtype)
    if dtype_name in ("int8", "int4"):
        from dodai.quant.int8 import quantize_model

        quantize_model(model, dtype_name)
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(tok, PROMPT_TOKENS)
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
        stamps, cpu = [], []
        out = []
        t = time.perf_counter()
        for tid in generate(model, ids, NEW_TOKENS, temperature=0.0):
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            out.append(tid)
        decode.append((NEW_TOKENS - 1) / (stamps[-1] - stamps[0]))
        decode_cpu.append((NEW_TOKENS - 1) / (cpu[-1] - cpu[0]))
        first_token_s = stamps[0] - t
    res = {"engine": f"dodai {dtype_name}", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
           "decode_tok_cpu_s": decode_cpu, "first_token_s": first_token_s, "tokens": out, "rss_mb": _rss_mb(),
           "bytes_per_token": _dodai_bytes_per_token(model)}
    return res


def worker_hf(repeats: int) -> dict:
    import torch
    import transformers
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(THREADS)
    path = _gguf()
    t0 = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                          dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(tok, PROMPT_TOKENS)
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
                               streamer=s, pad_token_id=tok.eos_token_id)
        out = g[0, len(ids):].tolist()
        decode.append((NEW_TOKENS - 1) / (s.t[-1] - s.t[0]))
        decode_cpu.append((NEW_TOKENS - 1) / (s.cpu[-1] - s.cpu[0]))
    return {"engine": "HF transformers fp32", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
            "decode_tok_cpu_s": decode_cpu, "tokens": out, "rss_mb": _rss_mb()}


def worker_llamacpp(repeats: int) -> dict:
    try:
        import llama_cpp
    except ImportError:
        return {"engine": "llama.cpp Q4_1", "skipped": "llama-cpp-python is not installed"}
    from dodai.tokenizers.gguf_vocab import tokenizer_from_gguf

    path = _gguf()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_threads=THREADS, n_threads_batch=THREADS, n_ctx=512,
                          n_batch=512, logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(tokenizer_from_gguf(path), PROMPT_TOKENS)
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
    return {"engine": "llama.cpp Q4_1", "load_s": load_s, "prefill_s": prefill, "decode_tok_s": decode,
            "decode_tok_cpu_s": decode_cpu, "tokens": out, "rss_mb": _rss_mb(),
            "bytes_per_token": _llamacpp_bytes_per_token(path)}


def worker_agreement(n: int = 256) -> dict:
    """Teacher-forced top-1 agreement between dodai (fp32 dequantized) and llama.cpp (Q4_1)."""
    try:
        import llama_cpp
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed"}
    import numpy as np
    import torch

    from dodai.models.llama import load_llama_gguf

    torch.set_num_threads(THREADS)
    path = _gguf()
    model, tok = load_llama_gguf(path)
    ids = _prompt_ids(tok, n)
    with torch.inference_mode():
        ours = model(torch.tensor([ids]))[0][0].argmax(-1).numpy()
    llm = llama_cpp.Llama(model_path=str(path), n_threads=THREADS, n_ctx=512, n_batch=512, logits_all=True,
                          verbose=False)
    llm.eval(ids)
    theirs = np.asarray(llm.scores[:n]).argmax(-1)
    agree = float((ours == theirs).mean())
    return {"positions": n, "top1_agreement": agree}


# ------------------------------------------------------------------------------------------ driver
def run_worker(name: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(repeats), "--threads", str(THREADS)]
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
    return platform.processor() or "?"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _simd() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    return ",".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags)


def main() -> int:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement (median reported)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    ap.add_argument("--write", default=None, help="also write the markdown table to this file")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads of every engine (default 2)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    THREADS = args.threads
    if args.worker:
        if args.worker == "dodai":
            res = worker_dodai(args.repeats, "fp32")
        elif args.worker == "dodai-int8":
            res = worker_dodai(args.repeats, "int8")
        elif args.worker == "dodai-int4":
            res = worker_dodai(args.repeats, "int4")
        elif args.worker == "dodai-bf16":
            res = worker_dodai(args.repeats, "bf16")
        elif args.worker == "hf":
            res = worker_hf(args.repeats)
        elif args.worker == "llamacpp":
            res = worker_llamacpp(args.repeats)
        elif args.worker == "agreement":
            res = worker_agreement()
        else:
            raise SystemExit(f"unknown worker {args.worker}")
        print(json.dumps(res))
        return 0

    engines = [e for e in args.engines.split(",") if e]
    load_before = _load()
    results = {}
    for e in engines:
        print(f"running {e} ...", file=sys.stderr, flush=True)
        results[e] = run_worker(e, args.repeats)
        print(json.dumps({k: v for k, v in results[e].items() if k != "tokens"}), file=sys.stderr, flush=True)
    agreement = run_worker("agreement", 1) if "llamacpp" in engines else {"skipped": "llama.cpp not run"}

    hf = results.get("hf", {})
    hf_pre = statistics.median(hf["prefill_s"]) if "prefill_s" in hf else None
    hf_dec = statistics.median(hf["decode_tok_s"]) if "decode_tok_s" in hf else None
    hf_cpu = statistics.median(hf["decode_tok_cpu_s"]) if "decode_tok_cpu_s" in hf else None
    lc = results.get("llamacpp", {})
    lc_dec = statistics.median(lc["decode_tok_s"]) if "decode_tok_s" in lc else None
    rows = ["| engine | prefill 200 tok (s) | decode 128 tok (tok/s) | prefill speed vs HF | decode vs HF "
            "| decode vs llama.cpp | decode tok per CPU-s | CPU-s ratio vs HF | MB read / token | achieved GB/s "
            "| peak RSS (MB) | load (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in engines:
        r = results[e]
        if "skipped" in r:
            rows.append(f"| {r.get('engine', e)} | skipped: {r['skipped']} | | | | | | | | | | |")
            continue
        pre, dec = statistics.median(r["prefill_s"]), statistics.median(r["decode_tok_s"])
        cpu = statistics.median(r["decode_tok_cpu_s"])
        pre_ratio = f"{hf_pre / pre:.2f}x" if hf_pre else "-"
        dec_ratio = f"{dec / hf_dec:.2f}x" if hf_dec else "-"
        lc_ratio = f"{dec / lc_dec:.2f}x" if lc_dec else "-"
        cpu_ratio = f"{cpu / hf_cpu:.2f}x" if hf_cpu else "-"
        bpt = r.get("bytes_per_token")
        mb = f"{bpt / 1e6:.1f}" if bpt else "-"
        gbs = f"{bpt * dec / 1e9:.2f}" if bpt else "-"
        rows.append(f"| {r['engine']} | {pre:.3f} | {dec:.1f} | {pre_ratio} | {dec_ratio} | {lc_ratio} | {cpu:.1f} "
                    f"| {cpu_ratio} | {mb} | {gbs} | {r['rss_mb']:.0f} | {r['load_s']:.1f} |")
    same = None
    if "tokens" in results.get("dodai", {}) and "tokens" in hf:
        same = results["dodai"]["tokens"] == hf["tokens"]
    raw = []
    for e in engines:
        r = results[e]
        if "skipped" in r:
            continue
        same_prefix = None
        if "tokens" in hf and e != "hf":
            same_prefix = next((i for i, (a, b) in enumerate(zip(r["tokens"], hf["tokens"])) if a != b),
                               min(len(r["tokens"]), len(hf["tokens"])))
        raw.append(f"- {r['engine']}: prefill s {[round(v, 3) for v in r['prefill_s']]}, decode tok/s "
                   f"{[round(v, 2) for v in r['decode_tok_s']]}, per CPU-s "
                   f"{[round(v, 2) for v in r['decode_tok_cpu_s']]}"
                   + (f"; first {same_prefix} greedy tokens identical to HF's" if same_prefix is not None else ""))
    cmd = "python benchmarks/smollm2.py " + " ".join(a for a in sys.argv[1:])
    lines = [
        "# SmolLM2-135M-Instruct: prefill and decode on CPU",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: nproc {os.cpu_count()}, {_cpu()} ({_simd()}); threads {THREADS}; repeats {args.repeats} "
        "(medians)",
        f"- load average (1, 5, 15 min) before: {load_before}, after: {_load()}",
        f"- command: `{cmd.strip()}`",
        "- prompt: the first 200 tokens of a Jane Austen passage; decode: 128 greedy tokens after it",
        "- prefill ratio = HF time / engine time; decode ratio = engine tok/s / HF tok/s (higher is better)",
        "- MB read / token: the weights a decoding step reads as each engine stores them (dodai int4: 4-bit codes +"
        " bf16 (scale, zero) per 32, int8 head; llama.cpp: the GGUF's tensors, Q8_0 head) plus the KV cache at"
        " the mean context; achieved GB/s = that x decode tok/s",
        "",
        *rows,
        "",
        "Per repeat:",
        "",
        *raw,
        "",
        f"- dodai fp32 and HF produce identical 128 greedy tokens: {same}",
        "- teacher-forced top-1 agreement dodai fp32 vs llama.cpp Q4_1: "
        + (f"{agreement['top1_agreement'] * 100:.1f} % over {agreement['positions']} positions"
           if "top1_agreement" in agreement else f"not measured ({agreement.get('skipped')})"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
