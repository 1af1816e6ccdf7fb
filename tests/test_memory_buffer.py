"""Conversation buffer and rolling summary (dodai.memory.buffer / .summary)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.errors import DodaiError
from dodai.memory.buffer import TokenBudgetBuffer, TurnWindowBuffer, split_turns
from dodai.memory.summary import SummaryMemory, cap_summary, extractive_summariser


def chatml_chars(messages: list[dict]) -> int:
    """A stand-in token counter: characters of a ChatML-like rendering (non-additive header costs)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return len(text + "<|im_start|>assistant\n") // 4


def test_split_turns_groups_replies_with_their_question():
    msgs = [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "tool", "content": "c"}, {"role": "user", "content": "d"}]
    assert split_turns(msgs) == [[msgs[0]], msgs[1:4], [msgs[4]]]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=30), budget=st.integers(40, 400),
       system_len=st.integers(0, 60))
def test_budget_never_exceeded_and_system_kept(lengths, budget, system_len):
    system = "S" * system_len
    buf = TokenBudgetBuffer(chatml_chars, budget, system=system)
    sent: list[dict] = []
    for i, n in enumerate(lengths):
        role = "user" if i % 2 == 0 else "assistant"
        before = buf.history
        try:
            evicted = buf.add(role, "x" * n)
        except DodaiError:
            # only allowed when the newest turn alone (with the system message) cannot fit; nothing changed
            assert buf.history == before
            newest = ([m for m in split_turns(before + [{"role": role, "content": "x" * n}])][-1])
            assert chatml_chars([{"role": "system", "content": system}] + newest) > budget
            continue
        sent.append({"role": role, "content": "x" * n})
        assert buf.tokens() <= budget  # the invariant
        assert buf.messages()[0] == {"role": "system", "content": system}  # never evicted
        assert all(m["role"] != "system" for m in evicted)
        # whole turns: the kept history starts at a user message (or is the pre-user opening)
        hist = buf.history
        assert not hist or hist[0]["role"] == "user" or hist == sent[:len(hist)]
        # kept history is a suffix of what was accepted, minus nothing in the middle
        assert hist == sent[len(sent) - len(hist):]


def test_budget_evicts_oldest_whole_turns_and_returns_them():
    buf = TokenBudgetBuffer(chatml_chars, 60, system="be nice")
    buf.add("user", "u1 " * 10)
    buf.add("assistant", "a1 " * 10)
    buf.add("user", "u2 " * 10)
    evicted = buf.add("assistant", "a2 " * 10)
    assert [m["content"][:2] for m in evicted] == ["u1", "a1"]
    assert [m["content"][:2] for m in buf.history] == ["u2", "a2"]
    assert buf.evicted_turns == 1


def test_budget_rejects_a_turn_that_cannot_fit_and_keeps_state():
    buf = TokenBudgetBuffer(chatml_chars, 30, system="sys")
    buf.add("user", "short")
    with pytest.raises(DodaiError, match="budget"):
        buf.add("user", "y" * 500)
    assert [m["content"] for m in buf.history] == ["short"]
    with pytest.raises(DodaiError):
        TokenBudgetBuffer(chatml_chars, 0)
    with pytest.raises(DodaiError, match="role"):
        buf.add("wizard", "x")
    with pytest.raises(DodaiError, match="system"):
        buf.add("system", "x")


def test_turn_window_keeps_the_last_k_turns():
    buf = TurnWindowBuffer(2, system="s")
    for i in range(5):
        buf.add("user", f"q{i}")
        buf.add("assistant", f"a{i}")
    assert [m["content"] for m in buf.history] == ["q3", "a3", "q4", "a4"]
    assert buf.messages()[0]["role"] == "system"
    assert buf.evicted_turns == 3


def test_real_tokenizer_counts_the_rendered_prompt(smollm2_gguf):
    from _smollm2_once import smollm2

    from dodai.memory.buffer import TemplateTokenCounter

    _, tok = smollm2(str(smollm2_gguf))
    count = TemplateTokenCounter(tok)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    rendered = count.render(msgs)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>") and rendered.endswith("assistant\n")
    assert count(msgs) == len(tok.encode(rendered))
    # the template's header tokens count: more than the raw contents alone
    assert count(msgs) > len(tok.encode("Be brief.")) + len(tok.encode("Hello there")) + 4
    buf = TokenBudgetBuffer(count, 60, system="Be brief.")
    for i in range(12):
        buf.add("user", f"Tell me about number {i} in a few words please.")
        buf.add("assistant", f"Number {i} is a number.")
        assert count(buf.messages()) <= 60
    assert buf.evicted_turns > 0 and buf.messages()[0]["content"] == "Be brief."


def test_summary_memory_folds_evicted_turns_into_the_system_message():
    calls = []

    def summariser(prev, evicted):
        calls.append(len(evicted))
        return (prev + " " + " ".join(m["content"] for m in evicted if m["role"] == "user")).strip()

    mem = SummaryMemory(TokenBudgetBuffer(chatml_chars, 80), summariser, base_system="Be kind.",
                        max_summary_chars=120, low_water=0.5)
    for i in range(10):
        mem.add("user", f"fact{i} " + "x" * 30)
        mem.add("assistant", "ok " * 8)
        assert mem.buffer.tokens() <= 80
    sys_text = mem.messages()[0]["content"]
    assert sys_text.startswith("Be kind.") and mem.summary in sys_text
    assert "fact0" not in [m["content"][:5] for m in mem.buffer.history]
    assert len(mem.summary) <= 120
    # hysteresis: fewer summariser calls than evicted turns
    assert 0 < len(calls) < mem.buffer.evicted_turns
    assert mem.summaries == len(calls)


def test_summary_memory_without_summariser_is_a_plain_buffer():
    mem = SummaryMemory(TokenBudgetBuffer(chatml_chars, 50), None, base_system="s")
    for i in range(6):
        mem.add("user", f"q{i} " * 8)
    assert mem.summary == "" and mem.buffer.tokens() <= 50 and mem.buffer.evicted_turns > 0


def test_summary_shrinks_rather_than_refusing_a_turn():
    mem = SummaryMemory(TokenBudgetBuffer(chatml_chars, 70), lambda p, e: "z" * 400, base_system="s",
                        max_summary_chars=400)
    for _ in range(4):
        mem.add("user", "w" * 80)
        assert mem.buffer.tokens() <= 70


def test_extractive_summariser_and_cap():
    msgs = [{"role": "user", "content": "My cat is Miso. Do you like cats? I live in Oslo"},
            {"role": "assistant", "content": "I like cats."}]
    assert extractive_summariser("Name: Ana.", msgs) == "Name: Ana. My cat is Miso. I live in Oslo."
    assert cap_summary("one two three four", 10) == "four"
    assert cap_summary("short", 10) == "short"
