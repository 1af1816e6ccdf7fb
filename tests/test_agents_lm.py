"""ModelLM: the prefix-reusing KV cache gives the same tokens as dodai's engine with a full prefill, across
growing, shrinking and diverging prompts, free and constrained; stop strings and token limits."""

from __future__ import annotations

import pytest
import torch

from dodai.agents.lm import ModelLM
from dodai.models.gpt import GPT, GPTConfig
from dodai.models.llama import Llama, LlamaConfig


class Letters:
    """id i is the letter chr(97 + i); the last id is EOS."""

    vocab_size = 26
    special_tokens = {"<eos>": 25}
    eos_id = 25
    chat_template = None

    def encode(self, text):
        return [ord(c) - 97 for c in text]

    def decode(self, ids):
        return "".join(chr(97 + i) for i in ids if i != 25)


def tiny_llama():
    torch.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=26, block_size=96, n_layer=2, n_embd=16, n_head=4, n_kv_head=2, ffn_hidden=32))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(20)  # sharp distributions: the next token depends on the context
    return m.eval()


def tiny_gpt():
    torch.manual_seed(1)
    m = GPT(GPTConfig(vocab_size=26, block_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=16))
    with torch.no_grad():
        m.transformer.wte.weight.mul_(40)
    return m.eval()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation cost (and spins on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PROMPTS = ["abcdefg", "abcdefghijk", "abcdefghijkmnop", "abcxyz", "abc", "qrstuvwabc", "qrstuvwabcdd"]


def test_prefix_reuse_equals_full_prefill():
    for make in (tiny_llama, tiny_gpt):
        m, tok = make(), Letters()
        fast, ref = ModelLM(m, tok), ModelLM(m, tok, reuse_prefix=False)
        for p in PROMPTS:
            a, b = fast.generate(p, 12), ref.generate(p, 12)
            assert (a.text, a.new_tokens, a.finish) == (b.text, b.new_tokens, b.finish), (make.__name__, p)
            # continue the prompt with its own output: the cache already holds all of it
            a2, b2 = fast.generate(p + a.text, 6), ref.generate(p + b.text, 6)
            assert a2 == b2
        session = fast._session  # the session backend kept the cache and the ids it holds
        assert session.cache is not None and 0 < len(session.held) <= session.cache.max_len


def test_prefix_reuse_equals_reference_when_sampling_with_a_seed():
    m, tok = tiny_llama(), Letters()
    fast, ref = ModelLM(m, tok, temperature=1.0, seed=3), ModelLM(m, tok, temperature=1.0, seed=3,
                                                                  reuse_prefix=False)
    for p in PROMPTS:
        assert fast.generate(p, 10) == ref.generate(p, 10)


def test_constrained_and_stops():
    m, tok = tiny_llama(), Letters()
    fast, ref = ModelLM(m, tok), ModelLM(m, tok, reuse_prefix=False)
    for p in PROMPTS[:4]:
        a, b = fast.generate_regex(p, "(ab|cd)+e", 20), ref.generate_regex(p, "(ab|cd)+e", 20)
        assert a == b
        if a.finish == "eos":
            import re

            assert re.fullmatch("(ab|cd)+e", a.text)
    g = ref.generate("abc", 20)
    stop = g.text[3:5]
    s = fast.generate("abc", 20, stop=[stop])
    assert s.finish == "stop" and s.text == g.text[:g.text.find(stop)] and stop not in s.text
    assert fast.generate("abc", 3).new_tokens <= 3
