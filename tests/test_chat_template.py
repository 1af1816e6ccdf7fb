"""Chat templates: same rendering as HF transformers, sandboxed against hostile templates."""

from __future__ import annotations

import time

import pytest

from dodai.chat_template import ChatTemplate, render_chat
from dodai.errors import DodaiError

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello. 日本語もどうぞ 🙂"},
    {"role": "user", "content": "  spaces\n\nand lines  "},
]

# A template with block tags on their own lines: only renders like HF with trim_blocks + lstrip_blocks.
INDENTED = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' %}
[SYS] {{ message['content'] | trim }}
    {% elif message['role'] == 'user' %}
[USER] {{ message['content'] }}
    {% else %}
[BOT] {{ message['content'] }}{{ eos_token }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
[BOT]
{% endif %}"""


@pytest.fixture(scope="module")
def hf_smollm2_tokenizer(smollm2_gguf):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.mark.models
@pytest.mark.parametrize("add_gen", [True, False])
@pytest.mark.parametrize("with_system", [True, False])
def test_smollm2_template_matches_hf(hf_smollm2_tokenizer, add_gen, with_system):
    tok = hf_smollm2_tokenizer
    msgs = CONVERSATION if with_system else CONVERSATION[1:]
    ref = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_gen)
    ours = render_chat(tok.chat_template, msgs, add_generation_prompt=add_gen)
    assert ours == ref
    assert ("You are a helpful AI assistant named SmolLM" in ours) != with_system


@pytest.mark.models
def test_whitespace_control_matches_hf(hf_smollm2_tokenizer):
    tok = hf_smollm2_tokenizer
    special = {"bos_token": tok.bos_token, "eos_token": tok.eos_token}
    for add_gen in (True, False):
        ref = tok.apply_chat_template(CONVERSATION, chat_template=INDENTED, tokenize=False,
                                      add_generation_prompt=add_gen)
        assert ChatTemplate(INDENTED, special).render(CONVERSATION, add_generation_prompt=add_gen) == ref


def test_trim_and_lstrip_blocks_hand_worked():
    out = render_chat(INDENTED, CONVERSATION[:2], special={"bos_token": "<s>", "eos_token": "</s>"})
    assert out == "<s>\n[SYS] You are terse.\n[USER] Hi there!\n[BOT]\n"


def test_raise_exception_helper():
    src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok"
    assert render_chat(src, CONVERSATION[1:2]) == "ok"
    with pytest.raises(DodaiError, match="first must be user"):
        render_chat(src, CONVERSATION)


HOSTILE = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the classic sandbox escape
    "{{ messages.append({'role': 'x'}) }}",  # immutable sandbox: no mutation of our arguments
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # silent 1e10 loop
    "{% for c in 'a' * 100000 %}{% for d in 'b' * 100000 %}{% endfor %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",  # a gigabyte string in one step
    "{{ 9 ** 99999999 }}",  # a huge integer
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",  # unbounded recursion
    "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "{% for i in range(900000) %}{{ 'abcdefgh' }}{% endfor %}",  # 7.2 MB of output
    "{{ 1 / 0 }}",
    "{% for x in",  # syntax error
    "",
]


@pytest.mark.parametrize("src", HOSTILE)
def test_hostile_templates_fail_fast_with_dodai_error(src):
    t0 = time.monotonic()
    with pytest.raises(DodaiError):
        ChatTemplate(src).render(CONVERSATION)
    assert time.monotonic() - t0 < 10  # bounded: the budget stops it, not the test timeout


def test_dunder_access_yields_nothing():
    """Like HF, an unsafe attribute is an undefined value: it renders as nothing and cannot be used."""
    src = "[{{ messages.__class__ }}|{{ lipsum.__globals__ }}|{{ cycler.__init__ }}]"
    assert render_chat(src, CONVERSATION) == "[||]"
    with pytest.raises(DodaiError, match="sandbox"):
        render_chat("{{ messages.__class__.__base__ }}", CONVERSATION)


@pytest.mark.parametrize("bad", [None, "hi", [{"role": "user"}], [{"role": 1, "content": "x"}], ["x"]])
def test_bad_messages_are_dodai_errors(bad):
    with pytest.raises(DodaiError):
        render_chat("{{ messages }}", bad)
