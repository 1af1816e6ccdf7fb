"""Word2Vec (R1.5): skip-gram with negative sampling and CBOW, trained in PyTorch.

After Mikolov et al. 2013, "Efficient Estimation of Word Representations in Vector Space" (CBOW, skip-gram)
and "Distributed Representations of Words and Phrases and their Compositionality" (negative sampling,
subsampling of frequent words). The ingredients, as in the papers and the reference word2vec tool:

- **Subsampling**: a token of word w with corpus frequency f(w) = c(w)/N is kept with probability
  ``(sqrt(f / t) + 1) * t / f`` (capped at 1), t = 1e-3 by default: frequent words are thinned out.
- **Dynamic window**: for each centre token a window b is drawn uniformly from 1..window, so near
  neighbours are used more often than far ones.
- **Negative sampling**: loss per (centre c, context o) pair is
  ``-log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c)`` with k = 1..negative words drawn from the
  noise distribution P_n(w) proportional to c(w)^0.75. CBOW uses the mean of the context input vectors
  as v and the centre word as the target; as in the reference tool, every context vector is updated with
  the full gradient of that mean.
- **Linear learning-rate decay** from ``lr`` to ``min_lr`` over all training steps; plain SGD on a summed
  loss over each batch of pairs (a batched form of the per-pair updates of the original).

Vectors are saved in the word2vec text format: a header ``"<count> <dim>"``, then one line per word,
``word v1 v2 ...`` (readable by gensim's ``KeyedVectors.load_word2vec_format``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from dodai.errors import DodaiError
from dodai.io import atomic_write_text, read_user_text


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each token of a word with the given counts (subsampling, t = sample)."""
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    f = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(f / sample) + 1.0) * sample / f)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """P_n(w) proportional to count(w)^power."""
    p = np.asarray(counts, dtype=np.float64) ** power
    return p / p.sum()


def linear_lr(step: int, total: int, lr: float, min_lr: float) -> float:
    """lr at ``step`` of ``total``: linear from lr (step 0) to min_lr (last step)."""
    if total <= 1:
        return lr
    return lr + (min_lr - lr) * step / (total - 1)


class WordVectors:
    """Words and their vectors (V, D); nearest neighbours by cosine, analogies by 3CosAdd, word2vec I/O."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(words) != vectors.shape[0]:
            raise DodaiError(f"{len(words)} words but vectors of shape {vectors.shape}")
        if len(set(words)) != len(words):
            raise DodaiError("duplicate words in the vocabulary")
        for w in words:
            if not w or any(ch.isspace() for ch in w):
                raise DodaiError(f"word {w!r} is empty or holds whitespace (not storable in word2vec format)")
        self.words = list(words)
        self.vectors = vectors
        self.index = {w: i for i, w in enumerate(self.words)}

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._id(word)]

    def _id(self, word: str) -> int:
        if word not in self.index:
            raise DodaiError(f"word {word!r} is not in the vocabulary")
        return self.index[word]

    def _unit(self) -> np.ndarray:
        n = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return self.vectors / np.maximum(n, 1e-12)

    def most_similar_to_vector(self, v: np.ndarray, topn: int = 10, exclude: Iterable[str] = ()) -> list:
        u = self._unit()
        sims = u @ (v / max(np.linalg.norm(v), 1e-12))
        for w in exclude:
            sims[self._id(w)] = -np.inf
        order = np.argsort(-sims, kind="stable")[:topn]
        return [(self.words[i], float(sims[i])) for i in order if np.isfinite(sims[i])]

    def most_similar(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        """The topn words of highest cosine similarity to ``word`` (the word itself excluded)."""
        return self.most_similar_to_vector(self._unit()[self._id(word)], topn, exclude=[word])

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """a : b :: c : ?  by 3CosAdd (Mikolov et al. 2013): argmax_d cos(d, b - a + c) over unit
        vectors, excluding a, b and c (e.g. man : king :: woman : queen)."""
        u = self._unit()
        target = u[self._id(b)] - u[self._id(a)] + u[self._id(c)]
        return self.most_similar_to_vector(target, topn, exclude=[a, b, c])

    def save_word2vec_format(self, path: str | Path) -> Path:
        """word2vec text format: '<V> <D>' then 'word x1 ... xD' per line (float32 repr, round-trips)."""
        lines = [f"{len(self.words)} {self.vectors.shape[1]}"]
        for w, v in zip(self.words, self.vectors):
            lines.append(w + " " + " ".join(repr(float(x)) for x in v))
        atomic_write_text(Path(path), "\n".join(lines) + "\n")
        return Path(path)

    @classmethod
    def load_word2vec_format(cls, path: str | Path) -> WordVectors:
        text = read_user_text(path)
        lines = text.rstrip("\n").split("\n")
        try:
            count, dim = (int(x) for x in lines[0].split())
        except ValueError:
            raise DodaiError(f"{path}: first line must be '<count> <dim>', got {lines[0][:60]!r}") from None
        if count < 1 or dim < 1 or len(lines) - 1 != count:
            raise DodaiError(f"{path}: header says {count} words of dim {dim}, file has {len(lines) - 1} lines")
        words, vecs = [], np.empty((count, dim), dtype=np.float32)
        for i, line in enumerate(lines[1:]):
            parts = line.rstrip().split(" ")
            if len(parts) != dim + 1:
                raise DodaiError(f"{path}:{i + 2}: expected a word and {dim} numbers, got {len(parts) - 1}")
            try:
                vecs[i] = [float(x) for x in parts[1:]]
            except ValueError:
                raise DodaiError(f"{path}:{i + 2}: not a number in the vector") from None
            words.append(parts[0])
        return cls(words, vecs)


def build_vocab(sentences: Sequence[Sequence[str]], min_count: int) -> tuple[list[str], np.ndarray]:
    """Words with count >= min_count, most frequent first (ties alphabetically), and their counts."""
    c = Counter(chain.from_iterable(sentences))
    items = sorted(((w, n) for w, n in c.items() if n >= min_count), key=lambda x: (-x[1], x[0]))
    if not items:
        raise DodaiError(f"no word occurs at least min_count={min_count} times")
    return [str(w) for w, _ in items], np.array([n for _, n in items], dtype=np.int64)


def train_word2vec(sentences: Sequence[Sequence[str]], vector_size: int = 50, window: int = 5,
                   min_count: int = 2, model: str = "sg", negative: int = 5, sample: float = 1e-3,
                   epochs: int = 5, lr: float = 0.025, min_lr: float = 1e-4, batch_size: int | None = None,
                   seed: int = 0, method: str = "fast", shared_negatives: int | None = None,
                   workers: int = 1) -> WordVectors:
    """Train skip-gram (``model='sg'``) or CBOW (``model='cbow'``) with negative sampling; returns the
    input vectors.

    ``method='fast'`` (default): hand-written sparse SGD on mini-batches of ``batch_size`` examples, with
    ``shared_negatives`` noise words drawn once per batch and shared by all its examples (see
    :func:`sgns_step`), run by ``workers`` Hogwild threads. Defaults: skip-gram 1024 pairs and 16 shared
    noise words per batch; CBOW 256 centre words and 64 noise words. A batch sums its updates before
    applying them, so each shared noise word gets ``batch * negative / shared`` summed updates; CBOW's
    context means point in similar directions and its lr is twice skip-gram's, so it needs fewer per noise
    word: with 1024/16 CBOW diverged in our runs, with 256/16 it trained but its analogy accuracy was
    2.4 points under gensim's, with 256/64 it matched (benchmarks/results/word2vec.md).
    ``method='reference'``: the plain version, autograd on the loss with ``negative`` private noise words
    per example (slow; kept to check against).
    Deterministic for a given seed when ``workers == 1``. torch runs on one intra-op thread per worker: the
    matrices are tiny, and intra-op threads only add synchronisation (the previous setting is restored)."""
    import torch

    if model not in ("sg", "cbow"):
        raise DodaiError(f"model must be 'sg' or 'cbow', got {model!r}")
    if method not in ("fast", "reference"):
        raise DodaiError(f"method must be 'fast' or 'reference', got {method!r}")
    if batch_size is None:
        batch_size = 512 if method == "reference" else 1024 if model == "sg" else 256
    if shared_negatives is None:
        shared_negatives = 16 if model == "sg" else 64
    if min(vector_size, window, negative, epochs, batch_size, min_count, shared_negatives, workers) < 1:
        raise DodaiError("vector_size, window, negative, epochs, batch_size, min_count, shared_negatives and "
                         "workers must be >= 1")
    if not lr > 0 or min_lr < 0:
        raise DodaiError(f"need lr > 0 and min_lr >= 0, got {lr}, {min_lr}")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if method == "reference":
            return _train(sentences, vector_size, window, min_count, model, negative, sample, epochs, lr, min_lr,
                          batch_size, seed)
        return _train_fast(sentences, vector_size, window, min_count, model, negative, sample, epochs, lr,
                           min_lr, batch_size, seed, shared_negatives, workers)
    finally:
        torch.set_num_threads(prev)


def _corpus_ids(sentences, min_count):
    """Vocabulary, counts, the token ids of all kept words and the sentence number of each token."""
    words, counts = build_vocab(sentences, min_count)
    index = {w: i for i, w in enumerate(words)}
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    ids = np.fromiter(map(index.get, chain.from_iterable(sentences), repeat(-1)), dtype=np.int64,
                      count=int(lengths.sum()))
    sent = np.repeat(np.arange(len(sentences)), lengths)
    known = ids >= 0  # words under min_count are dropped before windows are drawn, as in word2vec
    return words, counts, ids[known], sent[known]


def _init_vectors(V, D, seed):
    """word2vec's initialisation: input vectors uniform in [-0.5/D, 0.5/D], output vectors zero."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(V, D, generator=gen) - 0.5) / D, torch.zeros(V, D), gen


def _train(sentences, vector_size, window, min_count, model, negative, sample, epochs, lr, min_lr, batch_size,
           seed) -> WordVectors:
    """The reference trainer: autograd on the summed loss of each batch, private negatives per example."""
    import torch

    words, counts, tokens, sent = _corpus_ids(sentences, min_count)
    V, D = len(words), vector_size
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    w_in, w_out, gen = _init_vectors(V, D, seed)
    w_in.requires_grad_()
    w_out.requires_grad_()
    keep = keep_probability(counts, sample)
    noise = torch.from_numpy(noise_distribution(counts))

    epoch_batches = [_make_examples(tokens, sent, keep, window, model, rng) for _ in range(epochs)]
    n_ex = [len(e[0]) for e in epoch_batches]
    total_steps = sum(math.ceil(n / batch_size) for n in n_ex)
    step = 0
    for centre, ctx, mask in epoch_batches:
        perm = rng.permutation(len(centre))
        for s in range(0, len(perm), batch_size):
            sl = perm[s:s + batch_size]
            c = torch.from_numpy(centre[sl])
            x = torch.from_numpy(ctx[sl])  # sg: (B,) context word; cbow: (B, 2*window) context ids
            neg = torch.multinomial(noise, len(sl) * negative, replacement=True, generator=gen).view(-1, negative)
            if model == "sg":
                v, target = w_in[c], x  # input: the centre; predict each context word
            else:
                m = torch.from_numpy(mask[sl]).float()
                ssum = (w_in[x] * m[..., None]).sum(1)  # (B, D) sum of the context vectors
                # Forward: the mean. Backward: each context vector receives the full gradient of the mean
                # (not 1/count of it), as in the reference word2vec tool's CBOW update.
                v = ssum.detach() / m.sum(1, keepdim=True) + (ssum - ssum.detach())
                target = c
            pos = (w_out[target] * v).sum(-1)
            negs = torch.einsum("bkd,bd->bk", w_out[neg], v)
            loss = -(torch.nn.functional.logsigmoid(pos).sum() + torch.nn.functional.logsigmoid(-negs).sum())
            loss.backward()
            a = linear_lr(step, total_steps, lr, min_lr)
            with torch.no_grad():
                w_in -= a * w_in.grad
                w_out -= a * w_out.grad
                w_in.grad = None
                w_out.grad = None
            step += 1
    return WordVectors(words, w_in.detach().numpy().copy())


def sgns_step(v, w_out, target, neg, lr: float, neg_weight: float):
    """One mini-batch SGD step of negative sampling with a shared pool of noise words, without autograd.

    v (B, D): the input vectors (skip-gram: the centre's; CBOW: the mean of the context's); target (B,) the
    words to predict; neg (M,) noise words shared by the whole batch. Loss per example b:

        -log sigma(u_t . v_b) - neg_weight * sum_{j: neg_j != t_b} log sigma(-u_{neg_j} . v_b)

    With M shared words and ``neg_weight = negative / M`` the expected gradient is that of ``negative``
    private noise words per example (each noise term is an unbiased draw from P_n), but the noise scores
    become one GEMM (B, D) x (D, M) instead of B small gathers: the trick of sharing negatives across a
    mini-batch used by GPU/many-core word2vec implementations (Ji et al. 2016, "Parallelizing Word2Vec in
    Shared and Distributed Memory"; BlazingText, Gupta & Khare 2017). As in the reference tool, a noise word
    equal to the target is skipped. Updates ``w_out`` in place (rows of ``target`` and ``neg``) with the
    gradients at the current parameters and returns the step for v, ``-lr * dLoss/dv`` (B, D), for the
    caller to scatter into the input vectors."""
    import torch

    u = w_out.index_select(0, target)  # (B, D)
    g_pos = torch.sigmoid((u * v).sum(1)).sub_(1.0).mul_(-lr)  # lr * (1 - sigma(u.v)) = -lr dL/dscore
    u_neg = w_out.index_select(0, neg)  # (M, D)
    g_neg = torch.sigmoid(v @ u_neg.T).mul_(-lr * neg_weight)  # (B, M): -lr dL/dscore of each noise pair
    g_neg.masked_fill_(target[:, None] == neg[None, :], 0.0)
    dv = torch.addmm(u * g_pos[:, None], g_neg, u_neg)  # (B, D)
    w_out.index_add_(0, target, v * g_pos[:, None])
    w_out.index_add_(0, neg, g_neg.T @ v)
    return dv


def draw_noise(cum: np.ndarray, rng: np.random.Generator, size) -> np.ndarray:
    """Word ids drawn from the distribution whose cumulative sums are ``cum`` (last entry 1), by inverse CDF:
    the vectorised form of the reference tool's unigram table."""
    return np.searchsorted(cum, rng.random(size), side="right").clip(0, len(cum) - 1)


def _split_jobs(sent: np.ndarray, n_tokens: int, job_tokens: int) -> list[tuple[int, int]]:
    """Token ranges of about ``job_tokens`` tokens, cut at sentence boundaries (windows stay whole)."""
    cuts = [0]
    while cuts[-1] < n_tokens:
        k = cuts[-1] + job_tokens
        if k >= n_tokens:
            cuts.append(n_tokens)
            break
        # Cut at the start of the sentence holding token k (after it, if that sentence fills the job).
        k = int(np.searchsorted(sent, sent[k], side="left"))
        k = k if k > cuts[-1] else int(np.searchsorted(sent, sent[cuts[-1] + job_tokens], side="right"))
        cuts.append(min(k, n_tokens))
    return list(zip(cuts[:-1], cuts[1:]))


def _train_fast(sentences, vector_size, window, min_count, model, negative, sample, epochs, lr, min_lr,
                batch_size, seed, shared_negatives, workers, job_tokens: int = 50_000) -> WordVectors:
    """Mini-batch sparse SGD (:func:`sgns_step`) over jobs of ~job_tokens tokens, epoch after epoch.

    Each job subsamples its tokens, draws dynamic windows and builds all its (centre, context) pairs with
    NumPy in bulk, then walks them in batches (in corpus order, like the reference tool). With workers > 1,
    threads take jobs from a shared counter and update the same matrices without locks, Hogwild-style
    (Recht et al. 2011; the reference tool does the same): torch kernels release the GIL, and concurrent
    sparse updates rarely touch the same rows at the same time. As in gensim, an epoch ends before the
    next one starts. The learning rate decays linearly with the
    job/batch position over the whole run."""
    import threading

    import torch

    words, counts, tokens, sent = _corpus_ids(sentences, min_count)
    w_in, w_out, _ = _init_vectors(len(words), vector_size, seed)
    keep = keep_probability(counts, sample)
    cum = np.cumsum(noise_distribution(counts))
    cum /= cum[-1]
    # Jobs small enough that every worker gets several per epoch; epochs run one after the other.
    job_tokens = max(1, min(job_tokens, math.ceil(len(tokens) / (4 * workers))))
    jobs = [(e, a, b) for e in range(epochs) for a, b in _split_jobs(sent, len(tokens), job_tokens)]
    per_epoch = len(jobs) // epochs
    n_jobs = len(jobs)
    neg_weight = negative / shared_negatives
    lock = threading.Lock()
    next_job = [0]
    errors: list[BaseException] = []

    def run_job(j: int):
        _, a, b = jobs[j]
        rng = np.random.default_rng([seed, j])
        centre, ctx, mask = _make_examples(tokens[a:b], sent[a:b], keep, window, "cbow", rng)
        rows, cols = np.nonzero(mask)
        flat = torch.from_numpy(ctx[rows, cols])  # context word of each (centre, context) pair
        if model == "sg":
            inp_all, tgt_all = torch.from_numpy(centre[rows]), flat
            n = len(rows)
        else:
            tgt_all, seg_all = torch.from_numpy(centre), torch.from_numpy(rows)
            inv_count = torch.from_numpy(1.0 / np.bincount(rows, minlength=len(centre))).float().unsqueeze(1)
            starts = np.searchsorted(rows, np.arange(0, len(centre) + batch_size, batch_size))
            n = len(centre)
        n_batches = max(1, math.ceil(n / batch_size))
        negs = torch.from_numpy(draw_noise(cum, rng, (n_batches, shared_negatives)))
        for i, s in enumerate(range(0, n, batch_size)):
            a_lr = lr + (min_lr - lr) * (j + i / n_batches) / n_jobs
            if model == "sg":
                inp = inp_all[s:s + batch_size]
                dv = sgns_step(w_in.index_select(0, inp), w_out, tgt_all[s:s + batch_size], negs[i], a_lr,
                               neg_weight)
                w_in.index_add_(0, inp, dv)
            else:
                p, q = starts[i], starts[i + 1]
                seg = seg_all[p:q] - s  # batch row of each context word
                ids = flat[p:q]
                tgt = tgt_all[s:s + batch_size]
                h = torch.zeros(len(tgt), vector_size).index_add_(0, seg, w_in.index_select(0, ids))
                h *= inv_count[s:s + batch_size]  # the mean of the context vectors
                dv = sgns_step(h, w_out, tgt, negs[i], a_lr, neg_weight)
                # Every context word receives the full step of the mean, as in the reference tool's CBOW.
                w_in.index_add_(0, ids, dv.index_select(0, seg))

    def worker(end: int):
        torch.set_num_threads(1)  # per thread under OpenMP
        try:
            while True:
                with lock:
                    j = next_job[0]
                    next_job[0] += 1
                if j >= end or errors:
                    return
                run_job(j)
        except BaseException as e:  # surfaced in the calling thread
            errors.append(e)

    for e in range(epochs):
        end = (e + 1) * per_epoch
        next_job[0] = e * per_epoch
        if workers == 1:
            worker(end)
        else:
            threads = [threading.Thread(target=worker, args=(end,), daemon=True) for _ in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
    return WordVectors(words, w_in.numpy().copy())


def _make_examples(tokens: np.ndarray, sent: np.ndarray, keep: np.ndarray, window: int, model: str,
                   rng: np.random.Generator):
    """One epoch of training examples after subsampling, with a dynamic window per centre token.

    sg: (centre (P,), context (P,), None); cbow: (centre (N,), context ids (N, 2*window), mask (N, 2*window)).
    Windows never cross sentence boundaries."""
    kept = rng.random(len(tokens)) < keep[tokens]
    t, s = tokens[kept], sent[kept]
    n = len(t)
    b = rng.integers(1, window + 1, size=n)  # the dynamic window of each centre
    offsets = [d for d in range(-window, window + 1) if d != 0]
    ctx = np.zeros((n, len(offsets)), dtype=np.int64)
    mask = np.zeros((n, len(offsets)), dtype=bool)
    idx = np.arange(n)
    for j, d in enumerate(offsets):
        k = idx + d
        ok = (k >= 0) & (k < n) & (abs(d) <= b)
        kk = np.clip(k, 0, max(n - 1, 0))
        ok &= s[kk] == s
        ctx[:, j] = t[kk]
        mask[:, j] = ok
    if model == "sg":
        rows, cols = np.nonzero(mask)
        return t[rows], ctx[rows, cols], None
    has = mask.any(1)
    return t[has], ctx[has], mask[has]
