"""R7.2 prompting helpers: templates, few-shot selection and assembly, chain-of-thought answer extraction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.chat_template import ChatTemplate
from dodai.errors import DodaiError
from dodai.generate.session import CHATML
from dodai.prompting import (
    COT_MARKER,
    PromptTemplate,
    Shot,
    cot_instruction,
    extract_answer,
    few_shot_messages,
    few_shot_text,
    select_shots,
)

POOL = [Shot(f"in{i}", f"out{i}") for i in range(20)]


def test_template_fields_and_render():
    t = PromptTemplate("Translate {text} into {lang}. Again: {text}. Literal {{braces}}.")
    assert t.fields == ("text", "lang")
    assert t.render(text="cat", lang="French") == "Translate cat into French. Again: cat. Literal {braces}."


@pytest.mark.parametrize("values, word", [({"text": "x"}, "missing"), ({"text": "x", "lang": "y", "tone": "z"},
                                                                       "no field")])
def test_template_missing_or_unknown_field_is_a_clear_error(values, word):
    with pytest.raises(DodaiError, match=word):
        PromptTemplate("{text} -> {lang}").render(**values)


@pytest.mark.parametrize("bad", ["{0}", "{}", "{a.b}", "{x[0]}", "{x!r}", "{x:>5}", "{unclosed", "stray }"])
def test_template_refuses_non_plain_fields(bad):
    with pytest.raises(DodaiError):
        PromptTemplate(bad)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=30), st.text(max_size=30))
def test_template_substitutes_values_verbatim(prefix, value):
    # values containing braces are inserted as-is, never re-interpreted as fields
    assert PromptTemplate(prefix + "{v}").render(v=value) == prefix + value


def test_select_shots_is_deterministic_distinct_and_excludes_query():
    a = select_shots(POOL, 5, seed=3)
    assert a == select_shots(POOL, 5, seed=3)
    assert len(set(a)) == 5 and all(s in POOL for s in a)
    assert any(select_shots(POOL, 5, seed=s) != a for s in range(4, 10))  # the seed matters
    for seed in range(30):
        assert Shot("in7", "out7") not in select_shots(POOL, 19, seed=seed, exclude="in7")
    assert select_shots(POOL, 0) == []


def test_select_shots_errors():
    with pytest.raises(DodaiError, match="only"):
        select_shots(POOL, 20, exclude="in0")
    with pytest.raises(DodaiError):
        select_shots(POOL, -1)


def test_few_shot_messages_alternate_and_render_with_chat_template():
    shots = POOL[:3]
    msgs = few_shot_messages("query", shots, system="Be terse.")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1]["content"] == "query" and msgs[2]["content"] == "out0"
    text = ChatTemplate(CHATML).render(msgs, add_generation_prompt=True)
    # every shot appears in order, and the prompt ends by opening the assistant turn
    positions = [text.index(s.output) for s in shots]
    assert positions == sorted(positions) and text.index("query") > positions[-1]
    assert text.rstrip().endswith("assistant")
    assert few_shot_messages("q", [])[0] == {"role": "user", "content": "q"}


def test_few_shot_text_layout():
    text = few_shot_text("q", POOL[:2], instruction="Do it.")
    assert text == "Do it.\n\nInput: in0\nOutput: out0\n\nInput: in1\nOutput: out1\n\nInput: q\nOutput:"
    custom = few_shot_text("q", POOL[:1], template=PromptTemplate("Q: {input}\nA: {output}"))
    assert custom.endswith("Q: q\nA:") and "A: out0" in custom
    with pytest.raises(DodaiError):
        few_shot_text("q", POOL[:1], template=PromptTemplate("{output} {input}"))
    with pytest.raises(DodaiError):
        few_shot_text("q", POOL[:1], template=PromptTemplate("Q: {question}\nA: {output}"))


def test_chain_of_thought_instruction_and_extraction():
    ins = cot_instruction("What is 17 + 25?")
    assert "step by step" in ins and COT_MARKER in ins
    reply = "First 17 + 20 = 37.\nAnswer: not yet\nThen 37 + 5 = 42.\nAnswer: 42\nHope this helps."
    assert extract_answer(reply) == "42"  # the last marker wins; text after its line is ignored
    assert extract_answer("no marker here") is None
    assert extract_answer("=> 7", marker="=>") == "7"
    with pytest.raises(DodaiError):
        extract_answer("x", marker="")
    with pytest.raises(DodaiError):
        cot_instruction("x", marker="  ")
