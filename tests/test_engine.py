"""The generation engine on a tiny GPT: cache == no cache, n samples, log-probs, stop tokens/strings."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.engine import StopStringFilter, complete, stream_steps
from dodai.generate.processors import LogitsPipeline
from dodai.generate.sampling import generate
from dodai.models.gpt import GPT, GPTConfig


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=26, block_size=40, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        m.transformer.wte.weight.mul_(40)  # sharper distributions so choices depend on the knobs
    return m.eval()


class Letters:
    """A toy tokenizer: id i is the letter chr(97 + i)."""

    def decode(self, ids):
        return "".join(chr(97 + i) for i in ids)


PROMPT = [1, 5, 2, 7]
KNOBS = dict(temperature=0.9, top_k=10, top_p=0.9, min_p=0.02, repetition_penalty=1.3, presence_penalty=0.2,
             frequency_penalty=0.1, no_repeat_ngram_size=2, logit_bias={3: 1.0})


def test_cached_equals_uncached_with_every_knob():
    m = tiny_gpt()
    pipe = LogitsPipeline(**KNOBS)
    a = complete(m, PROMPT, 20, pipe, seed=3, num_samples=3, logprobs=2)
    b = complete(m, PROMPT, 20, pipe, seed=3, num_samples=3, logprobs=2, use_cache=False)
    assert [c.ids for c in a] == [c.ids for c in b]
    for ca, cb in zip(a, b):
        for x, y in zip(ca.logprobs, cb.logprobs):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_greedy_matches_sampling_generate_and_n_rows_agree():
    m = tiny_gpt(1)
    ref = list(generate(m, PROMPT, 15, temperature=0.0))
    outs = complete(m, PROMPT, 15, LogitsPipeline(temperature=0.0), num_samples=3)
    assert all(c.ids == ref for c in outs)


def test_sampling_is_seeded_and_rows_differ():
    m = tiny_gpt(2)
    pipe = LogitsPipeline(temperature=1.5)
    a = complete(m, PROMPT, 12, pipe, seed=0, num_samples=4)
    b = complete(m, PROMPT, 12, pipe, seed=0, num_samples=4)
    assert [c.ids for c in a] == [c.ids for c in b]
    assert len({tuple(c.ids) for c in a}) > 1


def test_penalties_change_greedy_output():
    m = tiny_gpt(3)
    plain = complete(m, PROMPT, 20, LogitsPipeline(temperature=0.0))[0].ids
    ngram = complete(m, PROMPT, 20, LogitsPipeline(temperature=0.0, no_repeat_ngram_size=2))[0].ids
    seq = PROMPT + ngram
    grams = [tuple(seq[i:i + 2]) for i in range(len(seq) - 1)]
    assert len(grams) == len(set(grams))  # no bigram repeats
    banned = complete(m, PROMPT, 20, LogitsPipeline(temperature=0.0, logit_bias={t: -100.0 for t in plain}))[0].ids
    assert not set(banned) & set(plain)


def test_logprobs_are_the_models():
    m = tiny_gpt(4)
    c = complete(m, PROMPT, 6, LogitsPipeline(temperature=1.0), seed=1, logprobs=3)[0]
    seq = list(PROMPT)
    for tok, lp in zip(c.ids, c.logprobs):
        with torch.no_grad():
            ref = m(torch.tensor([seq]))[0][0, -1].log_softmax(-1)
        assert lp.token == tok
        assert lp.logprob == pytest.approx(ref[tok].item(), abs=1e-4)
        assert [t for t, _ in lp.top] == ref.topk(3).indices.tolist()
        assert lp.top[0][1] >= lp.logprob - 1e-6
        seq.append(tok)


def test_stop_tokens_and_eos():
    m = tiny_gpt(5)
    ref = complete(m, PROMPT, 15, LogitsPipeline(temperature=0.0))[0].ids
    stop = ref[4]
    first = ref.index(stop)
    c = complete(m, PROMPT, 15, LogitsPipeline(temperature=0.0), eos_id=stop, tokenizer=Letters())[0]
    assert c.ids == ref[:first + 1] and c.finish_reason == "eos"
    assert c.text == Letters().decode(ref[:first])  # EOS is not part of the text


def test_stop_strings():
    m = tiny_gpt(5)
    ref = complete(m, PROMPT, 15, LogitsPipeline(temperature=0.0), tokenizer=Letters())[0]
    assert ref.finish_reason == "length" and len(ref.ids) == 15
    s = ref.text[6:8]
    c = complete(m, PROMPT, 15, LogitsPipeline(temperature=0.0), stop_strings=[s], tokenizer=Letters())[0]
    cut = ref.text.find(s)
    assert c.finish_reason == "stop" and c.text == ref.text[:cut]
    assert c.ids == ref.ids[:cut + 2]  # the ids keep the token that completed the stop string


def test_hostile_arguments():
    m = tiny_gpt()
    with pytest.raises(DodaiError, match="context window"):
        stream_steps(m, PROMPT, 40)
    with pytest.raises(DodaiError):
        stream_steps(m, PROMPT, 3, num_samples=0)
    with pytest.raises(DodaiError):
        complete(m, PROMPT, 3, stop_strings=[""], tokenizer=Letters())
    with pytest.raises(DodaiError):
        complete(m, PROMPT, 3, stop_strings=["x"])
    with pytest.raises(DodaiError):
        stream_steps(m, [], 3)


@settings(max_examples=60, deadline=None)
@given(st.text("abc", max_size=30), st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=2),
       st.lists(st.integers(1, 4), max_size=30))
def test_stop_string_filter_streaming(text, stops, cuts):
    """Any split of the text into pieces emits exactly the text before the first stop string."""
    f = StopStringFilter(stops)
    out, i, stopped = "", 0, False
    for k in cuts + [len(text)]:
        piece, i = text[i:i + k], i + k
        o, stopped = f.push(piece)
        out += o
        if stopped:
            break
    out += f.flush()
    hits = [text.find(s) for s in stops if s in text]
    assert out == (text[:min(hits)] if hits else text)
