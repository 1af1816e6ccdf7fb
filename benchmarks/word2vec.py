"""Word2Vec: dodai vs gensim on the same python-docs sentences and hyper-parameters (skip-gram and CBOW).

Run: .venv/bin/python benchmarks/word2vec.py [--chars N] [--repeats R]
Prints median training seconds, the ratio dodai/gensim, and quality (plural percentile rank, 3CosAdd
plural-analogy accuracy) of each. gensim uses workers=1 (one core, as dodai)."""

import argparse
import statistics
import time

from gensim.models import Word2Vec

from dodai.embeddings.word2vec import WordVectors, train_word2vec
from dodai.experiments.r1_5 import corpus_sentences, evaluate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="sg,cbow")
    a = ap.parse_args()
    sents = corpus_sentences(a.chars)
    print(f"{len(sents)} sentences, {sum(map(len, sents))} words")
    hp = dict(vector_size=50, window=5, min_count=5, negative=5, sample=1e-3, epochs=5)
    for name, sg in (("sg", 1), ("cbow", 0)):
        if name not in a.models.split(","):
            continue
        lr = 0.025 if sg else 0.05
        td, tg = [], []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            kv = train_word2vec(sents, model=name, lr=lr, seed=r, **hp)
            td.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g = Word2Vec(sents, sg=sg, alpha=lr, min_alpha=1e-4, workers=1, seed=r, hs=0,
                         **{k: v for k, v in hp.items()})
            tg.append(time.perf_counter() - t0)
        gk = WordVectors(list(g.wv.index_to_key), g.wv.vectors)
        ed, eg = evaluate(kv), evaluate(gk)
        md, mg = statistics.median(td), statistics.median(tg)
        print(f"{name}: dodai {md:.2f}s gensim {mg:.2f}s ratio {md / mg:.2f}x | vocab {len(kv.words)} vs "
              f"{len(gk.words)} | plural rank {ed['plural_rank']:.3f} vs {eg['plural_rank']:.3f} | "
              f"analogy acc {ed['analogy_accuracy']:.3f} vs {eg['analogy_accuracy']:.3f} | random-pair cos "
              f"{ed['random_pair_cos']:.3f} vs {eg['random_pair_cos']:.3f}")


if __name__ == "__main__":
    main()
