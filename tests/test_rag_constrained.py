"""R7.2 constrained decoding: the lazy DFA agrees with Python's re, the token mask is exact, and sampled
outputs of a random model always match the regex / parse as schema-valid JSON."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.generate.constrained import (
    RegexDFA,
    TokenConstraint,
    generate_constrained,
    json_schema_regex,
    validate_json,
)

PATTERNS = [
    r"ab*c", r"(?:a|bc)+d?", r"[a-c]{2,3}x", r"\d{1,3}(?:\.\d+)?", r"[^ab]*", r"(a|b)*abb", r"\w+\s\w+",
    r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]){0,4}"', r"x{0,2}y{2,}", r"[\]\-a]+", r"a.c", r"(ab|a)(bc|c)",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(alphabet='abcdxy019. \\"-]\n', max_size=8))
def test_dfa_agrees_with_python_re(pattern, text):
    assert RegexDFA(pattern).fullmatch(text) == bool(re.fullmatch(pattern, text, re.ASCII))


def test_dfa_refuses_unsupported_syntax():
    for bad in ["^a", "a$", "(?=a)", "a{3,1}", "*a", "(a", "a)", "[a", "\\", r"\1", "a{5000}", "a*?"]:
        with pytest.raises(DodaiError):
            RegexDFA(bad)


class CharTok:
    """A toy tokenizer: single characters plus a few multi-character tokens; id 0 is EOS."""

    def __init__(self):
        self.vocab = ["<eos>"] + list('abc{}[]",:0123456789-. tfrueals') + ['{"', '":', '",', "true", "ab", "bc",
                                                                              "false", "null", "12"]
        self.vocab_size = len(self.vocab)
        self.special_tokens = {"<eos>": 0}
        self.eos_id = 0

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids if i != 0)

    def encode(self, text):
        return [self.vocab.index(c) for c in text]


def test_token_mask_is_exact():
    tok = CharTok()
    tc = TokenConstraint(r"ab*c", tok)
    dfa = RegexDFA(r"ab*c")
    for prefix in ["", "a", "ab", "abb", "abc", "x"]:
        state = tc.state_after(tok.encode(prefix)) if "x" not in prefix else RegexDFA.DEAD
        mask = tc.allowed(state)
        for t, s in enumerate(tok.vocab):
            if t == 0:
                want = dfa.fullmatch(prefix) or not mask[1:].any()
            else:  # allowed iff prefix + token is still a prefix of some match
                want = state != RegexDFA.DEAD and dfa.walk(s, state) != RegexDFA.DEAD
            assert bool(mask[t]) == want, (prefix, s)


class RandomLM(torch.nn.Module):
    """Random logits that depend on the sequence (so sampling explores); protocol of dodai's causal LMs."""

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        self.config = type("C", (), {"block_size": 512, "vocab_size": vocab_size})()
        self.emb = torch.nn.Embedding(vocab_size, vocab_size)
        torch.nn.init.normal_(self.emb.weight, std=3.0, generator=torch.Generator().manual_seed(seed))

    def new_cache(self, batch, max_len, dtype=None):
        return PosCache(max_len)

    def forward(self, idx, targets=None, cache=None, last_only=False, attention_mask=None, position_ids=None):
        if attention_mask is not None:
            raise ValueError("RandomLM takes no padded batches")
        if cache is not None:
            cache.advance(idx.shape[1])
        out = self.emb(idx)  # (B, T, V): random logits that depend on the last token (a Markov chain)
        return (out[:, -1:] if last_only else out), None


class PosCache:
    """The cache protocol for RandomLM, which needs no keys or values: only the position is kept."""

    def __init__(self, max_len):
        self.pos, self.key_mask, self.max_len = 0, None, max_len

    def advance(self, t):
        self.pos += t

    def reset(self):
        self.pos, self.key_mask = 0, None


def test_sampled_outputs_always_match_regex():
    tok = CharTok()
    model = RandomLM(tok.vocab_size)
    pattern = r"(?:ab|c)+\d{0,2}"
    for seed in range(12):
        text = generate_constrained(model, tok, [1], pattern, max_new_tokens=40, temperature=1.5, seed=seed)
        assert re.fullmatch(pattern, text), text


SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer"},
    "ok": {"type": "boolean"},
    "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "maxItems": 3},
    "score": {"type": "number"},
    "none": {"type": "null"},
}}


def test_json_schema_regex_accepts_valid_and_rejects_invalid():
    rx = json_schema_regex(SCHEMA)
    dfa = RegexDFA(rx)
    good = {"name": "ab\"c", "age": -12, "ok": True, "tags": ["a", 3], "score": 0.5, "none": None}
    assert dfa.fullmatch(json.dumps(good, separators=(",", ":")))
    bad = [{**good, "name": "toolongname"}, {**good, "age": 1.5}, {**good, "tags": ["c"]},
           {**good, "tags": ["a"] * 4}, {**good, "ok": "yes"}]
    for b in bad:
        assert not dfa.fullmatch(json.dumps(b, separators=(",", ":")))
        assert not validate_json(b, SCHEMA)
    assert validate_json(good, SCHEMA)
    with pytest.raises(DodaiError):
        json_schema_regex({"type": "mystery"})


def test_sampled_json_always_parses_and_validates():
    tok = CharTok()
    model = RandomLM(tok.vocab_size, seed=1)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                                               "c": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                                     "maxItems": 2}}}
    rx = json_schema_regex(schema)
    for seed in range(8):
        text = generate_constrained(model, tok, [1], rx, max_new_tokens=120, temperature=1.0, seed=seed)
        value = json.loads(text)
        assert validate_json(value, schema), text
