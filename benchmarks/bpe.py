"""Byte-level BPE: dodai vs HF ``tokenizers`` on the same text, back to back in one process.

  .venv/bin/python benchmarks/bpe.py --data ../shared/data/austen.txt ../shared/data/tinyshakespeare.txt

Measures (HF pinned to one thread: RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false):
  1. training, vocab 8,192, special <|endoftext|>, min_frequency 2, GPT-2 pattern on both sides
     (HF's ByteLevelBPETokenizer uses the GPT-2 regex), median of --repeats runs;
  2. encoding throughput (MB/s of UTF-8 input), single thread, ``encode`` per chunk of --chunk-lines
     lines, same chunks for both, median of --repeats warm runs (plus dodai's first, cold pass),
     per wall second and per CPU second of the process (the machine is shared):
     a) one vocabulary trained by dodai (GPT-4 pattern), loaded by dodai and by HF (ids asserted equal);
     b) HF's own trained tokenizer.json, loaded by HF and by dodai (ids asserted equal);
     c) HF at its normal speed, as its documentation recommends for many texts: ``encode_batch_fast`` (or
        ``encode_batch`` before tokenizers 0.21) over all
        chunks with its own thread pool (a child process without RAYON_NUM_THREADS, TOKENIZERS_PARALLELISM
        true), wall and CPU time; dodai has no batch API, so its row is the same single-thread encode.
  3. dodai's fast trainer vs the textbook reference loop on a smaller slice (--ref-bytes, --ref-merges).
Writes the table to benchmarks/results/bpe.md unless --no-write.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _time(fn, repeats):
    """-> (median wall seconds, median CPU seconds of this process, all wall times, last result).

    CPU time (all threads of the process) is reported beside wall time because the machine is shared:
    under load a process gets a fraction of a core, and CPU time is the steadier measure of work.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), walls, out


_HF_BATCH = """
import json, os, resource, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
chunks = json.load(open(sys.argv[2], encoding="utf-8"))
reps = int(sys.argv[3])
enc = getattr(tok, "encode_batch_fast", None) or tok.encode_batch  # _fast (0.21+) skips offsets: its fastest API
enc(chunks, add_special_tokens=False)  # warm-up (pool start, caches)
walls, cpus, ids = [], [], None
for _ in range(reps):
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
    out = enc(chunks, add_special_tokens=False)
    walls.append(time.perf_counter() - t0); r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    ids = [e.ids for e in out]
walls.sort(); cpus.sort()
print(json.dumps({"wall": walls[len(walls) // 2], "cpu": cpus[len(cpus) // 2], "n_ids": sum(map(len, ids)),
                  "threads": os.cpu_count(), "api": enc.__name__}))
"""


def hf_batch(tokenizer_json: Path, chunks: list[str], repeats: int) -> dict:
    """HF's encode_batch with its own thread pool, in a child process (RAYON_NUM_THREADS is per process)."""
    import json

    env = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"}
    env["TOKENIZERS_PARALLELISM"] = "true"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(chunks, f)
    try:
        r = subprocess.run([sys.executable, "-c", _HF_BATCH, str(tokenizer_json), f.name, str(repeats)],
                           capture_output=True, text=True, env=env, check=True)
    finally:
        os.unlink(f.name)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=[str(DATA / "austen.txt"), str(DATA / "tinyshakespeare.txt")])
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-lines", type=int, default=100)
    ap.add_argument("--ref-bytes", type=int, default=100_000, help="text slice for the reference-loop comparison")
    ap.add_argument("--ref-merges", type=int, default=300)
    ap.add_argument("--max-bytes", type=int, default=None, help="use only the first N characters of the data")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--append", action="store_true", help="append this run to the results file, not replace it")
    args = ap.parse_args(argv)

    from tokenizers import ByteLevelBPETokenizer, Tokenizer

    from dodai.tokenizers.bpe import ByteLevelBPE, count_words, train_fast
    from dodai.tokenizers.bpe_reference import train_reference
    from dodai.tokenizers.pretokenize import PreTokenizer

    text = "\n".join(Path(p).read_text(encoding="utf-8") for p in args.data)
    if args.max_bytes:
        text = text[: args.max_bytes]
    mb = len(text.encode("utf-8")) / 1e6
    print(f"data: {', '.join(Path(p).name for p in args.data)}: {mb:.2f} MB", file=sys.stderr)
    rows = []

    # 1. training
    def hf_train():
        h = ByteLevelBPETokenizer()
        h.train_from_iterator([text], vocab_size=args.vocab_size, min_frequency=2,
                              special_tokens=["<|endoftext|>"], show_progress=False)
        return h

    def dodai_train():
        return ByteLevelBPE.train(text, args.vocab_size, pattern="gpt2", min_frequency=2)

    d_med, d_cpu, d_all, d_tok = _time(dodai_train, args.repeats)
    h_med, h_cpu, h_all, h_tok = _time(hf_train, args.repeats)
    print(f"train: dodai {d_all}  HF {h_all}", file=sys.stderr)
    rows.append((f"train vocab {args.vocab_size} (GPT-2 pattern), wall s / CPU s", f"{d_med:.2f} / {d_cpu:.2f}",
                 f"{h_med:.2f} / {h_cpu:.2f}", f"{d_med / h_med:.2f}x / {d_cpu / h_cpu:.2f}x HF time"))
    d_bpt = mb * 1e6 / len(d_tok.encode(text))
    h_bpt = mb * 1e6 / len(h_tok.encode(text).ids)
    rows.append(("  bytes/token of the result on the data", f"{d_bpt:.3f}", f"{h_bpt:.3f}", ""))

    # 2. encoding
    lines = text.splitlines(keepends=True)
    chunks = ["".join(lines[i:i + args.chunk_lines]) for i in range(0, len(lines), args.chunk_lines)]

    def enc_all(encode):
        return [encode(c) for c in chunks]

    with tempfile.TemporaryDirectory() as tmp:
        ours = ByteLevelBPE.train(text, args.vocab_size, pattern="gpt4")
        path = ours.save(Path(tmp) / "ours.json")
        hf_ours = Tokenizer.from_file(str(path))
        hf_path = Path(tmp) / "hf.json"
        h_tok.save(str(hf_path))
        hf_own = Tokenizer.from_file(str(hf_path))
        ours_on_hf = ByteLevelBPE.load(hf_path)

        for label, dodai_tok, hf in (("dodai-trained vocab (GPT-4 pattern)", ours, hf_ours),
                                     ("HF-trained vocab (ByteLevel, GPT-2 regex)", ours_on_hf, hf_own)):
            d_enc = dodai_tok.encode

            def h_enc(c, hf=hf):
                return hf.encode(c, add_special_tokens=False).ids

            dodai_tok._cache.clear()
            _, cold, _, d_ids = _time(lambda e=d_enc: enc_all(e), 1)
            assert d_ids == enc_all(h_enc), f"{label}: dodai and HF ids differ"
            dm, dc, _, _ = _time(lambda e=d_enc: enc_all(e), args.repeats)
            hm, hc, _, _ = _time(lambda e=h_enc: enc_all(e), args.repeats)
            rows.append((f"encode MB/s wall / per CPU s, {label}, HF one thread, encode per chunk",
                         f"{mb / dm:.2f} / {mb / dc:.2f} (cold pass {mb / cold:.2f} per CPU s)",
                         f"{mb / hm:.2f} / {mb / hc:.2f}", f"{hm / dm:.2f}x / {hc / dc:.2f}x HF throughput"))
            print(rows[-1], file=sys.stderr)
            tj = Path(tmp) / "for_batch.json"
            hf.save(str(tj))
            b = hf_batch(tj, chunks, args.repeats)
            assert b["n_ids"] == sum(map(len, d_ids)), f"{label}: HF batch ids differ in count"
            rows.append((f"encode MB/s wall / per CPU s, {label}, HF {b['api']} on its own threads "
                         f"({b['threads']} cores)", f"{mb / dm:.2f} / {mb / dc:.2f} (one thread)",
                         f"{mb / b['wall']:.2f} / {mb / b['cpu']:.2f}",
                         f"{b['wall'] / dm:.2f}x HF wall throughput / {b['cpu'] / dc:.2f}x per CPU s"))
            print(rows[-1], file=sys.stderr)

    # 3. fast trainer vs the textbook loop
    small = text[: args.ref_bytes]
    wc = count_words(small, PreTokenizer.from_pattern("gpt4"), ["<|endoftext|>"])
    f_med, _, _, f_out = _time(lambda: train_fast(wc, args.ref_merges), args.repeats)
    r_med, _, _, r_out = _time(lambda: train_reference(wc, args.ref_merges), 1)
    assert f_out == r_out, "fast trainer and reference disagree"
    rows.append((f"merge loop, {args.ref_merges} merges on {args.ref_bytes / 1e3:.0f} KB, s", f"{f_med:.3f}",
                 f"reference loop {r_med:.2f}", f"{r_med / f_med:.0f}x faster than the reference"))

    import tokenizers

    head = ["measure", "dodai", "HF tokenizers " + tokenizers.__version__, "ratio"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    cmd = "python benchmarks/bpe.py " + " ".join(sys.argv[1:]) if argv is None else "main(...)"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    md = [
        "# Byte-level BPE: dodai vs HF tokenizers",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}",
        f"- machine: {os.cpu_count()} cores (nproc), {_cpu()}, Python {platform.python_version()}; "
        "shared with other jobs and busy, so absolute times are noisy: compare the ratios",
        f"- command: `{cmd}`",
        f"- data: {', '.join(Path(p).name for p in args.data)}"
        f"{f' (first {args.max_bytes:,} characters)' if args.max_bytes else ''} ({mb:.2f} MB); encode in chunks of "
        f"{args.chunk_lines} lines ({len(chunks)} chunks), ids asserted identical between dodai and HF",
        f"- HF single-threaded (RAYON_NUM_THREADS=1) for training and the per-chunk encode rows; the encode_batch "
        f"rows run HF as its docs recommend (batch API, its own thread pool, a child process); medians of "
        f"{args.repeats} runs (training) and of {args.repeats} warm runs after one cold pass (encode); CPU = process "
        f"CPU time, all threads",
        f"- load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared)",
        "",
        *table,
        "",
    ]
    print("\n".join(md))
    if not args.no_write:
        out = REPO / "benchmarks" / "results" / "bpe.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        old = out.read_text(encoding="utf-8") + "\n" if args.append and out.exists() else ""
        out.write_text(old + "\n".join(md), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
