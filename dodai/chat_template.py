"""Chat templates: render a model's own Jinja chat template, safely.

A GGUF file or an HF tokenizer_config.json carries ``chat_template``, a Jinja2 program that turns a
list of ``{"role", "content"}`` messages into the prompt string the model was fine-tuned on (for
SmolLM2 the ChatML form ``<|im_start|>user\\n…<|im_end|>\\n``). The template is **untrusted input**:
a model file from anywhere could carry ``{{ ''.__class__.__mro__ }}`` or a loop that never ends.

So we render it the way HF transformers does (``trim_blocks``, ``lstrip_blocks``,
``loopcontrols``, a ``raise_exception`` helper, ``tojson`` without HTML escaping, the special tokens
as variables) but inside :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no dunder access, no
mutation of the arguments) and with budgets: ``range`` and loop iterations, the size of ``*``/``**``
results, the output length and the wall-clock time (every ``{% for %}`` is rewritten to iterate
through the budget, so even a silent nested loop stops). Every failure is a one-line :class:`DodaiError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from dodai.errors import DodaiError

MAX_OUTPUT_CHARS = 4_000_000  # a rendered prompt longer than this is an attack or a bug
MAX_ITERATIONS = 1_000_000  # items handed out by range() over one render
MAX_SEQUENCE = 1_000_000  # longest string/list a `*` may build; also caps `**` results
MAX_SECONDS = 5.0  # wall clock for one render


class ChatTemplate:
    """A compiled chat template. ``special`` maps variable names (``bos_token``, ``eos_token`` …)
    to their strings; they are passed to every render, as HF does."""

    def __init__(self, source: str, special: dict[str, str] | None = None):
        if not isinstance(source, str) or not source.strip():
            raise DodaiError("chat template is empty or not text")
        self.source = source
        self.special = dict(special or {})
        self._env = _make_env()
        import jinja2

        try:
            tree = self._env.parse(source)
            # Every {% for %} iterates through the budget, so a nested loop that prints nothing
            # still cannot run forever: rewrite `for x in ITER` as `for x in dodai_budget_iter(ITER)`.
            for loop in tree.find_all(jinja2.nodes.For):
                loop.iter = jinja2.nodes.Call(jinja2.nodes.Name("dodai_budget_iter", "load"), [loop.iter],
                                              [], None, None, lineno=loop.lineno)
            self._template = self._env.from_string(tree)
        except jinja2.TemplateError as e:
            raise DodaiError(f"chat template does not compile: {type(e).__name__}: {e}") from None
        except (RecursionError, MemoryError):
            raise DodaiError("chat template is too deeply nested to compile") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The prompt string for ``messages``; ``add_generation_prompt`` appends the assistant header."""
        import jinja2
        from jinja2.sandbox import SecurityError

        msgs = _check_messages(messages)
        ctx = {**self.special, **extra, "messages": msgs, "add_generation_prompt": bool(add_generation_prompt)}
        self._env.budget.reset()
        out: list[str] = []
        n = 0
        try:
            for chunk in self._template.generate(**ctx):
                n += len(chunk)
                if n > MAX_OUTPUT_CHARS:
                    raise DodaiError(f"chat template output exceeds {MAX_OUTPUT_CHARS} characters")
                self._env.budget.tick(0)
                out.append(chunk)
        except DodaiError:
            raise
        except _TemplateRaised as e:
            raise DodaiError(f"chat template refused the conversation: {e}") from None
        except SecurityError as e:
            raise DodaiError(f"chat template violates the sandbox: {e}") from None
        except jinja2.TemplateError as e:
            raise DodaiError(f"chat template failed: {type(e).__name__}: {e}") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise DodaiError(f"chat template exceeded a resource limit: {type(e).__name__}") from None
        except Exception as e:  # a template can raise anything a Python operation can (1/0, int('x'))
            raise DodaiError(f"chat template failed: {type(e).__name__}: {e}") from None
        return "".join(out)


def render_chat(source: str, messages: list[dict], add_generation_prompt: bool = True,
                special: dict[str, str] | None = None, **extra) -> str:
    return ChatTemplate(source, special).render(messages, add_generation_prompt, **extra)


# ---- internals -----------------------------------------------------------------------------------

class _TemplateRaised(Exception):
    """raise_exception(msg) called by the template itself (e.g. 'roles must alternate')."""


class _Budget:
    def __init__(self):
        self.reset()

    def reset(self):
        self.iterations = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self, n: int = 1):
        self.iterations += n
        if self.iterations > MAX_ITERATIONS:
            raise DodaiError(f"chat template loops more than {MAX_ITERATIONS} times")
        if time.monotonic() > self.deadline:
            raise DodaiError(f"chat template took longer than {MAX_SECONDS:.0f} s to render")


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, list):
        raise DodaiError("chat messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DodaiError(f"chat message {i} is not a {{'role': str, 'content': str}} dict")
        out.append(dict(m))
    return out


def _make_env():
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    budget = _Budget()

    class _Env(ImmutableSandboxedEnvironment):
        # `*` and `**` are the cheap ways to build a gigabyte string or a huge integer in one step.
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, k in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(k, int) and len(seq) * k > MAX_SEQUENCE:
                        raise SecurityError(f"`*` would build a sequence of {len(seq) * k} items")
            if operator == "**" and isinstance(right, int) and abs(right) > 64 and \
                    isinstance(left, int) and abs(left) > 1:
                raise SecurityError("`**` exponent too large")
            return super().call_binop(context, operator, left, right)

        def iterate(self, it):  # not a jinja hook; the for-loop and range() guard below
            for x in it:
                budget.tick()
                yield x

    env = _Env(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], autoescape=False)
    env.budget = budget

    def raise_exception(message):
        raise _TemplateRaised(str(message))

    def bounded_range(*args):
        try:
            r = range(*args)
        except TypeError as e:
            raise SecurityError(f"bad range(): {e}") from None
        if len(r) > MAX_ITERATIONS:
            raise SecurityError(f"range of {len(r)} items is too long")
        return env.iterate(r)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # HF's override: no HTML escaping (templates emit JSON for tool schemas, not for web pages)
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return time.strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, range=bounded_range, strftime_now=strftime_now,
                       dodai_budget_iter=env.iterate)
    return env


def messages_from_pairs(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    """[(role, content), …] -> [{"role": role, "content": content}, …]."""
    return [{"role": r, "content": c} for r, c in pairs]
