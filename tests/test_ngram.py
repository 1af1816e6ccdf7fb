"""R1.1 count-based n-gram LMs: hand-worked MLE / add-k / Kneser-Ney values, proper distributions, sampling."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.basics.ngram import NGramLM
from dodai.errors import DodaiError

CORPUS = [0, 1, 0, 2, 0, 1]  # V = 3; bigrams with BOS: (B,0) (0,1) (1,0) (0,2) (2,0) (0,1)


def test_mle_equals_counts_over_totals():
    lm = NGramLM(2, "mle").fit(CORPUS)
    # After 0: 1 twice, 2 once.
    assert lm.prob([0], 1) == pytest.approx(2 / 3)
    assert lm.prob([0], 2) == pytest.approx(1 / 3)
    assert lm.prob([0], 0) == 0.0
    assert lm.prob([1], 0) == pytest.approx(1.0)
    assert lm.prob([], 0) == pytest.approx(1.0)  # start of document: only 0 ever starts one
    uni = NGramLM(1, "mle").fit(CORPUS)
    assert [uni.prob([], w) for w in range(3)] == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def test_add_k_closed_form():
    k = 0.5
    lm = NGramLM(2, "add_k", k=k).fit(CORPUS)
    V = 3
    assert lm.prob([0], 1) == pytest.approx((2 + k) / (3 + k * V))
    assert lm.prob([0], 0) == pytest.approx((0 + k) / (3 + k * V))
    assert lm.prob([2], 1) == pytest.approx(k / (1 + k * V))


def test_kneser_ney_hand_worked_bigram():
    D = 0.75
    lm = NGramLM(2, "kn", discount=D).fit(CORPUS)
    # Continuation counts N1+(. w): distinct left neighbours of w: 0 <- {B,1,2}, 1 <- {0}, 2 <- {0}.
    cont = {0: 3, 1: 1, 2: 1}
    total, types, V = 5, 3, 3
    p_uni = {w: max(c - D, 0) / total + D * types / total / V for w, c in cont.items()}
    assert sum(p_uni.values()) == pytest.approx(1.0)
    # After 0: counts 1->2, 2->1 (c(0) = 3, two distinct followers).
    for w, c in {0: 0, 1: 2, 2: 1}.items():
        expect = max(c - D, 0) / 3 + D * 2 / 3 * p_uni[w]
        assert lm.prob([0], w) == pytest.approx(expect)
    tri = NGramLM(3, "kn", discount=D).fit(CORPUS)
    # History (2, 1) never occurs: the trigram level passes the bigram KN estimate p(w | 1) through.
    # Bigram level of the trigram model uses continuation counts N1+(. 1 w): (0,1,0) only -> {0: 1}.
    for w in range(3):
        c = 1 if w == 0 else 0
        expect = max(c - D, 0) / 1 + D * 1 / 1 * p_uni[w]
        assert tri.prob([2, 1], w) == pytest.approx(expect)


@pytest.mark.parametrize("smoothing", ["mle", "add_k", "kn"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_distributions_sum_to_one_seen_and_unseen(smoothing, n):
    rng = np.random.default_rng(0)
    data = [list(rng.integers(0, 7, size=40)), list(rng.integers(0, 5, size=30))]
    lm = NGramLM(n, smoothing, k=0.3, vocab_size=9).fit(data)  # ids 7, 8 never seen
    contexts = [[], [0], [3, 1], [8, 8], [7], [int(data[0][5]), int(data[0][6])]]
    for ctx in contexts:
        p = [lm.prob(ctx, w) for w in range(9)]
        assert sum(p) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(lm.distribution(ctx), p, atol=1e-12)
        if smoothing != "mle":
            assert min(p) > 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.integers(1, 4),
       st.sampled_from(["kn", "add_k"]), st.lists(st.integers(0, 5), max_size=4))
def test_property_proper_distribution(data, n, smoothing, ctx):
    lm = NGramLM(n, smoothing, vocab_size=6).fit(data)
    assert lm.distribution(ctx).sum() == pytest.approx(1.0, abs=1e-12)


def test_logprob_and_perplexity_match_chain_rule():
    lm = NGramLM(3, "kn").fit(CORPUS * 3)
    seq = [0, 2, 0, 1, 1]
    lp = sum(math.log(lm.prob(seq[max(0, i - 2):i], seq[i])) for i in range(len(seq)))
    assert lm.logprob_sequence(seq) == pytest.approx(lp)
    assert lm.perplexity(seq) == pytest.approx(math.exp(-lp / len(seq)))
    # With a context, only the new tokens are scored, conditioned on it.
    assert lm.logprob_sequence([1], context=[2, 0]) == pytest.approx(math.log(lm.prob([2, 0], 1)))


def test_mle_unseen_event_gives_infinite_perplexity_not_a_crash():
    lm = NGramLM(2, "mle", vocab_size=4).fit(CORPUS)
    assert lm.perplexity([0, 3]) == math.inf  # token 3 never seen
    assert lm.perplexity([0, 0]) == math.inf  # bigram (0, 0) never seen
    assert lm.logprob_sequence([0, 0]) == -math.inf
    assert math.isfinite(lm.perplexity([0, 1, 0]))
    assert math.isfinite(NGramLM(2, "kn", vocab_size=4).fit(CORPUS).perplexity([0, 3]))


def test_higher_order_kn_fits_training_text_better():
    rng = np.random.default_rng(1)
    # A text with strong 2nd-order structure: a repeating pattern with noise.
    base = [0, 1, 2, 0, 2, 1] * 50
    data = [w if rng.random() > 0.1 else int(rng.integers(0, 3)) for w in base]
    ppl = [NGramLM(n, "kn").fit(data[:240]).perplexity(data[240:], context=data[:240]) for n in (1, 2, 3)]
    assert ppl[2] < ppl[1] < ppl[0]


def test_sampling_is_seeded_and_matches_model_probabilities():
    lm = NGramLM(1, "add_k", k=1.0).fit([0, 0, 0, 1, 2, 2])  # p = (4, 2, 3) / 9
    a, b = lm.sample(3000, seed=7), lm.sample(3000, seed=7)
    assert a == b and lm.sample(50, seed=8) != a[:50]
    freq = np.bincount(a, minlength=3)
    expect = 3000 * lm.distribution([])
    chi2 = ((freq - expect) ** 2 / expect).sum()
    assert chi2 < 20  # df = 2: P(chi2 > 20) ~ 5e-5
    # Bigram: conditional frequencies follow p(. | previous).
    lm2 = NGramLM(2, "kn").fit([0, 1, 0, 2, 1, 1, 0, 1, 2, 0] * 3)
    s = lm2.sample(4000, seed=3)
    for prev in range(3):
        nxt = [s[i + 1] for i in range(len(s) - 1) if s[i] == prev]
        freq = np.bincount(nxt, minlength=3)
        expect = len(nxt) * lm2.distribution([prev])
        assert ((freq - expect) ** 2 / expect).sum() < 25


def test_documents_are_padded_separately():
    lm = NGramLM(2, "mle").fit([[0, 1], [2, 1]])
    # Both documents start a fresh history: p(first = 0) = p(first = 2) = 1/2, and (1 -> 2) never occurs.
    assert lm.prob([], 0) == pytest.approx(0.5) and lm.prob([], 2) == pytest.approx(0.5)
    assert lm.prob([1], 2) == pytest.approx(lm.tables[0].counts[()][2] / 4)  # history (1,) unseen -> unigram


def test_hostile_inputs():
    with pytest.raises(DodaiError):
        NGramLM(0)
    with pytest.raises(DodaiError):
        NGramLM(2, "witten-bell")
    with pytest.raises(DodaiError):
        NGramLM(2, "add_k", k=0)
    with pytest.raises(DodaiError):
        NGramLM(2, "kn", discount=1.5)
    with pytest.raises(DodaiError):
        NGramLM(2).fit([])
    with pytest.raises(DodaiError):
        NGramLM(2).fit([0, -3])
    with pytest.raises(DodaiError):
        NGramLM(2, vocab_size=2).fit([0, 5])
    lm = NGramLM(2).fit(CORPUS)
    with pytest.raises(DodaiError):
        lm.prob([0], 3)
    with pytest.raises(DodaiError):
        lm.perplexity([])
    with pytest.raises(DodaiError):
        NGramLM(2).prob([0], 1)  # not fitted
