"""Chat templates within bounds: hostile templates stop fast with one-line errors and bounded memory
(measured in child processes with ru_maxrss), benign templates render exactly as plain Jinja does.

The hostile cases run in one child process that forks once per case (two at a time), so each case has its
own peak RSS (``os.wait4``) while the interpreter starts only once; each fork reports its time and error.
Two cases also go end to end through ``dodai chat`` on a tiny GGUF model whose ``tokenizer.chat_template`` is
hostile.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import jinja2
import jinja2.ext
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dodai.chat_template import MAX_SOURCE_CHARS, ChatTemplate
from dodai.errors import DodaiError

# Baseline of a fork (python + jinja2 + dodai.chat_template + the 4.5 MB case list) is ~60 MB; the largest
# bounded case peaks near 85 MB; a case that built its value would take 1.5 GB or more.
MAX_RSS_MB = 256
MAX_CASE_SECONDS = 5.0  # render bound 2 s + the longest single bounded operation + compile

# Each case must end in a one-line DodaiError (compile or render).
HOSTILE = {
    # string building in one step
    "percent_width": "{{ '%01500000000d' % 1 }}",
    "percent_precision": "{{ '%.1500000000f' % 1.5 }}",
    "percent_star": "{{ '%*d' % (1500000000, 1) }}",
    "percent_mapping": "{% set s = 'x' * 3000000 %}{{ '%(a)s%(a)s%(a)s' % {'a': s} }}",
    "format_filter": "{{ '%01500000000d'|format(1) }}",
    "str_format": "{{ '{:>1500000000}'.format(1) }}",
    "str_format_nested": "{{ '{:>{w}}'.format(1, w=1500000000) }}",
    "str_format_map": "{{ '{a:>1500000000}'.format_map({'a': 1}) }}",
    "format_via_attr": "{{ ('{:>1500000000}'|attr('format'))(1) }}",
    "center_filter": "{{ 'x'|center(1500000000) }}",
    "center_method": "{{ 'x'.center(1500000000) }}",
    "ljust": "{{ 'x'.ljust(1500000000) }}",
    "zfill": "{{ '1'.zfill(1500000000) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(10000000) }}",
    "bound_method": "{% set f = 'x'.rjust %}{{ f(1500000000) }}",
    "map_center": "{{ ['a', 'b']|map('center', 1500000000)|list }}",
    "star_string": "{{ 'x' * 1500000000 }}",
    "star_list": "{{ [0] * 1500000000 }}",
    "star_bytes": "{{ 'x'.encode() * 1500000000 }}",
    "replace_filter": "{{ ('x' * 1000000)|replace('x', 'y' * 30) }}",
    "replace_method": "{{ ('x' * 1000000).replace('x', 'y' * 1000) }}",
    "join_filter": "{{ ('x' * 1000000)|join('y' * 1000) }}",
    "join_method": "{{ ('y' * 1000).join('x' * 1000000) }}",
    "indent": "{{ ('\n' * 1000000)|indent(1000, true, true) }}",
    "wordwrap": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='y' * 10000) }}",
    "truncate_end": "{{ 'ab'|truncate(1, end='x' * 5000000) }}",
    "batch_fill": "{{ [1]|batch(1500000000, 0)|list }}",
    "slice_count": "{{ [1]|slice(1500000000)|list|length }}",
    "lipsum_words": "{{ lipsum(1000, False, 100000, 100000) }}",
    "lipsum_paragraphs": "{{ lipsum(100000000) }}",
    "tojson_indent": "{{ [[[[1]]]]|tojson(indent=1500000000) }}",
    "split_many": "{{ ('a ' * 2000000).split()|length }}",
    "list_of_chars": "{{ ('é' * 4000000)|list|length }}",
    # growth over many steps
    "tilde_doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                      "{% endfor %}{{ ns.s|length }}",
    "plus_doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                     "{% endfor %}{{ ns.s|length }}",
    "int_squaring": "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
                    "{% endfor %}{{ ns.n > 0 }}",
    "int_power": "{{ 9 ** 99999999 }}",
    "round_ceil_precision": "{{ 1.5|round(100000000, 'ceil') }}",
    "accumulate_copies": "{% set ns = namespace(l=[], s='x' * 1000000) %}{% for i in range(100000) %}"
                         "{% set ns.l = ns.l + [ns.s ~ i] %}{% endfor %}{{ ns.l|length }}",
    "accumulate_slices": "{% set ns = namespace(l=[], s='x' * 1000000) %}{% for i in range(100000) %}"
                         "{% set ns.l = ns.l + [ns.s[i:]] %}{% endfor %}{{ ns.l|length }}",
    "static_text_in_set_block": "{% set x %}{% for i in range(1000000) %}" + "y" * 4000 +
                                "{% endfor %}{% endset %}{{ x|length }}",
    "shared_list_output": "{% set ns = namespace(l=['xxxxxxxxxx']) %}{% for i in range(40) %}"
                          "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
    "shared_list_compare": "{% set ns = namespace(a=['x'], b=['x']) %}{% for i in range(40) %}"
                           "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
    "shared_list_tojson": "{% set ns = namespace(l=['xxxxxxxxxx']) %}{% for i in range(40) %}"
                          "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|tojson|length }}",
    "sum_of_lists": "{{ ([[1]] * 60000)|sum(start=[])|length }}",
    "dict_fromkeys": "{{ {}.fromkeys(range(1000000))|length }}",
    "map_then_join": "{{ range(1000000)|map('string')|join }}",
    "varargs_splat": "{% macro m() %}{{ varargs }}{% endmacro %}{{ m(*range(1000000)) }}",
    "deeply_nested_value": "{% set ns = namespace(l=[]) %}{% for i in range(20000) %}{% set ns.l = [ns.l] %}"
                           "{% endfor %}{{ ns.l }}",
    "filter_block": "{% filter center(1500000000) %}x{% endfilter %}",
    "block_self_recursion": "{% block a %}{{ self.a() }}{% endblock %}",
    "strftime_format": "{{ strftime_now('%c' * 300000) }}",
    # work: loops, recursion, fan-out
    "silent_nested_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "huge_range": "{{ range(10**10)|list|length }}",
    "macro_recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "macro_fan_out": "{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "macro_fan_out_silent": "{% macro f(n) %}{% if n < 40 %}{% set a = f(n+1) %}{% set b = f(n+1) %}{% endif %}"
                            "{% endmacro %}{{ f(0) }}",
    "recursive_loop": "{% for m in messages recursive %}{{ loop(messages) }}{{ loop(messages) }}{% endfor %}",
    "caller_recursion": "{% macro m() %}{{ caller() }}{% endmacro %}{% macro r() %}{% call m() %}{{ r() }}"
                        "{% endcall %}{% endmacro %}{{ r() }}",
    # compile
    "nested_for_21": "{% for a in range(2) %}" * 21 + "x" + "{% endfor %}" * 21,
    "source_4_5_mb": "{{ messages }}" * 320_000,
    "many_tokens": "{{ a }}" * 9000,
    "deep_parentheses": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "deep_plus_chain": "{{ " + " + ".join(["1"] * 3000) + " }}",
    "deep_filter_chain": "{{ 1" + "|abs" * 3000 + " }}",
    "unclosed_blocks": "{%" * 30000,
    "unterminated_string": "{{ '" + "\\'" * 30000,
    # sandbox and reserved names
    "dunder_escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "reserved_helper_call": "{{ dodai_charge(-100000000) }}",
    "reserved_helper_shadow": "{% set dodai_iter = dict %}{% for x in [1] %}{{ x }}{% endfor %}",
}

_CHILD = r"""
import json, os, sys, time, traceback
from dodai.chat_template import ChatTemplate
from dodai.errors import DodaiError
cases = list(json.load(sys.stdin).items())
msgs = [{"role": "user", "content": "hi"}]

def run(name, src, w):
    t0 = time.monotonic()
    try:
        ChatTemplate(src).render(msgs)
        kind, msg = "rendered", ""
    except DodaiError as e:
        kind, msg = "DodaiError", str(e)
    except BaseException as e:
        kind, msg = "other", "".join(traceback.format_exception(e))
    rec = {"name": name, "seconds": time.monotonic() - t0, "kind": kind, "message": msg[:4000]}
    os.write(w, json.dumps(rec).encode())

out, running = [], {}
while cases or running:
    while cases and len(running) < 2:  # each case in a fork of this process: its own ru_maxrss
        name, src = cases.pop(0)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                run(name, src, w)
            finally:
                os._exit(0)
        os.close(w)
        running[pid] = (name, r)
    pid, status, usage = os.wait4(-1, 0)
    name, r = running.pop(pid)
    data = b"".join(iter(lambda: os.read(r, 65536), b""))
    os.close(r)
    rec = json.loads(data) if data else {"name": name, "seconds": 0, "kind": f"died ({status})", "message": ""}
    rec["rss_mb"] = usage.ru_maxrss // 1024
    out.append(rec)
print(json.dumps(out))
"""


def _limit_memory():  # a regression must fail the test, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_hostile_templates_stop_fast_with_one_line_errors_and_bounded_memory():
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(HOSTILE), capture_output=True, text=True,
                          timeout=len(HOSTILE) * MAX_CASE_SECONDS, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert sorted(c["name"] for c in report) == sorted(HOSTILE)
    bad = []
    for case in report:
        if case["kind"] != "DodaiError" or "\n" in case["message"] or not case["message"].startswith("chat template"):
            bad.append((case["name"], case["kind"], case["message"][:300]))
        elif case["seconds"] > MAX_CASE_SECONDS or case["rss_mb"] > MAX_RSS_MB:
            bad.append((case["name"], f"{case['seconds']:.1f} s", f"{case['rss_mb']} MB"))
    assert not bad, bad
    assert time.monotonic() - t0 < len(HOSTILE) * 2  # most cases are refused before they cost anything


def test_source_size_is_refused_before_parsing():
    t0 = time.perf_counter()
    with pytest.raises(DodaiError, match="characters long"):
        ChatTemplate("x" * (MAX_SOURCE_CHARS + 1))
    assert time.perf_counter() - t0 < 0.5


def test_bound_errors_name_the_bound():
    msgs = [{"role": "user", "content": "hi"}]
    cases = {"'%01500000000d' % 1": "`%`", "'x'|center(1500000000)": "'center' filter",
             "'x'.center(1500000000)": "str.center()", "'{:>1500000000}'.format(1)": "str.format()",
             "9 ** 99999999": "integer", "lipsum(100000000)": "lipsum"}
    for expr, fragment in cases.items():
        with pytest.raises(DodaiError, match="chat template") as e:
            ChatTemplate("{{ " + expr + " }}").render(msgs)
        assert fragment in str(e.value), (expr, str(e.value))


def test_data_dependent_blow_up_is_refused_at_render_not_at_load():
    # Bounded for the one-message trial render; unbounded only for a long user message.
    src = "{% for m in messages %}{{ m['content'] * 1000 }}{% endfor %}"
    t = ChatTemplate(src)
    assert t.render([{"role": "user", "content": "ab"}]) == "ab" * 1000
    with pytest.raises(DodaiError, match="`\\*`"):
        t.render([{"role": "user", "content": "x" * 10_000}])


def test_template_errors_that_depend_on_the_conversation_do_not_fail_the_load():
    src = ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
           "{{ messages[1]['content'] }}")
    t = ChatTemplate(src)  # its own refusal on the trial conversation is not a load error
    assert t.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "u"


# ---- benign templates: exactly what plain (unbounded) Jinja renders --------------------------------------

def _plain_jinja(source: str):
    """HF's environment (transformers' chat_template_utils), without any of our bounds: the oracle."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: \
        json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


CHATML_DEFAULT_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

HEADERS = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "Today is a good day." %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "You may call these functions:\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message.tool_calls is defined and message.tool_calls %}
        {%- set call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
        {{- '{"name": "' + call.name + '", "parameters": ' + call.arguments | tojson + '}' }}
        {{- "<|eot_id|>" }}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim }}
        {{- '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

KITCHEN_SINK = """{%- set ns = namespace(sys=[], n=0, last_user=-1) -%}
{%- macro schema(p, depth) -%}
{%- if p is mapping -%}{ {%- for k, v in p|dictsort -%}{{ k }}: {{ schema(v, depth + 1) }}
{%- if not loop.last %}, {% endif -%}{%- endfor -%} }
{%- elif p is string -%}"{{ p|upper }}"{%- else -%}{{ p }}{%- endif -%}
{%- endmacro -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{%- set ns.sys = ns.sys + [m.content] -%}{%- endif -%}
  {%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
  {%- set ns.n = ns.n + m.content|length -%}
{%- endfor -%}
[sys:{{ ns.sys|join(' | ') }}][chars:{{ '%05d' % ns.n }}][last user:{{ ns.last_user }}]
{% if tools is defined -%}
{%- for t in tools|sort(attribute='name') -%}
{{ '{0}({1})'.format(t.name, t.params|map(attribute='name')|join(', ')) }} -> {{ schema(t.spec, 0) }}
{% endfor -%}{%- endif -%}
{%- for m in messages|rejectattr('role', 'equalto', 'system') -%}
{%- set text = m.content.split('</think>')[-1].strip() if '</think>' in m.content else m.content -%}
<{{ m.role|capitalize }} {{ loop.index }}/{{ loop.length }}>{{ text|replace('\\t', '    ')|truncate(60) }}
{{- ' ~' ~ (text|wordcount) ~ ' words' if loop.last else '' }}
{{ text[:5] ~ '…' ~ text[-3:] }}|{{ (text|list|unique|list|length) }}|{{ text|center(9)|indent(2) }}
{% endfor -%}
{%- if add_generation_prompt %}<Assistant>{{ range(3)|map('string')|join('-') }}{% endif -%}"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "  Be terse.  "}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "<think>easy\tsum</think> 4"}, {"role": "user", "content": "日本語で? 🙂"}],
    [{"role": "user", "content": "call it"},
     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "calc", "arguments": {"x": 1}}}]},
     {"role": "user", "content": "thanks\tagain " * 20}],
]
TOOLS = [{"name": "search", "params": [{"name": "q"}, {"name": "k"}],
          "spec": {"type": "object", "properties": {"q": "string", "k": 5}}},
         {"name": "calc", "params": [{"name": "expr"}], "spec": {"type": "object"}}]


@pytest.mark.parametrize("source", [CHATML_DEFAULT_SYSTEM, HEADERS, KITCHEN_SINK],
                         ids=["chatml", "headers_tools", "kitchen_sink"])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_gen", [True, False])
def test_benign_templates_render_exactly_like_plain_jinja(source, conv, add_gen):
    msgs = CONVERSATIONS[conv]
    extra = {"bos_token": "<s>", "tools": TOOLS}
    want = _plain_jinja(source).render(messages=msgs, add_generation_prompt=add_gen, **extra)
    got = ChatTemplate(source, {"bos_token": "<s>"}).render(msgs, add_generation_prompt=add_gen, tools=TOOLS)
    assert got == want
    assert len(got) > 40


def test_long_benign_conversation_renders():
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "w" * 200}
            for i in range(4000)]  # ~0.85 M characters
    got = ChatTemplate(CHATML_DEFAULT_SYSTEM).render(msgs)
    assert got == _plain_jinja(CHATML_DEFAULT_SYSTEM).render(messages=msgs, add_generation_prompt=True)


# ---- end to end: a GGUF whose template is hostile, through `dodai chat` -----------------------------------

def _tiny_gguf(path, template: str) -> None:
    """A 1-layer Llama GGUF with a byte-level vocabulary (no merges) and the given chat template."""
    from dodai.tokenizers.pretokenize import bytes_to_unicode
    from dodai.weights.gguf import write_gguf

    rng = np.random.default_rng(0)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + [bytes_to_unicode()[b] for b in range(256)]
    V, C, F, H, KV = len(tokens), 32, 64, 4, 2
    md = {"general.architecture": "llama", "llama.context_length": 128, "llama.embedding_length": C,
          "llama.block_count": 1, "llama.feed_forward_length": F, "llama.attention.head_count": H,
          "llama.attention.head_count_kv": KV, "llama.rope.freq_base": 10000.0,
          "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": V,
          "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": [3] * len(specials) + [1] * 256, "tokenizer.ggml.merges": [],
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.chat_template": template}
    types = {"tokenizer.ggml.token_type": "array[int32]", "tokenizer.ggml.merges": "array[string]"}

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    kv = KV * (C // H)
    t = {"token_embd.weight": w(V, C), "output_norm.weight": np.ones(C, np.float32), "output.weight": w(V, C),
         "blk.0.attn_norm.weight": np.ones(C, np.float32), "blk.0.attn_q.weight": w(C, C),
         "blk.0.attn_k.weight": w(kv, C), "blk.0.attn_v.weight": w(kv, C), "blk.0.attn_output.weight": w(C, C),
         "blk.0.ffn_norm.weight": np.ones(C, np.float32), "blk.0.ffn_gate.weight": w(F, C),
         "blk.0.ffn_up.weight": w(F, C), "blk.0.ffn_down.weight": w(C, F)}
    write_gguf(path, md, t, types)


_LAUNCHER = ("import resource, subprocess, sys\n"
             "rc = subprocess.call(sys.argv[2:])\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
             "sys.exit(rc)\n")


def _start_cli(rss_file, args: list[str], stdin: str) -> subprocess.Popen:
    """``python -m dodai ARGS`` under a small launcher that writes the child's own peak RSS to ``rss_file``."""
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(rss_file), sys.executable, "-m", "dodai", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit_memory, start_new_session=True)
    proc.stdin.write(stdin)
    proc.stdin.flush()
    return proc


HOSTILE_GGUF = {  # name: (template, a fragment of the error)
    "macro_fan_out": ("{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
                      "2 s"),
    "percent_width": ("{{ '%01500000000d' % 1 }}", "`%`"),
}
# `dodai chat` on this tiny model with a benign template peaks at ~310 MB (torch included), measured the same way.
MAX_CHAT_RSS_MB = 500


def test_dodai_chat_refuses_a_gguf_with_a_hostile_template(tmp_path):
    """The runs start together (each child spends most of its time importing torch)."""
    procs = {}
    for name, (template, _) in HOSTILE_GGUF.items():
        _tiny_gguf(tmp_path / f"{name}.gguf", template)
        procs[name] = _start_cli(tmp_path / f"{name}.rss", ["chat", "--model", str(tmp_path / f"{name}.gguf"),
                                                            "--max-new-tokens", "2", "--temperature", "0"], "hello\n")
    t0 = time.monotonic()
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(5.0, 180 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:  # a hung render: the launcher and its child go
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{name}: dodai chat did not finish")
        rc = proc.returncode
        results[name] = (rc, out, err, int((tmp_path / f"{name}.rss").read_text()) // 1024)
    seconds = time.monotonic() - t0
    for name, (_, fragment) in HOSTILE_GGUF.items():
        rc, out, err, rss = results[name]
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (name, err[-2000:])
        assert lines[0].startswith("dodai: error: chat template") and fragment in lines[0], lines[0]
        assert rss <= MAX_CHAT_RSS_MB, (name, rss)
    assert seconds < 120  # process start on a loaded 2-core machine dominates; the template part is bounded above
