"""R1.5 Word2Vec: subsampling / noise / LR formulas, SGNS and CBOW learn co-occurrence, 3CosAdd, word2vec format."""

import math

import numpy as np
import pytest
import torch

from dodai.embeddings.word2vec import (
    WordVectors,
    _split_jobs,
    draw_noise,
    keep_probability,
    linear_lr,
    noise_distribution,
    sgns_step,
    train_word2vec,
)
from dodai.errors import DodaiError


def test_subsampling_noise_and_lr_formulas():
    counts = np.array([900, 90, 10])
    t = 1e-2
    f = counts / 1000
    expect = np.minimum(1, (np.sqrt(f / t) + 1) * t / f)
    np.testing.assert_allclose(keep_probability(counts, t), expect)
    assert keep_probability(counts, t)[0] < keep_probability(counts, t)[1] < 1.0
    np.testing.assert_allclose(keep_probability(counts, 0), 1.0)
    p = noise_distribution(counts)
    np.testing.assert_allclose(p, counts**0.75 / (counts**0.75).sum())
    assert linear_lr(0, 11, 0.1, 0.0) == pytest.approx(0.1)
    assert linear_lr(10, 11, 0.1, 0.0) == pytest.approx(0.0)
    assert linear_lr(5, 11, 0.1, 0.0) == pytest.approx(0.05)


def _topic_corpus(seed=0, n=400):
    """Two topics whose words only co-occur within their own topic."""
    rng = np.random.default_rng(seed)
    topics = [[f"a{i}" for i in range(6)], [f"b{i}" for i in range(6)]]
    return [list(rng.choice(topics[i % 2], size=8)) for i in range(n)]


@pytest.mark.parametrize("model,method,workers", [("sg", "fast", 1), ("cbow", "fast", 1), ("sg", "fast", 2),
                                                  ("cbow", "fast", 2), ("sg", "reference", 1),
                                                  ("cbow", "reference", 1)])
def test_training_groups_cooccurring_words(model, method, workers):
    kw = dict(vector_size=16, window=3, min_count=1, model=model, negative=5, sample=0, epochs=3,
              lr=0.025, batch_size=256, seed=0, method=method, workers=workers)
    kv = train_word2vec(_topic_corpus(), **kw)
    assert len(kv.words) == 12
    unit = kv.vectors / np.linalg.norm(kv.vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    for i, w in enumerate(kv.words):
        if workers == 1:  # deterministic: every one of the 5 nearest words is from the same topic
            top = [x for x, _ in kv.most_similar(w, topn=5)]
            assert all(x[0] == w[0] for x in top), (w, top)
        # Hogwild threads interleave differently from run to run (and under load an unlucky schedule once put
        # two other-topic words in a top 5), so with 2 workers the claim is the topic separation on average
        same = [sim[i, j] for j, u in enumerate(kv.words) if u != w and u[0] == w[0]]
        other = [sim[i, j] for j, u in enumerate(kv.words) if u[0] != w[0]]
        assert np.mean(same) > np.mean(other) + 0.2, (w, np.mean(same), np.mean(other))
    if workers == 1:  # Hogwild threads are not deterministic; one worker is
        np.testing.assert_array_equal(kv.vectors, train_word2vec(_topic_corpus(), **kw).vectors)


def _sgns_autograd(v, w_out, target, neg, weight):
    """The loss of sgns_step written out plainly, for autograd."""
    v = v.clone().requires_grad_()
    w = w_out.clone().requires_grad_()
    pos = torch.nn.functional.logsigmoid((w[target] * v).sum(1)).sum()
    other = (target[:, None] != neg[None, :]).to(v.dtype)  # a noise word equal to the target is skipped
    negs = (torch.nn.functional.logsigmoid(-(v @ w[neg].T)) * other).sum()
    (-(pos + weight * negs)).backward()
    return v.grad, w.grad


def test_sgns_step_equals_autograd_gradient_step():
    g = torch.Generator().manual_seed(0)
    V, D, B = 9, 6, 12
    w_out = torch.randn(V, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, D, generator=g, dtype=torch.float64)
    target = torch.randint(0, V, (B,), generator=g)
    target[:3] = 4  # repeated targets: their updates add up
    neg = torch.tensor([4, 1, 1, 7, 0])  # a repeated noise word, and one equal to some targets
    gv, gw = _sgns_autograd(v, w_out, target, neg, 5 / 3)
    w = w_out.clone()
    dv = sgns_step(v, w, target, neg, lr=0.1, neg_weight=5 / 3)
    torch.testing.assert_close(dv, -0.1 * gv)
    torch.testing.assert_close(w, w_out - 0.1 * gw)


def test_shared_negatives_give_the_expected_gradient_of_private_ones():
    # E over shared pools of the step on v equals the exact expectation with `negative` private noise words:
    # u_t (1 - s(u_t.v)) - negative * sum_w P_n(w) [w != t] s(u_w.v) u_w.
    rng = np.random.default_rng(0)
    counts = np.array([50, 20, 10, 5, 3, 2])
    p = noise_distribution(counts)
    cum = np.cumsum(p)
    ids = draw_noise(cum, rng, 200_000)
    np.testing.assert_allclose(np.bincount(ids, minlength=6) / len(ids), p, atol=3e-3)
    g = torch.Generator().manual_seed(1)
    w_out = torch.randn(6, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 4, generator=g, dtype=torch.float64)
    t, K, M = 2, 5, 4
    pools = torch.from_numpy(draw_noise(cum, rng, (3000, M)))
    steps = torch.stack([sgns_step(v, w_out.clone(), torch.tensor([t]), pool, 1.0, K / M)[0] for pool in pools])
    s = torch.sigmoid(w_out @ v[0])
    pw = torch.from_numpy(p) * (torch.arange(6) != t)
    exact = w_out[t] * (1 - s[t]) - K * ((pw * s)[:, None] * w_out).sum(0)
    se = steps.std(0) / math.sqrt(len(steps))
    assert (steps.mean(0) - exact).abs().le(4 * se + 1e-9).all(), (steps.mean(0), exact, se)


def test_jobs_cut_at_sentence_boundaries():
    sent = np.repeat(np.arange(6), [3, 10, 2, 2, 1, 4])  # sentence 1 is longer than a job
    jobs = _split_jobs(sent, len(sent), job_tokens=4)
    assert jobs[0][0] == 0 and jobs[-1][1] == len(sent)
    assert all(a < b for a, b in jobs) and all(b == c for (_, b), (c, _) in zip(jobs, jobs[1:]))
    for a, _ in jobs:
        assert a == 0 or sent[a - 1] != sent[a]  # every job starts a sentence


def test_analogy_3cosadd_on_constructed_vectors():
    # king = royal + male, queen = royal + female, etc. king - man + woman = queen exactly.
    royal, male, female, x = np.eye(4)
    words = ["king", "queen", "man", "woman", "apple"]
    vecs = np.stack([royal + male, royal + female, male, female, x + 0.1 * royal])
    kv = WordVectors(words, vecs)
    assert kv.analogy("man", "king", "woman")[0][0] == "queen"
    assert kv.analogy("king", "man", "queen")[0][0] == "woman"
    # Query words are excluded even when they are nearest.
    assert "king" not in [w for w, _ in kv.analogy("man", "king", "woman", topn=4)]
    sims = kv.most_similar("king", topn=4)
    assert sims[0][1] >= sims[1][1] >= sims[2][1]
    u = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    assert sims[0][1] == pytest.approx(float(max(u[i] @ u[0] for i in range(1, 5))), rel=1e-6)


def test_word2vec_format_round_trip_and_gensim_reads_ours(tmp_path):
    gensim_models = pytest.importorskip("gensim.models")
    rng = np.random.default_rng(0)
    kv = WordVectors(["the", "cat", "猫", "sat."], rng.standard_normal((4, 7)).astype(np.float32))
    p = kv.save_word2vec_format(tmp_path / "v.txt")
    back = WordVectors.load_word2vec_format(p)
    assert back.words == kv.words
    np.testing.assert_array_equal(back.vectors, kv.vectors)
    g = gensim_models.KeyedVectors.load_word2vec_format(str(p), binary=False)
    assert list(g.index_to_key) == kv.words
    np.testing.assert_array_equal(g.vectors, kv.vectors)
    # And we read what gensim writes.
    g.save_word2vec_format(str(tmp_path / "g.txt"), binary=False)
    ours = WordVectors.load_word2vec_format(tmp_path / "g.txt")
    assert ours.words == kv.words
    np.testing.assert_allclose(ours.vectors, kv.vectors, rtol=1e-6)


def test_hostile_inputs(tmp_path):
    with pytest.raises(DodaiError):
        train_word2vec([["a", "b"]], min_count=5)
    with pytest.raises(DodaiError):
        train_word2vec([["a", "a"]], model="glove", min_count=1)
    with pytest.raises(DodaiError):
        train_word2vec([["a", "a"]], window=0, min_count=1)
    with pytest.raises(DodaiError):
        train_word2vec([["a", "a"]], method="magic", min_count=1)
    with pytest.raises(DodaiError):
        train_word2vec([["a", "a"]], shared_negatives=0, min_count=1)
    with pytest.raises(DodaiError):
        train_word2vec([["a", "a"]], workers=0, min_count=1)
    kv = WordVectors(["a", "b"], np.eye(2))
    with pytest.raises(DodaiError):
        kv.most_similar("zzz")
    with pytest.raises(DodaiError):
        WordVectors(["a b", "c"], np.eye(2))
    with pytest.raises(DodaiError):
        WordVectors(["a", "a"], np.eye(2))
    bad = tmp_path / "bad.txt"
    bad.write_text("3 2\na 1 2\nb 1\n")
    with pytest.raises(DodaiError):
        WordVectors.load_word2vec_format(bad)
    bad.write_text("2 2\na 1 2\nb 1 x\n")
    with pytest.raises(DodaiError):
        WordVectors.load_word2vec_format(bad)
    bad.write_text("hello\n")
    with pytest.raises(DodaiError):
        WordVectors.load_word2vec_format(bad)
