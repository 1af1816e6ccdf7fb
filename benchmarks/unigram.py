"""Unigram tokenizer: dodai vs sentencepiece, side by side on the same text, in one run.

    .venv/bin/python benchmarks/unigram.py --data ../shared/data/ja_manpages.txt ../shared/data/austen.txt \
        [--vocab-size 8000] [--max-bytes 1000000] [--repeats 3]

For each file the first 90 % (at most --max-bytes of it) is training text, the last 10 % (at most
--max-bytes / 4) is held out. Both trainers get the same text, vocab size, character coverage
(0.9995) and byte fallback; sentencepiece runs with num_threads=1 (dodai is single-threaded).
Reported: training seconds (median), bytes per token on the held-out text (compression), and
single-thread encoding throughput in MB/s on the held-out text (median; dodai's word cache is
cleared before every repeat): dodai's ``encode`` (the compiled Viterbi of ``_native/unigram.c`` when a C
compiler exists) and its pure-Python fallback ``encode_python``, checked to give the same ids.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="UTF-8 text files (e.g. Japanese and English)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--max-bytes", type=int, default=1_000_000, help="training bytes taken per file")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of encoding (training: --train-repeats)")
    ap.add_argument("--train-repeats", type=int, default=1)
    ap.add_argument("--coverage", type=float, default=0.9995)
    args = ap.parse_args()

    import sentencepiece as spm

    from dodai.tokenizers.unigram import UnigramTokenizer

    train_parts, held_parts = [], []
    for f in args.data:
        t = Path(f).read_text(encoding="utf-8")
        cut = int(len(t) * 0.9)
        tr = t[:cut].encode()[: args.max_bytes].decode("utf-8", "ignore")
        ho = t[cut:].encode()[: args.max_bytes // 4].decode("utf-8", "ignore")
        train_parts.append(tr)
        held_parts.append(ho)
    train = "\n".join(train_parts)
    held = "\n".join(held_parts)
    nb_train, nb_held = len(train.encode()), len(held.encode())
    print(f"training text {nb_train / 1e6:.2f} MB, held-out {nb_held / 1e6:.2f} MB, vocab {args.vocab_size}",
          file=sys.stderr)

    sp_times, our_times = [], []
    blob = b""
    tok = None
    for _ in range(args.train_repeats):
        f = io.BytesIO()
        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(train.splitlines()), model_writer=f,
                                       vocab_size=args.vocab_size, model_type="unigram", byte_fallback=True,
                                       character_coverage=args.coverage, num_threads=1, minloglevel=2)
        sp_times.append(time.perf_counter() - t0)
        blob = f.getvalue()
        t0 = time.perf_counter()
        tok = UnigramTokenizer.train(train, args.vocab_size, byte_fallback=True, character_coverage=args.coverage)
        our_times.append(time.perf_counter() - t0)
        print(f"  train: sentencepiece {sp_times[-1]:.2f} s, dodai {our_times[-1]:.2f} s", file=sys.stderr)
    sp = spm.SentencePieceProcessor(model_proto=blob)

    sp_bpt = nb_held / len(sp.encode(held))
    our_bpt = nb_held / len(tok.encode(held))

    def rate(fn) -> float:
        ts = []
        for _ in range(args.repeats):
            tok._cache.clear()
            t0 = time.perf_counter()
            fn(held)
            ts.append(time.perf_counter() - t0)
        return nb_held / 1e6 / statistics.median(ts)

    sp_rate = rate(sp.encode)
    our_rate = rate(tok.encode)
    native = tok._native_encoder() is not None
    py_rate = rate(tok.encode_python)
    assert tok.encode(held) == tok.encode_python(held), "compiled and Python encoders disagree"
    per_file = []
    for name, h in zip(args.data, held_parts):
        nb = len(h.encode())
        per_file.append((Path(name).name, nb / len(sp.encode(h)), nb / len(tok.encode(h))))

    st, ot = statistics.median(sp_times), statistics.median(our_times)
    rows = [
        (f"train vocab {args.vocab_size} (s, median of {args.train_repeats})", f"{st:.2f}", f"{ot:.2f}",
         f"{ot / st:.1f}x time", "<= 3x"),
        ("bytes/token, held-out (all)", f"{sp_bpt:.3f}", f"{our_bpt:.3f}", f"{(our_bpt / sp_bpt - 1) * 100:+.1f} %",
         "within 2 %"),
    ] + [(f"bytes/token, held-out {n}", f"{a:.3f}", f"{b:.3f}", f"{(b / a - 1) * 100:+.1f} %", "")
         for n, a, b in per_file] + [
        (f"encode MB/s, 1 thread (median of {args.repeats}){'' if native else ' [no C compiler]'}",
         f"{sp_rate:.2f}", f"{our_rate:.2f}", f"{our_rate / sp_rate:.3f}x", ">= 0.2x"),
        (f"encode MB/s, dodai's pure-Python path (median of {args.repeats})", f"{sp_rate:.2f}", f"{py_rate:.2f}",
         f"{py_rate / sp_rate:.3f}x", ""),
    ]
    print("| measure | sentencepiece | dodai | dodai vs sentencepiece | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
