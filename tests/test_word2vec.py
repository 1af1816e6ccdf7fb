"""R1.5 Word2Vec: subsampling / noise / LR formulas, SGNS and CBOW learn co-occurrence, 3CosAdd, word2vec format."""

import numpy as np
import pytest

from dodai.embeddings.word2vec import (
    WordVectors,
    keep_probability,
    linear_lr,
    noise_distribution,
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


@pytest.mark.parametrize("model", ["sg", "cbow"])
def test_training_groups_cooccurring_words(model):
    kv = train_word2vec(_topic_corpus(), vector_size=16, window=3, min_count=1, model=model, negative=5,
                        sample=0, epochs=3, lr=0.025, batch_size=256, seed=0)
    assert len(kv.words) == 12
    for w in kv.words:
        top = [x for x, _ in kv.most_similar(w, topn=5)]
        assert all(x[0] == w[0] for x in top), (w, top)
    again = train_word2vec(_topic_corpus(), vector_size=16, window=3, min_count=1, model=model,
                           sample=0, epochs=3, lr=0.025, batch_size=256, seed=0)
    np.testing.assert_array_equal(kv.vectors, again.vectors)  # seeded


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
