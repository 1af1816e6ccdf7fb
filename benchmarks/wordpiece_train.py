"""WordPiece training: dodai's trainer vs HF ``tokenizers``' WordPieceTrainer, same text, in one run.

    .venv/bin/python benchmarks/wordpiece_train.py --data ../shared/data/austen.txt [--vocab-size 8000] \
        [--max-bytes 1000000] [--repeats 3]

Both get the first 90 % of the file (at most --max-bytes), BERT normalisation and pre-tokenisation
(lower case, accents stripped) and the five BERT special tokens. Reported: training seconds (median
of --repeats), the vocabulary size reached, and tokens per word on the held-out last 10 % (quality).
HF's trainer runs on ``RAYON_NUM_THREADS`` threads (set it to 1 for a single-thread comparison;
dodai's trainer is single-threaded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a UTF-8 text file")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--max-bytes", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from dodai.tokenizers.wordpiece_trainer import SPECIALS, count_words, train

    text = Path(args.data).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    tr = text[:cut].encode()[: args.max_bytes].decode("utf-8", "ignore")
    held = text[cut:].encode()[: args.max_bytes // 4].decode("utf-8", "ignore")
    n_words = sum(count_words(held).values())
    print(f"training text {len(tr.encode()) / 1e6:.2f} MB, held-out {len(held.encode()) / 1e6:.2f} MB "
          f"({n_words:,} words), vocab {args.vocab_size}", file=sys.stderr)

    ours_t, hf_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        hf = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        hf.normalizer = normalizers.BertNormalizer()
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        hf.train_from_iterator(tr.splitlines(), trainers.WordPieceTrainer(
            vocab_size=args.vocab_size, special_tokens=list(SPECIALS), show_progress=False))
        hf_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours = train(tr, args.vocab_size)
        ours_t.append(time.perf_counter() - t0)
        print(f"  train: HF {hf_t[-1]:.2f} s, dodai {ours_t[-1]:.2f} s", file=sys.stderr)
    hf_tpw = len(hf.encode(held, add_special_tokens=False).ids) / n_words
    our_tpw = len(ours.encode(held, add_special_tokens=False)) / n_words
    a, b = statistics.median(hf_t), statistics.median(ours_t)
    print("| measure | HF tokenizers | dodai | dodai vs HF |")
    print("|---|---|---|---|")
    print(f"| train (s, median of {args.repeats}) | {a:.2f} | {b:.2f} | {b / a:.1f}x time |")
    print(f"| vocabulary size | {hf.get_vocab_size()} | {ours.vocab_size} | |")
    print(f"| tokens per word, held-out | {hf_tpw:.3f} | {our_tpw:.3f} | {(our_tpw / hf_tpw - 1) * 100:+.1f} % |")


if __name__ == "__main__":
    main()
