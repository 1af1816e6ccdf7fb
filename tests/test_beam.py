"""Beam search: invariants (width 1 == greedy, exhaustive width == brute-force optimum, n-best sorted, batched ==
one by one, cached == uncached), a hand-made case where a wider beam loses to greedy, and hostile arguments."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.beam import beam_search, greedy_search, lm_beam_search


class TinyRNNLM:
    """A random recurrent LM behind the step interface: state h (N, H); the first step reads BOS (= token 0)."""

    def __init__(self, V, H=6, seed=0, sharp=3.0):
        g = torch.Generator().manual_seed(seed)
        self.E = torch.randn(V, H, generator=g)
        self.W = torch.randn(H, H, generator=g) / math.sqrt(H)
        self.U = torch.randn(V, H, generator=g) * sharp / math.sqrt(H)
        self.h0 = torch.randn(H, generator=g)
        self.V = V

    def init(self, n):
        return self.h0.expand(n, -1).clone()

    def step(self, h, tokens):
        if tokens is None:
            tokens = torch.zeros(h.shape[0], dtype=torch.long)
        h = torch.tanh(h @ self.W.T + self.E[tokens])
        return torch.log_softmax(h @ self.U.T, dim=-1), h

    def seq_logprob(self, seq):
        h, lp, tok = self.init(1), 0.0, None
        for t in seq:
            logp, h = self.step(h, tok)
            lp += float(logp[0, t])
            tok = torch.tensor([t])
        return lp


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(2, 7), eos=st.integers(0, 6), n=st.integers(1, 8))
def test_width_one_is_greedy(seed, V, eos, n):
    m = TinyRNNLM(V, seed=seed)
    eos = eos % V
    g = greedy_search(m.step, m.init(1), 1, eos, n)[0]
    b = beam_search(m.step, m.init(1), 1, 1, n, eos_id=eos, early_stopping=True)[0][0]
    assert b.tokens == g.tokens
    assert b.logprob == pytest.approx(g.logprob, abs=1e-5)


def _brute_force_best(m, V, eos, n):
    best = -math.inf
    for L in range(1, n + 1):
        for seq in itertools.product(range(V), repeat=L):
            if eos in seq[:-1] or (L < n and seq[-1] != eos):
                continue  # a finished sequence ends at its first EOS, or at the length limit
            best = max(best, m.seq_logprob(seq))
    return best


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(2, 3), n=st.integers(1, 4))
def test_exhaustive_width_finds_the_most_probable_sequence_and_beats_greedy(seed, V, n):
    m = TinyRNNLM(V, seed=seed)
    W = V ** n  # wide enough to keep the whole search tree
    best = beam_search(m.step, m.init(W), 1, W, n, eos_id=0, length_penalty=0.0, early_stopping="never")[0][0]
    opt = _brute_force_best(m, V, 0, n)
    assert best.logprob == pytest.approx(opt, abs=1e-4)
    assert best.logprob == pytest.approx(m.seq_logprob(best.tokens), abs=1e-4)  # reported score is the real one
    greedy = greedy_search(m.step, m.init(1), 1, 0, n)[0]
    assert best.logprob >= greedy.logprob - 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(3, 9), W=st.integers(2, 5), lp=st.sampled_from([0.0, 1.0, 2.0]),
       es=st.sampled_from([True, False, "never"]))
def test_nbest_sorted_scores_consistent(seed, V, W, lp, es):
    m = TinyRNNLM(V, seed=seed, sharp=1.0)
    hyps = beam_search(m.step, m.init(W), 1, W, 6, eos_id=1, length_penalty=lp, early_stopping=es,
                       num_return_sequences=W)[0]
    assert 1 <= len(hyps) <= W
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    for h in hyps:
        assert h.score == pytest.approx(h.logprob / len(h.tokens) ** lp, rel=1e-5, abs=1e-5)
        assert h.logprob == pytest.approx(m.seq_logprob(h.tokens), abs=1e-4)
        assert h.tokens[-1] == 1 or len(h.tokens) == 6  # ends with EOS or at the limit
        assert 1 not in h.tokens[:-1]
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)  # n-best are distinct


def test_batched_equals_one_by_one():
    ms = [TinyRNNLM(5, seed=s) for s in range(3)]
    W = 3
    # a batch of three different "models" = three different initial states of one model
    m = ms[0]
    h0 = torch.stack([torch.randn(6, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    state = h0.repeat_interleave(W, dim=0)
    batched = beam_search(m.step, state, 3, W, 7, eos_id=2, num_return_sequences=2)
    for b in range(3):
        single = beam_search(m.step, h0[b:b + 1].repeat_interleave(W, dim=0), 1, W, 7, eos_id=2,
                             num_return_sequences=2)[0]
        assert [h.tokens for h in batched[b]] == [h.tokens for h in single]
        for x, y in zip(batched[b], single):
            assert x.score == pytest.approx(y.score, abs=1e-5)


def test_wider_beam_can_lose_to_greedy():
    """Beam search is not monotone in the width. Vocabulary {EOS=0, a=1, b=2}; probabilities by prefix:
    root: a .5, b .45, EOS .05; after a: EOS .4, a .35, b .25; after b: a .5, b .5; later EOS .3.
    Greedy: a EOS (p = .2). Width 2: step 2's top candidates are ba, bb (.225 each) > a·EOS (.2), so a·EOS
    ranks third, outside the top 2, and is dropped (HF semantics); the best it can then finish is < .2."""
    table = {(): [.05, .5, .45], (1,): [.4, .35, .25], (2,): [1e-6, .5, .5 - 1e-6]}

    def step(hist, tokens):
        if tokens is not None:
            hist = [h + (int(t),) for h, t in zip(hist, tokens)]
        probs = [table.get(h, [.3, .35, .35]) for h in hist]
        return torch.tensor(probs).log(), hist

    greedy = greedy_search(step, [()], 1, 0, 4)[0]
    assert greedy.tokens == [1, 0] and greedy.logprob == pytest.approx(math.log(.2), abs=1e-6)
    beam = beam_search(step, [(), ()], 1, 2, 4, eos_id=0, length_penalty=0.0, early_stopping="never")[0][0]
    assert beam.logprob < greedy.logprob


def _tiny_gpt():
    from dodai.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=32, n_layer=2, n_head=2, n_embd=16))
    return m.eval()


def test_lm_adapter_cached_equals_uncached_and_width_one_is_greedy():
    m = _tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    a = lm_beam_search(m, prompt, num_beams=3, max_new_tokens=8, eos_id=2, num_return_sequences=3, use_cache=True)
    b = lm_beam_search(m, prompt, num_beams=3, max_new_tokens=8, eos_id=2, num_return_sequences=3, use_cache=False)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
    one = lm_beam_search(m, prompt, num_beams=1, max_new_tokens=8, eos_id=2, early_stopping=True)[0]
    ids = torch.tensor([prompt])
    greedy = []
    with torch.no_grad():
        for _ in range(8):
            nxt = int(m(ids)[0][0, -1].argmax())
            greedy.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            if nxt == 2:
                break
    assert one.tokens == greedy


@pytest.mark.parametrize("kw", [dict(num_beams=0), dict(max_new_tokens=0), dict(num_return_sequences=5),
                                dict(early_stopping="sometimes")])
def test_bad_arguments(kw):
    m = TinyRNNLM(4)
    args = dict(num_beams=2, max_new_tokens=3, num_return_sequences=1, early_stopping=False) | kw
    with pytest.raises(DodaiError):
        beam_search(m.step, m.init(2), 1, args["num_beams"], args["max_new_tokens"], eos_id=0,
                    early_stopping=args["early_stopping"], num_return_sequences=args["num_return_sequences"])


def test_empty_prompt_rejected():
    with pytest.raises(DodaiError):
        lm_beam_search(_tiny_gpt(), [], num_beams=2)
