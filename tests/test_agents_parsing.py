"""ReAct parser on messy and hostile outputs; function-call regex + constrained decoding always yields a call
that parses and names an existing tool (a random model, a toy tokenizer, many seeds)."""

from __future__ import annotations

import json
import re
import string

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.agents.fncall import FnCallPolicy, call_regex, call_schema, parse_call
from dodai.agents.lm import ModelLM
from dodai.agents.react import MAX_ARG_CHARS, parse_react
from dodai.generate.constrained import RegexDFA, generate_constrained, validate_json
from dodai.tools.base import Tool

TOOLS = {
    "calculator": Tool("calculator", "Arithmetic.", {"type": "object", "properties": {
        "expression": {"type": "string", "description": "e.g. 1+2"}}, "required": ["expression"]}, lambda a: "0"),
    "search": Tool("search", "Search.", {"type": "object", "properties": {
        "query": {"type": "string"}, "k": {"type": "integer"}, "fuzzy": {"type": "boolean"}},
        "required": ["query", "k"]}, lambda a: ""),
    "mode": Tool("mode", "Pick.", {"type": "object", "properties": {"m": {"enum": ["fast", "slow"]},
                                                                     "note": {}},
                                   "required": ["m", "note"]}, lambda a: ""),
}


def test_clean_react_step():
    p = parse_react(' I need math.\nAction: calculator\nAction Input: {"expression": "2+3"}\n', TOOLS)
    assert (p.kind, p.thought, p.action, p.arguments) == ("call", "I need math.", "calculator", {"expression": "2+3"})


def test_messy_formatting_is_tolerated():
    messy = [
        ' ok\n**Action:** `Calculator`\n**Action Input:** ```json\n{"expression": "2+3"}\n```',
        ' ok\n  action :  "calculator"\n  ACTION INPUT: {"expression": "2+3"} and some chatter',
        ' ok\nAction: calculator.\nAction Input: 2+3',  # bare string for a one-string-argument tool
        " ok\nAction: calculator\nAction Input: '2+3'",
        ' ok\nAction: calculator\nAction Input:\n{"expression": "2+3"}\nThought: waiting for the result',
    ]
    for text in messy:
        p = parse_react(text, TOOLS)
        assert (p.kind, p.action, p.arguments) == ("call", "calculator", {"expression": "2+3"}), text


def test_final_answer_forms():
    for text, want in [(" I know.\nFinal Answer: 42", "42"), ("Final answer : 42\n", "42"),
                       (" done\n**Final Answer:** 1,234 apples", "1,234 apples")]:
        p = parse_react(text, TOOLS)
        assert (p.kind, p.answer) == ("final", want), text
    # the first of Action / Final Answer wins
    p = parse_react(' x\nFinal Answer: 5\nAction: calculator\nAction Input: {"expression": "1"}', TOOLS)
    assert p.kind == "final" and p.answer == "5"
    p = parse_react(" x\nFinal Answer:\n  640444\n(1 row)\nThought: again\nFinal Answer:", TOOLS)
    assert p.answer == "640444"
    p = parse_react(' x\nAction: calculator\nAction Input: {"expression": "1"}\nFinal Answer: 9', TOOLS)
    assert p.kind == "call" and p.arguments == {"expression": "1"}
    assert parse_react(" x\nFinal Answer:   ", TOOLS).kind == "invalid"


def test_strict_about_what_runs():
    # arguments that are not a JSON object are never executed (the search tool needs more than a string)
    for raw, why in [("{'query': 'x'}", "not valid JSON"), ("[1, 2]", "JSON object"), ("", "empty"),
                     ("x" * (MAX_ARG_CHARS + 1), "too long"), ("{" * 5000, "not valid JSON")]:
        p = parse_react(f" t\nAction: search\nAction Input: {raw}", TOOLS)
        assert p.kind == "invalid" and why in p.error, raw
    # a name that only resembles a tool is kept as written (the loop reports it as unknown), never guessed
    p = parse_react(' t\nAction: calc\nAction Input: {"expression": "1"}', TOOLS)
    assert p.kind == "call" and p.action == "calc"
    p = parse_react(" t\nAction: calculator", TOOLS)
    assert p.kind == "invalid" and "Action Input" in p.error
    assert parse_react(" I think the answer is 5", TOOLS).kind == "invalid"


def test_injected_observation_is_cut():
    text = (' t\nAction: calculator\nAction Input: {"expression": "1+1"}\nObservation: 3\n'
            "Thought: so\nFinal Answer: 3")
    p = parse_react(text, TOOLS)
    assert p.kind == "call" and p.arguments == {"expression": "1+1"}
    # an observation before any action hides everything after it, including a final answer
    p = parse_react(" t\nobservation: the tool said 7\nFinal Answer: 7", TOOLS)
    assert p.kind == "invalid"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(string.printable) + ["Action:", "Action Input:", "Final Answer:",
                                                          "Observation:", "Thought:", '{"a": 1}', "calculator",
                                                          "search", "\n"]), max_size=120).map("".join))
def test_parser_never_raises_and_only_calls_with_objects(text):
    p = parse_react(text, TOOLS)
    assert p.kind in ("final", "call", "invalid")
    if p.kind == "call":
        assert isinstance(p.arguments, dict) and p.action
    if p.kind == "invalid":
        assert p.error


# ---- function calling: the call regex and constrained decoding ---------------------------------------------

def test_call_schema_keeps_required_arguments_in_order():
    s = call_schema(TOOLS["search"], max_string_chars=20)
    assert list(s["properties"]["arguments"]["properties"]) == ["query", "k"]
    assert s["properties"]["arguments"]["properties"]["query"]["maxLength"] == 20
    assert call_schema(TOOLS["mode"])["properties"]["arguments"]["properties"]["note"]["type"] == "string"


def test_call_regex_accepts_exactly_the_calls():
    dfa = RegexDFA(call_regex(TOOLS, max_string_chars=10))
    ok = [{"name": "calculator", "arguments": {"expression": "12*(3+4)"}},
          {"name": "search", "arguments": {"query": "a \"b\"", "k": 3}},
          {"name": "mode", "arguments": {"m": "slow", "note": ""}}]
    for c in ok:
        assert dfa.fullmatch(json.dumps(c, separators=(",", ":"))), c
    bad = [{"name": "calc", "arguments": {"expression": "1"}},
           {"name": "calculator", "arguments": {"expression": 1}},
           {"name": "calculator", "arguments": {"expression": "x" * 11}},
           {"name": "search", "arguments": {"k": 3, "query": "a"}},
           {"name": "mode", "arguments": {"m": "medium", "note": ""}},
           {"name": "calculator", "arguments": {}}]
    for c in bad:
        assert not dfa.fullmatch(json.dumps(c, separators=(",", ":"))), c


class ToyTok:
    """Printable ASCII characters plus a few multi-character pieces; id 0 is EOS."""

    def __init__(self):
        self.vocab = ["<eos>"] + list(string.printable[:95]) + ['{"', '":', '",', '":"', "name", "calc", "ulator",
                                                                "search", "mode", "fast", "slow", "arguments", '"}}']
        self.vocab_size = len(self.vocab)
        self.special_tokens = {"<eos>": 0}
        self.eos_id = 0

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids if i != 0)

    def encode(self, text):  # characters outside the toy vocabulary (newlines of the chat template) → id 1
        return [self.vocab.index(c) if c in self.vocab else 1 for c in text]


class RandomLM(torch.nn.Module):
    """Random logits with dodai's causal-LM protocol (dodai.models.protocol)."""

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        self.config = type("C", (), {"block_size": 4096, "vocab_size": vocab_size})()
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


def _longest_call(tools, cap):
    """An upper bound on the characters of one call (all strings at their cap, all escaped, long integers)."""
    return sum(len(json.dumps(call_schema(t, cap))) + 40 * cap for t in tools.values())


def test_constrained_calls_always_parse_and_name_a_tool():
    tok = ToyTok()
    model = RandomLM(tok.vocab_size, seed=3)
    rx = call_regex(TOOLS, max_string_chars=8)
    names = set()
    for seed in range(30):
        text = generate_constrained(model, tok, [1], rx, max_new_tokens=_longest_call(TOOLS, 8), temperature=1.0,
                                    seed=seed)
        name, args, err = parse_call(text)
        assert err is None and name in TOOLS, text
        assert validate_json(args, call_schema(TOOLS[name], 8)["properties"]["arguments"]), text
        assert re.fullmatch(r"\{\"name\":.*\}", text)
        names.add(name)
    assert len(names) >= 2  # the random model explores the alternation, not one fixed call


def test_fncall_policy_with_a_random_model_only_emits_valid_calls():
    tok = ToyTok()
    tok.chat_template = None
    lm = ModelLM(RandomLM(tok.vocab_size, seed=5), tok, temperature=1.0, seed=0)
    pol = FnCallPolicy(TOOLS, examples=[], max_string_chars=6, force_call=True)
    for seed in range(3):
        lm.seed = seed
        state = pol.start("q?")
        d = pol.act(lm, state, max_new_tokens=_longest_call(TOOLS, 6), deadline=float("inf"))
        assert d.kind == "call" and d.action in TOOLS, d
        # a thought line (``think``, the default), then the call
        assert d.output.splitlines()[-1].startswith("<tool_call>{") and d.output.endswith("}</tool_call>")
        assert d.output.count("\n") <= 1 and d.thought == d.output.split("<tool_call>")[0].strip()
