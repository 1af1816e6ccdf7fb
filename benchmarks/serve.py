"""`dodai serve` vs llama-cpp-python's OpenAI-compatible server on the same SmolLM2 GGUF, side by side.

Each server runs in its own process with 2 threads, on a free loopback port; the same chat requests (greedy,
``max_tokens`` new tokens, streamed) are sent by 1, 4, 8 and 16 concurrent clients. Per level:

- **aggregate tokens/s**: completion tokens of all requests / wall time from the first request to the last;
- **decode tokens/s**: the tokens after each request's first, summed, / the time during which at least one
  request was between its first and its last content chunk (the union of those intervals): the aggregate
  decoding rate without the time to first token (which holds the prompt's prefill and, for a queued request, the
  wait); the issue's "aggregate decode tokens/s at 8 concurrent ≥ 4× a single stream" is read on this figure;
- **TTFT p50 / p95**: time from sending a request to its first streamed content chunk;
- each request's tokens come from the stream's usage chunk (``stream_options.include_usage``) when the server
  sends one, else from the number of content chunks.

dodai decodes concurrent requests together (continuous batching, :mod:`dodai.generate.paged`); llama-cpp-python's
server runs one request at a time (with ``--interrupt_requests False``: by default a new request cuts the
streaming one short). dodai runs with ``--format`` (default int4, its fastest offered format);
llama.cpp runs the Q4_1 file as it is. The results file names the date, CPU, threads and load average.

    .venv/bin/python benchmarks/serve.py [--levels 1,4,8,16] [--max-tokens 64] [--format int4]
        [--write benchmarks/results/serve.json]

Needs the benchmark extra for the llama.cpp side (``pip install -e '.[bench]'``); without it only dodai runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = ["What is the capital of France?", "Explain photosynthesis in simple terms.",
             "Write a haiku about the sea.", "Why is the sky blue?", "Give three tips for learning to cook.",
             "What does a compiler do?", "Describe a cat to someone who has never seen one.",
             "How do airplanes fly?", "What is a prime number?", "Name some uses of copper.",
             "Summarise the plot of Romeo and Juliet.", "What is machine learning?",
             "How does a refrigerator keep food cold?", "Suggest a name for a bakery.",
             "What causes the seasons?", "Tell me about the Moon."]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc, timeout: float = 300) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def _log(name: str):
    """A file for a server's stderr (a pipe nobody reads fills up and stalls the server: llama.cpp logs a lot)."""
    import tempfile

    return tempfile.NamedTemporaryFile(prefix=f"serve-bench-{name}-", suffix=".log", delete=False)


def start_dodai(gguf: str, fmt: str, port: int, threads: int):
    cmd = [sys.executable, "-m", "dodai", "serve", "--model", gguf, "--port", str(port), "--threads", str(threads),
           "--format", fmt, "--max-batch", "16", "--context", "1024", "--embedding-model", "none"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=_log("dodai")), Path(gguf).stem


def start_llamacpp(gguf: str, port: int, threads: int):
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port), "--host", "127.0.0.1",
           "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "1024",
           "--model_alias", "smollm2",
           # its default interrupts the streaming request whenever a new one arrives (a few tokens each): queue them
           "--interrupt_requests", "False"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=_log("llamacpp")), "smollm2"


async def one_request(client, url: str, model: str, question: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, chunks, usage, t_first, t_last = None, 0, None, None, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"].get("completion_tokens")
            for c in obj.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    chunks += 1
                    t_last = time.perf_counter()
                    if ttft is None:
                        t_first = t_last
                        ttft = t_first - t0
    return {"ttft": ttft if ttft is not None else time.perf_counter() - t0, "tokens": usage or chunks,
            "seconds": time.perf_counter() - t0, "first": t_first, "last": t_last}


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


async def run_level(url: str, model: str, concurrency: int, n_requests: int, max_tokens: int) -> dict:
    import httpx

    queue = list(range(n_requests))
    rows = []
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker():
            while queue:
                i = queue.pop(0)
                rows.append(await one_request(client, url, model, QUESTIONS[i % len(QUESTIONS)], max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    decoding = [r for r in rows if r["first"] is not None and r["last"] > r["first"]]
    span = union_length([(r["first"], r["last"]) for r in decoding])
    decode_tokens = sum(r["tokens"] - 1 for r in decoding)
    return {"concurrency": concurrency, "requests": n_requests, "tokens": tokens, "wall_s": wall,
            "tokens_per_s": tokens / wall, "decode_tokens_per_s": decode_tokens / span if span else None,
            "ttft_p50_s": statistics.median(ttfts),
            "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))]}


def bench_server(name: str, start, levels: list[int], max_tokens: int, per_level: int) -> list[dict]:
    port = free_port()
    proc, model = start(port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc)
        asyncio.run(run_level(url, model, 1, 2, 8))  # warm-up
        out = []
        for c in levels:
            n = max(c, per_level) if c > 1 else max(4, per_level // 4)
            row = asyncio.run(run_level(url, model, c, n, max_tokens))
            row["engine"] = name
            out.append(row)
            print(f"{name:10s} c={c:2d}: {row['tokens_per_s']:7.1f} tok/s, decode {row['decode_tokens_per_s']:7.1f} "
                  f"tok/s, TTFT p50 {row['ttft_p50_s']:.2f} s, "
                  f"p95 {row['ttft_p95_s']:.2f} s ({row['requests']} requests, {row['tokens']} tokens)",
                  file=sys.stderr)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--per-level", type=int, default=16, help="requests per concurrency level (at least c)")
    ap.add_argument("--format", default="int4", help="dodai weight format (fp32, bf16, int8, int4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="dodai,llamacpp")
    ap.add_argument("--write", default=None, help="write the results JSON here")
    args = ap.parse_args()
    from dodai.weights.registry import resolve

    gguf = str(resolve("smollm2-135m-instruct"))
    levels = [int(x) for x in args.levels.split(",")]
    load_before = os.getloadavg()
    rows = []
    engines = args.engines.split(",")
    if "dodai" in engines:
        rows += bench_server(f"dodai-{args.format}", lambda p: start_dodai(gguf, args.format, p, args.threads),
                             levels, args.max_tokens, args.per_level)
    if "llamacpp" in engines:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError as e:
            print(f"llama-cpp-python[server] is not installed ({e}); dodai only", file=sys.stderr)
        else:
            rows += bench_server("llama.cpp", lambda p: start_llamacpp(gguf, p, args.threads), levels,
                                 args.max_tokens, args.per_level)
    by = {(r["engine"], r["concurrency"]): r for r in rows}
    ratios = []
    for c in levels:
        d, ll = by.get((f"dodai-{args.format}", c)), by.get(("llama.cpp", c))
        if d and ll:
            ratios.append({"concurrency": c, "tokens_per_s_ratio": d["tokens_per_s"] / ll["tokens_per_s"],
                           "decode_tokens_per_s_ratio": d["decode_tokens_per_s"] / ll["decode_tokens_per_s"],
                           "ttft_p50_ratio": d["ttft_p50_s"] / ll["ttft_p50_s"]})
    single = by.get((f"dodai-{args.format}", 1))
    eight = by.get((f"dodai-{args.format}", 8))
    result = {"command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(), "threads": args.threads,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "max_tokens": args.max_tokens, "rows": rows, "ratios_dodai_over_llamacpp": ratios,
              "dodai_8_concurrent_over_single": (eight["tokens_per_s"] / single["tokens_per_s"])
              if single and eight else None,
              "dodai_8_concurrent_over_single_decode": (eight["decode_tokens_per_s"] / single["decode_tokens_per_s"])
              if single and eight else None, "uptime": _uptime()}
    print(json.dumps(result, indent=2))
    if args.write:
        Path(args.write).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
