"""all-MiniLM-L6-v2 sentence embeddings: dodai vs sentence-transformers, sentences/s and peak RSS.

    .venv/bin/python benchmarks/minilm.py [--text /work/shared/data/austen.txt] [--n 2000] [--words 20]
                                          [--batch-size 32] [--threads 2] [--repeats 3]

Sentences are built deterministically from a text (default: the stdlib's ``pydoc_data.topics``): runs
of ``--words`` consecutive words. Each measurement is a fresh subprocess for one engine (so peak RSS
is its own): load the model, warm up on one batch, encode all sentences once. The engines alternate
(dodai, sentence-transformers, dodai, …) ``--repeats`` times, so a busy shared machine slows both
alike; the median wall time is reported, and the process CPU time beside it (less sensitive to other
load). Both engines also embed the same first 64 sentences; the minimum cosine between them is printed
as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_sentences(text: str, n: int, words: int) -> list[str]:
    toks = text.split()
    if len(toks) < words:
        raise SystemExit("the text is too short to build sentences")
    out, i = [], 0
    while len(out) < n:
        if i + words > len(toks):
            i = (i + 7) % max(1, len(toks) - words)  # wrap with a shift so repeats are not identical
        out.append(" ".join(toks[i:i + words]))
        i += words
    return out


def worker(engine: str, sent_file: str, batch: int, threads: int, repeats: int, out_file: str) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    sentences = json.loads(Path(sent_file).read_text())
    t0 = time.perf_counter()
    if engine == "dodai":
        from dodai.models.bert import load_sentence_encoder

        enc = load_sentence_encoder("all-minilm-l6-v2")
        encode = lambda xs: enc.encode(xs, batch_size=batch)
        n_tok = sum(len(enc.tokenizer.encode(s, max_length=enc.max_seq_length)) for s in sentences)
    else:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        from dodai.weights.registry import resolve

        st = SentenceTransformer(str(resolve("all-minilm-l6-v2")), device="cpu")
        encode = lambda xs: torch.as_tensor(st.encode(xs, batch_size=batch, convert_to_numpy=True))
        n_tok = 0
    load_s = time.perf_counter() - t0
    encode(sentences[:batch])  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        emb = encode(sentences)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    probe = encode(sentences[:64]).tolist()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out_file).write_text(json.dumps({"times": times, "cpu": cpu, "load_s": load_s, "peak_rss_mb": peak_mb,
                                          "dim": int(emb.shape[1]), "tokens": n_tok, "probe": probe}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default=None, help="text file to build sentences from (default pydoc_data.topics)")
    ap.add_argument("--n", type=int, default=2000, help="number of sentences")
    ap.add_argument("--words", type=int, default=20, help="words per sentence")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="dodai,sentence-transformers")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sent-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out-file", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.sent_file, a.batch_size, a.threads, a.repeats, a.out_file)
        return
    if a.text:
        text = Path(a.text).read_text(encoding="utf-8")
    else:
        from pydoc_data.topics import topics

        text = "\n".join(topics[k] for k in sorted(topics))
    sentences = build_sentences(text, a.n, a.words)
    engines = a.engines.split(",")
    results: dict[str, dict] = {e: {"times": [], "cpu": [], "load_s": [], "peak_rss_mb": []} for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        sf = Path(tmp) / "sentences.json"
        sf.write_text(json.dumps(sentences))
        for rep in range(a.repeats):
            for engine in engines:
                of = Path(tmp) / f"{engine}.json"
                print(f"run {rep + 1}/{a.repeats}: {engine} ...", file=sys.stderr)
                subprocess.run([sys.executable, __file__, "--worker", engine, "--sent-file", str(sf),
                                "--out-file", str(of), "--batch-size", str(a.batch_size),
                                "--threads", str(a.threads), "--repeats", "1"], check=True)
                r = json.loads(of.read_text())
                acc = results[engine]
                acc["times"] += r["times"]
                acc["cpu"] += r["cpu"]
                acc["load_s"].append(r["load_s"])
                acc["peak_rss_mb"].append(r["peak_rss_mb"])
                acc["tokens"], acc["probe"] = r["tokens"], r["probe"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    print(f"{len(sentences)} sentences of {a.words} words, batch {a.batch_size}, {a.threads} threads, "
          f"median of {a.repeats}; nproc {os.cpu_count()}, {cpu}")
    if results.get("dodai", {}).get("tokens"):
        print(f"mean tokens per sentence (with [CLS]/[SEP]): {results['dodai']['tokens'] / len(sentences):.1f}")
    print("| engine | sentences/s (median wall) | wall runs (s) | CPU s per run (median) | load (s) "
          "| peak RSS (MB) | ratio vs sentence-transformers (wall / CPU) |")
    print("|---|---|---|---|---|---|---|")
    st = results.get("sentence-transformers")
    for engine, r in results.items():
        wall, cpu = statistics.median(r["times"]), statistics.median(r["cpu"])
        rate = len(sentences) / wall
        ratio = "-"
        if st:
            ratio = (f"{statistics.median(st['times']) / wall:.2f}× / "
                     f"{statistics.median(st['cpu']) / cpu:.2f}×")
        runs = ", ".join(f"{t:.1f}" for t in r["times"])
        print(f"| {engine} | {rate:.1f} | {runs} | {cpu:.1f} | {statistics.median(r['load_s']):.1f} "
              f"| {max(r['peak_rss_mb']):.0f} | {ratio} |")
    if "dodai" in results and st:
        import torch

        x, y = torch.tensor(results["dodai"]["probe"]), torch.tensor(st["probe"])
        print(f"min cosine dodai vs sentence-transformers on 64 sentences: {(x * y).sum(-1).min().item():.7f}")


if __name__ == "__main__":
    main()
