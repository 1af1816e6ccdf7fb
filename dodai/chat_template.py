"""Chat templates: render a model's own Jinja chat template, safely and within fixed bounds.

A GGUF file or an HF tokenizer_config.json carries ``chat_template``, a Jinja2 program that turns a
list of ``{"role", "content"}`` messages into the prompt string the model was fine-tuned on (for
SmolLM2 the ChatML form ``<|im_start|>user\\n…<|im_end|>\\n``). The template is **untrusted input**:
a model file from anywhere could carry ``{{ ''.__class__.__mro__ }}``, a loop that never ends, or one
expression that builds a gigabyte string (``'%01500000000d' % 1``).

We render it the way HF transformers does (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, a
``raise_exception`` helper, ``tojson`` without HTML escaping, the special tokens as variables) inside
:class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no dunder access, no mutation of the
arguments), and bound everything a template can spend. Every failure is a one-line :class:`DodaiError`.

**Before compiling** (compiling is itself expensive: CPython compiles the generated module): the
source length (:data:`MAX_SOURCE_CHARS`), the number of lexer tokens (:data:`MAX_TOKENS`, counted
while lexing, so a huge template stops early), then on the parsed tree the number of nodes
(:data:`MAX_NODES`), the depth of the tree (:data:`MAX_DEPTH`) and the nesting of block statements
(:data:`MAX_BLOCK_NESTING`; CPython refuses more than 20 nested loops with a raw SyntaxError).

**While rendering**, one budget per render (a :class:`_Budget` in a context variable):

- *steps* (:data:`MAX_STEPS`) and *wall clock* (:data:`MAX_SECONDS`), counted at every loop
  iteration, call, filter, test, operator, comparison, attribute or item lookup and output piece;
- *size before computing*: every operation that can build a large value in one C-level step is
  estimated first and refused when the result would exceed :data:`MAX_VALUE` units (a character of a
  string is one unit, an item of a list/tuple/dict :data:`ITEM_UNITS`): the operators ``+ * % **``
  (``%`` and ``str.format`` read widths and precisions from the format string), ``~``, slicing, the
  filters and ``str`` methods that take a size (``center``, ``indent``, ``replace``, ``join``,
  ``batch``, ``slice``, ``format``, ``wordwrap``, ``tojson(indent=…)``, ``lipsum`` …), integer
  results above :data:`MAX_INT_BITS` bits;
- *everything built* (:data:`MAX_BUILT` units over the render, including the static text of a loop
  or macro body on every pass), which bounds both memory and copying work;
- nested calls (macros, recursive ``loop()``) at most :data:`MAX_CALL_DEPTH` deep, and the rendered
  prompt at most :data:`MAX_OUTPUT_CHARS` characters.

How: the parsed tree is rewritten before code generation (``for`` iterates through the budget, ``~``,
slices and comparison operands go through checking helpers, loop and macro bodies charge their static
text), the environment intercepts all arithmetic operators, calls, lookups and output
(``finalize``), and every filter and test is wrapped (``pass_context``, so Jinja never evaluates one at
compile time). Names starting with ``dodai_`` are reserved for the helpers.
"""

from __future__ import annotations

import builtins
import contextvars
import json
import re
import string
import time
import types
from collections.abc import Iterable

from dodai.errors import DodaiError

# -- limits (compile) ---------------------------------------------------------------------------------------
MAX_SOURCE_CHARS = 65_536  # real chat templates are at most a few tens of KB
MAX_TOKENS = 12_000  # lexer tokens
MAX_NODES = 12_000  # nodes of the parsed tree
MAX_DEPTH = 48  # depth of the parsed tree (expressions included)
MAX_BLOCK_NESTING = 16  # for/if/macro/set-block/... nested in each other
# -- limits (render) ----------------------------------------------------------------------------------------
MAX_OUTPUT_CHARS = 4_000_000  # a rendered prompt longer than this is an attack or a bug
MAX_VALUE = 4_000_000  # largest single value an operation may build, in units (see ITEM_UNITS)
ITEM_UNITS = 64  # an item of a list/tuple/dict/set counts this many units (its slot plus a small object)
MAX_BUILT = 64_000_000  # units built over one render, all operations together
MAX_STEPS = 2_000_000  # loop iterations, calls, filters, operators, lookups over one render
MAX_ITERATIONS = 1_000_000  # longest range()
MAX_CALL_DEPTH = 64  # macro / loop() / function calls nested in each other
MAX_CALL_ARGS = 4096  # arguments of one call (``f(*range(1000000))``)
MAX_INT_BITS = 16_384  # largest integer an operator may produce (str() refuses > 4300 digits anyway)
MAX_SECONDS = 2.0  # wall clock for one render
SLOW_INPUT_CHARS = 262_144  # input limit of the filters that run Python-level loops per word or item


class ChatTemplate:
    """A compiled chat template. ``special`` maps variable names (``bos_token``, ``eos_token`` …)
    to their strings; they are passed to every render, as HF does."""

    def __init__(self, source: str, special: dict[str, str] | None = None):
        if not isinstance(source, str) or not source.strip():
            raise DodaiError("chat template is empty or not text")
        self.source = source
        self.special = dict(special or {})
        self._env = _make_env()
        self._template = _compile(self._env, source)
        # A trial render: a template that breaks a bound (or the sandbox) on a one-message conversation
        # breaks it on every conversation, so it is refused now, where the model file is loaded, rather
        # than on every turn. Its own refusals (raise_exception) and ordinary errors stay data-dependent.
        try:
            self.render([{"role": "user", "content": "Hello"}], add_generation_prompt=True)
        except _RenderFailure as e:
            if e.fatal:
                raise DodaiError(f"chat template fails on a one-message conversation: {e}") from None

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The prompt string for ``messages``; ``add_generation_prompt`` appends the assistant header."""
        import jinja2
        from jinja2.sandbox import SecurityError

        msgs = _check_messages(messages)
        ctx = {**self.special, **extra, "messages": msgs, "add_generation_prompt": bool(add_generation_prompt)}
        ctx = {k: v for k, v in ctx.items() if not (isinstance(k, str) and k.startswith(_RESERVED))}
        budget = _Budget()
        token = _CURRENT.set(budget)
        out: list[str] = []
        n = 0
        try:
            for chunk in self._template.generate(**ctx):
                n += len(chunk)
                if n > MAX_OUTPUT_CHARS:
                    budget.fail(f"chat template output exceeds {MAX_OUTPUT_CHARS:,} characters")
                budget.tick()
                out.append(chunk)
        except DodaiError as e:
            raise _RenderFailure(budget.error or str(e), fatal=budget.error is not None) from None
        except _TemplateRaised as e:
            raise _RenderFailure(f"chat template refused the conversation: {e}") from None
        except SecurityError as e:
            raise _RenderFailure(f"chat template violates the sandbox: {e}", fatal=True) from None
        except jinja2.TemplateError as e:
            raise _RenderFailure(f"chat template failed: {type(e).__name__}: {e}") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise _RenderFailure(f"chat template exceeded a resource limit: {type(e).__name__}", fatal=True) \
                from None
        except Exception as e:  # a template can raise anything a Python operation can (1/0, int('x'))
            raise _RenderFailure(f"chat template failed: {type(e).__name__}: {e}") from None
        finally:
            _CURRENT.reset(token)
        if budget.error:  # a bound was hit inside code that swallowed the exception
            raise _RenderFailure(budget.error, fatal=True)
        return "".join(out)


def render_chat(source: str, messages: list[dict], add_generation_prompt: bool = True,
                special: dict[str, str] | None = None, **extra) -> str:
    return ChatTemplate(source, special).render(messages, add_generation_prompt, **extra)


def messages_from_pairs(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    """[(role, content), …] -> [{"role": role, "content": content}, …]."""
    return [{"role": r, "content": c} for r, c in pairs]


# ---- the budget -------------------------------------------------------------------------------------------

_RESERVED = "dodai_"
_CURRENT: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("dodai_chat_template_budget",
                                                                          default=None)


class _TemplateRaised(Exception):
    """raise_exception(msg) called by the template itself (e.g. 'roles must alternate')."""


class _RenderFailure(DodaiError):
    """A render failed; ``fatal`` when a bound or the sandbox stopped it (not the template's own logic)."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class _Exceeded(DodaiError):
    """A bound was hit; the message is also kept on the budget (sticky), so code that swallows it
    cannot make the render succeed."""


class _Budget:
    __slots__ = ("steps", "built", "deadline", "depth", "error", "memo")

    def __init__(self):
        self.memo: dict[int, tuple] = {}  # sizes of immutable containers measured during this render
        self.steps = 0
        self.built = 0
        self.depth = 0
        self.error: str | None = None
        self.deadline = time.monotonic() + MAX_SECONDS

    def fail(self, msg: str):
        if self.error is None:
            self.error = msg
        raise _Exceeded(self.error)

    def tick(self, n: int = 1) -> None:
        if self.error is not None:
            raise _Exceeded(self.error)
        self.steps += n
        if self.steps > MAX_STEPS:
            self.fail(f"chat template exceeded {MAX_STEPS:,} steps (loop iterations, calls, operators)")
        if time.monotonic() > self.deadline:
            self.fail(f"chat template took longer than {MAX_SECONDS:g} s to render")

    def charge(self, units: int, what: str = "a value") -> None:
        if units > MAX_VALUE:
            self.fail(f"chat template would build {what} of about {units:,} units (limit {MAX_VALUE:,})")
        self.built += units
        if self.built > MAX_BUILT:
            self.fail(f"chat template built more than {MAX_BUILT:,} units of strings and lists")
        self.tick()


def _budget() -> _Budget | None:
    return _CURRENT.get()


def _check(units: int, what: str) -> None:
    """Refuse before computing: an operation whose result would exceed MAX_VALUE units."""
    if units > MAX_VALUE:
        b = _budget()
        msg = f"chat template would build {what} of about {units:,} units (limit {MAX_VALUE:,})"
        if b is not None:
            b.fail(msg)
        raise _Exceeded(msg)


def _refuse(msg: str) -> None:
    """Refuse an operation outright (no size to report)."""
    b = _budget()
    if b is not None:
        b.fail(f"chat template: {msg}")
    raise _Exceeded(f"chat template: {msg}")


def _tick() -> _Budget | None:
    b = _budget()
    if b is not None:
        b.tick()
    return b


# ---- sizes ------------------------------------------------------------------------------------------------

_CONTAINERS = (list, tuple, set, frozenset, dict)


def _units(x) -> int:
    """What a freshly built value costs (memory-ish, shallow): characters, or items × ITEM_UNITS."""
    if isinstance(x, (str, bytes, bytearray)):
        return len(x)
    if isinstance(x, _CONTAINERS):
        return len(x) * ITEM_UNITS
    if isinstance(x, int) and not isinstance(x, bool):
        return x.bit_length() // 8
    return 0


def _text_size(x, limit: int = MAX_VALUE) -> int:
    """An upper estimate of ``len(str(x))`` (nested strings counted as their repr); values above
    MAX_VALUE are reported as MAX_VALUE + 1 (``limit`` is accepted for readability at call sites)."""
    if isinstance(x, str):
        return len(x)
    return _walk(x)[0]


_OVER = MAX_VALUE + 1
_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_SCALARS = (bool, float, type(None))
_NAMESPACE: type = type(None)  # jinja2.utils.Namespace, set by _make_env (jinja2 is imported lazily)
_CONTAINER_TYPES: tuple = (*_CONTAINERS, *_VIEWS)


def _leaf_size(y) -> int:
    if type(y) is str or isinstance(y, str):  # repr in a container: printable text at most doubles, escapes ≤ 6
        return len(y) * (2 if y.isprintable() else 6) + 2
    if isinstance(y, _SCALARS):
        return 24
    if isinstance(y, int):
        return y.bit_length() // 3 + 2
    if isinstance(y, (bytes, bytearray)):
        return 4 * len(y) + 3
    return 64  # undefined, loop/macro objects, ranges, generators: short reprs


def _children(y) -> list:
    if isinstance(y, (dict, _VIEWS[2])):  # a dict, or its items() view (whose pairs are new tuples each time)
        return [z for pair in (y.items() if isinstance(y, dict) else y) for z in pair]
    if isinstance(y, _NAMESPACE):
        return [y._Namespace__attrs]
    return list(y)


def _walk(x) -> tuple[int, int]:
    """(estimated text size capped at MAX_VALUE + 1, deepest nesting) of ``x``.

    Iterative post-order over the containers, with a memo per render keyed by identity: lists, tuples,
    dicts and sets cannot change inside the immutable sandbox, so each is measured once per render, and a
    structure that shares its parts (``[l, l]`` forty times over) costs its distinct parts, not its
    exponential unfolding. A namespace can change (``{% set ns.x = … %}``), so it and everything that
    contains it are measured afresh each time; a cycle through a namespace counts as over the limit.
    """
    containers = _CONTAINER_TYPES
    if not isinstance(x, containers):
        return min(_leaf_size(x), _OVER), 0
    b = _budget()
    memo = b.memo if b is not None else {}  # id -> (object, size, depth, mutable); the object pins the id
    local: dict[int, tuple] = {}  # the same for values that contain a namespace
    active: set[int] = set()
    cyclic: set[int] = set()
    kids: dict[int, list] = {}  # children listed once per container (a view's pairs are new each time)
    stack = [(x, False)]
    while stack:
        y, done = stack.pop()
        key = id(y)
        if not done:
            if key in memo or key in local:
                continue
            if 2 + 4 * len(y._Namespace__attrs if isinstance(y, _NAMESPACE) else y) > MAX_VALUE:
                memo[key] = (y, _OVER, 1, False)  # every item prints as at least 3 characters and a comma
                continue
            active.add(key)
            stack.append((y, True))
            kids[key] = children = _children(y)
            for c in children:
                if type(c) is not str and isinstance(c, containers) and id(c) not in memo and id(c) not in local:
                    if id(c) in active:
                        cyclic.add(key)
                    else:
                        stack.append((c, False))
            continue
        active.discard(key)
        is_ns = isinstance(y, _NAMESPACE)
        total, depth, mutable = (14 if is_ns else 2), 0, is_ns
        if key in cyclic:
            total = _OVER
        for c in kids.pop(key):
            if total > MAX_VALUE:
                break
            if type(c) is str:
                total += len(c) * (2 if c.isprintable() else 6) + 4
                depth = depth or 1
            elif isinstance(c, containers):
                entry = memo.get(id(c)) or local.get(id(c))
                if entry is None:  # still open: a cycle
                    total = _OVER
                    break
                total += entry[1] + 2
                depth = max(depth, entry[2] + 1)
                mutable = mutable or entry[3]
            else:
                total += _leaf_size(c) + 2
                depth = depth or 1
        total = min(total, _OVER)
        (local if mutable else memo)[key] = (y, total, depth, mutable)
    entry = memo.get(id(x)) or local[id(x)]
    return entry[1], entry[2]


def _iter_guard(x):
    """A one-shot iterator (generator, map, …) is re-wrapped so each item it hands out ticks the budget;
    sized values pass unchanged."""
    if isinstance(x, (str, bytes, *_CONTAINERS, range)) or not hasattr(x, "__next__"):
        return x
    return _budget_iter(x)


def _budget_iter(it):
    b = _budget()
    for x in it:
        if b is not None:
            b.tick()
        yield x


def _materialize(x, what: str) -> list:
    """A list of ``x``'s items, refusing (before holding them all) more than MAX_VALUE / ITEM_UNITS."""
    if isinstance(x, (list, tuple)):
        return list(x)
    cap = MAX_VALUE // ITEM_UNITS
    out = []
    for item in _iter_guard(x):
        out.append(item)
        if len(out) > cap:
            _check(len(out) * ITEM_UNITS, what)
    return out


# -- format strings: % and str.format read their widths and precisions before formatting --------------------
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(?P<w>\*|\d+)?(?:\.(?P<p>\*|\d*))?[hlL]?(?P<t>.)", re.S)


def _num(text: str | None) -> int:
    if not text:
        return 0
    if len(text) > 9:
        return MAX_VALUE + 1
    return int(text)


def _percent_size(fmt, args) -> int:
    total, n = len(fmt), 0
    text = fmt.decode("latin-1") if isinstance(fmt, (bytes, bytearray)) else fmt
    for m in _PERCENT.finditer(text):
        if m.group("t") == "%":
            continue
        if m.group("w") == "*" or m.group("p") == "*":
            _refuse("a '%' format with a '*' width or precision is not allowed")
        total += _num(m.group("w")) + _num(m.group("p"))
        n += 1
    if isinstance(args, tuple):
        total += sum(_text_size(a) for a in args)
    elif isinstance(args, dict) and n:
        total += n * max((_text_size(v) for v in args.values()), default=0)
    elif n:
        total += _text_size(args)
    return total


def _format_size(fmt: str, args, kwargs) -> int:
    sizes = [_text_size(a) for a in args] + [_text_size(v) for v in kwargs.values()]
    biggest = max(sizes, default=0)
    total = len(fmt)
    for _literal, field, spec, conversion in string.Formatter().parse(fmt):
        if field is None:
            continue
        if spec and "{" in spec:
            _refuse("a str.format spec with a nested field is not allowed")
        total += sum(_num(d) for d in re.findall(r"\d+", spec or "")) + biggest * (10 if conversion else 2)
    return total


# -- str methods that take a size ---------------------------------------------------------------------------
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _lines(s) -> int:
    if isinstance(s, (bytes, bytearray)):
        return s.count(b"\n") + s.count(b"\r") + 1
    return sum(s.count(c) for c in _LINE_BREAKS) + 1


def _arg(args, kwargs, i: int, name: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _as_int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        return 0  # the real call raises TypeError itself
    return v


def _str_method_size(s, name: str, args, kwargs) -> int:
    n = len(s)
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(n, _as_int(_arg(args, kwargs, 0, "width", 0)))
    if name == "expandtabs":
        tab = _as_int(_arg(args, kwargs, 0, "tabsize", 8))
        return n + s.count("\t" if isinstance(s, str) else b"\t") * max(tab, 0)
    if name == "replace":
        old, new = _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", "")
        if not isinstance(old, type(s)) or not isinstance(new, type(s)):
            return n
        count = _as_int(_arg(args, kwargs, 2, "count", -1))
        occ = n + 1 if not old else s.count(old)
        if count >= 0:
            occ = min(occ, count)
        return n + occ * max(0, len(new) - len(old))
    if name in ("split", "rsplit"):
        sep = _arg(args, kwargs, 0, "sep", None)
        parts = s.count(sep) + 1 if isinstance(sep, type(s)) and sep else n // 2 + 1
        maxsplit = _as_int(_arg(args, kwargs, 1, "maxsplit", -1))
        if maxsplit >= 0:
            parts = min(parts, maxsplit + 1)
        return n + parts * ITEM_UNITS
    if name == "splitlines":
        return n + _lines(s) * ITEM_UNITS
    if name in ("upper", "lower", "casefold", "swapcase", "title", "capitalize"):
        return 3 * n
    if name == "encode":
        return 4 * n
    if name == "translate":
        table = _arg(args, kwargs, 0, "table", None)
        widest = max((_text_size(v) for v in table.values()), default=1) if isinstance(table, dict) else 1
        return n * max(widest, 1)
    return n


# -- filters ------------------------------------------------------------------------------------------------
def _soft_len(v) -> int:
    return len(v) if isinstance(v, str) else _text_size(v)


def _f_center(v, a, k):
    return max(_soft_len(v), _as_int(_arg(a, k, 0, "width", 80))), v


def _f_indent(v, a, k):
    w = _arg(a, k, 0, "width", 4)
    w = len(w) if isinstance(w, str) else max(_as_int(w), 0)
    s = v if isinstance(v, str) else ""
    return _soft_len(v) + (_lines(s) + 1) * w, v


def _f_format(v, a, k):
    return _percent_size(v if isinstance(v, str) else str(v)[:MAX_VALUE], k or tuple(a)), v


def _f_join(v, a, k):
    items = _materialize(v, "a join")
    sep = _arg(a, k, 0, "d", "")
    sep_len = len(sep) if isinstance(sep, str) else _text_size(sep)
    return sum(_text_size(x) for x in items) + max(len(items) - 1, 0) * sep_len, items


def _f_replace(v, a, k):
    s = v if isinstance(v, str) else None
    if s is None:
        return _text_size(v) * 2, v
    return _str_method_size(s, "replace", (_arg(a, k, 0, "old", ""), _arg(a, k, 1, "new", ""),
                                           _arg(a, k, 2, "count", None) or -1), {}), v


def _f_batch(v, a, k):
    fill = _arg(a, k, 1, "fill_with", None)
    return (_as_int(_arg(a, k, 0, "linecount", 0)) * ITEM_UNITS if fill is not None else 0), v


def _f_slice(v, a, k):
    items = _materialize(v, "a slice")
    return max(_as_int(_arg(a, k, 0, "slices", 0)), len(items)) * ITEM_UNITS, items


def _f_sum(v, a, k):
    start = _arg(a, k, 1, "start", 0)
    if not isinstance(start, (list, tuple)):
        return 0, v
    items = _materialize(v, "a sum")
    total = len(start) + sum(len(x) if isinstance(x, (list, tuple)) else 1 for x in items)
    # list + list copies the running total each time: quadratic work, bounded here
    return max(total * ITEM_UNITS, len(items) * total), items


def _f_wordwrap(v, a, k):
    wrap = _arg(a, k, 2, "wrapstring", None)
    return _soft_len(v) * (1 + (len(wrap) if isinstance(wrap, str) else 1)), v


def _f_urlize(v, a, k):
    extra = sum(len(x) for x in (_arg(a, k, 2, "target", None), _arg(a, k, 3, "rel", None)) if isinstance(x, str))
    n = _soft_len(v)
    return 3 * n + (n // 4 + 1) * (extra + 64) if extra else 4 * n + 64, v


def _f_truncate(v, a, k):
    end = _arg(a, k, 2, "end", "...")
    return _soft_len(v) + (len(end) if isinstance(end, str) else 0), v


def _f_round(v, a, k):
    p = _as_int(_arg(a, k, 0, "precision", 0))
    if abs(p) > 300:  # ceil/floor compute 10 ** precision as an exact integer
        _refuse(f"round() with precision {p} (limit 300)")
    return 0, v


def _f_list(v, a, k):
    if isinstance(v, str):
        return len(v) * ITEM_UNITS, v
    return 0, _materialize(v, "a list")


def _f_times(factor: int):
    return lambda v, a, k: (factor * _soft_len(v), v)


def _f_compare_cost(v, a, k):
    """Filters that compare items (sort, unique, min, …): comparing costs up to the items' text."""
    items = _materialize(v, "a sorted sequence") if not isinstance(v, (str, dict)) else v
    return (_text_size(items) if not isinstance(items, str) else 0), items


def _f_sized_text(v, a, k):
    return _text_size(v), v


_FILTER_SIZE = {
    "center": _f_center, "indent": _f_indent, "format": _f_format, "join": _f_join, "replace": _f_replace,
    "batch": _f_batch, "slice": _f_slice, "sum": _f_sum, "wordwrap": _f_wordwrap, "urlize": _f_urlize,
    "truncate": _f_truncate, "round": _f_round, "list": _f_list, "string": _f_sized_text,
    "pprint": lambda v, a, k: (2 * _text_size(v) + (_text_size(v) // 2 + 1) * _walk(v)[1], v),
    "xmlattr": lambda v, a, k: (6 * _text_size(v), v), "urlencode": lambda v, a, k: (12 * _text_size(v), v),
    "upper": _f_times(3), "lower": _f_times(3), "title": _f_times(3), "capitalize": _f_times(3),
    "escape": _f_times(6), "e": _f_times(6), "forceescape": _f_times(6), "striptags": _f_times(1),
    "sort": _f_compare_cost, "unique": _f_compare_cost, "min": _f_compare_cost, "max": _f_compare_cost,
    "dictsort": _f_compare_cost, "groupby": _f_compare_cost, "reverse": _f_compare_cost,
}
# Filters that loop in Python per word/item/match: their input is capped so one call stays short.
_SLOW_FILTERS = frozenset({"wordwrap", "urlize", "wordcount", "pprint", "title", "xmlattr", "urlencode",
                           "striptags", "groupby", "dictsort", "sort", "unique"})
_COMPARING_TESTS = frozenset({"==", "!=", "<", "<=", ">", ">=", "eq", "ne", "lt", "le", "gt", "ge", "equalto",
                              "lessthan", "greaterthan", "in", "sameas"})


def _wrap_filter(name: str, f, is_test: bool = False):
    from jinja2.utils import _PassArg, pass_context

    pass_arg = _PassArg.from_obj(f)
    size = None if is_test else _FILTER_SIZE.get(name)
    slow = name in _SLOW_FILTERS and not is_test
    comparing = is_test and name in _COMPARING_TESTS
    what = f"the '{name}' {'test' if is_test else 'filter'}"

    @pass_context
    def wrapper(context, value=None, *args, **kwargs):
        b = _tick()
        value = _iter_guard(value)
        args = tuple(_iter_guard(x) for x in args)
        if comparing:
            for x in (value, *args):
                _check(_text_size(x), f"a comparison in {what}")
        if slow and _text_size(value, SLOW_INPUT_CHARS) > SLOW_INPUT_CHARS:
            _refuse(f"{what} takes at most {SLOW_INPUT_CHARS:,} characters of input")
        if size is not None:
            units, value = size(value, args, kwargs)
            _check(units, f"the result of {what}")
        if pass_arg is _PassArg.context:
            r = f(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            r = f(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            r = f(context.environment, value, *args, **kwargs)
        else:
            r = f(value, *args, **kwargs)
        if b is not None:
            b.charge(_units(r), f"the result of {what}")
        return r

    wrapper.__name__ = f"dodai_{name}"
    return wrapper


# ---- compile ----------------------------------------------------------------------------------------------

def _compile(env, source: str):
    import jinja2

    if len(source) > MAX_SOURCE_CHARS:
        raise DodaiError(f"chat template is {len(source):,} characters long (limit {MAX_SOURCE_CHARS:,})")
    try:
        for i, _tok in enumerate(env.lexer.tokeniter(source, None)):
            if i >= MAX_TOKENS:
                raise DodaiError(f"chat template has more than {MAX_TOKENS:,} tokens")
        tree = env.parse(source)
        _check_tree(tree)
        _rewrite(tree)
        return env.from_string(tree)
    except DodaiError:
        raise
    except jinja2.TemplateError as e:
        raise DodaiError(f"chat template does not compile: {type(e).__name__}: {e}") from None
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as e:
        # CPython's own compiler limits (nested blocks, parentheses) on the generated module
        raise DodaiError(f"chat template is too complex to compile ({type(e).__name__})") from None


def _block_types():
    from jinja2 import nodes

    return (nodes.For, nodes.If, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.With, nodes.Block,
            nodes.AssignBlock, nodes.ScopedEvalContextModifier, nodes.Scope, nodes.OverlayScope)


def _check_tree(tree) -> None:
    """Node count, depth, block nesting and reserved names, walked without recursion."""
    from jinja2 import nodes

    blocks = _block_types()
    count = 0
    stack = [(tree, 0, 0)]
    while stack:
        node, depth, nest = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise DodaiError(f"chat template has more than {MAX_NODES:,} syntax nodes")
        if depth > MAX_DEPTH:
            raise DodaiError(f"chat template is nested more than {MAX_DEPTH} levels deep")
        if nest > MAX_BLOCK_NESTING:
            raise DodaiError(f"chat template nests more than {MAX_BLOCK_NESTING} blocks (for/if/macro/…)")
        names = []
        if isinstance(node, nodes.Name):
            names.append(node.name)
        elif isinstance(node, (nodes.Macro, nodes.Block)):
            names.append(node.name)
        elif isinstance(node, nodes.FromImport):
            names += [n if isinstance(n, str) else n[-1] for n in node.names]
        elif isinstance(node, nodes.Import):
            names.append(node.target)
        for name in names:
            if isinstance(name, str) and name.startswith(_RESERVED):
                raise DodaiError(f"chat template uses the reserved name {name!r}")
        elifs = node.elif_ if isinstance(node, nodes.If) else ()
        for child in node.iter_child_nodes():
            is_block = isinstance(child, blocks) and not any(child is e for e in elifs)
            stack.append((child, depth + 1, nest + (1 if is_block else 0)))


def _static_chars(body) -> int:
    from jinja2 import nodes

    total = 0
    for stmt in body:
        for data in stmt.find_all(nodes.TemplateData):
            total += len(data.data)
        if isinstance(stmt, nodes.TemplateData):
            total += len(stmt.data)
    return total


def _rewrite(tree) -> None:
    """Route the operations that bypass the environment through budgeted helpers (see module docstring)."""
    from jinja2 import nodes

    def call(name, args, lineno):
        return nodes.Call(nodes.Name(name, "load", lineno=lineno), list(args), [], None, None, lineno=lineno)

    def const(v, lineno):
        return nodes.Const(v, lineno=lineno)

    for node in list(tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock))):
        if isinstance(node, nodes.For):  # every item a for loop takes ticks the budget
            node.iter = call("dodai_iter", [node.iter], node.lineno)
        static = _static_chars(node.body)
        node.body.insert(0, nodes.ExprStmt(call("dodai_charge", [const(static, node.lineno)], node.lineno),
                                           lineno=node.lineno))
    # Concat (~) and slices, replaced in their parents' fields, children before parents
    order, stack = [], [tree]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.iter_child_nodes())
    for parent in reversed(order):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if isinstance(value, list):
                setattr(parent, field, [_rewrite_expr(v, call, const) for v in value])
            elif isinstance(value, nodes.Node):
                setattr(parent, field, _rewrite_expr(value, call, const))
    for cmp in list(tree.find_all(nodes.Compare)):
        cmp.expr = call("dodai_cmp", [cmp.expr], cmp.lineno)
        for op in cmp.ops:
            op.expr = call("dodai_cmp", [op.expr], op.lineno)


def _rewrite_expr(node, call, const):
    from jinja2 import nodes

    if isinstance(node, nodes.Concat):
        return call("dodai_concat", node.nodes, node.lineno)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        s = node.arg
        parts = [p if p is not None else const(None, node.lineno) for p in (s.start, s.stop, s.step)]
        return call("dodai_slice", [node.node, *parts], node.lineno)
    return node


# ---- the environment --------------------------------------------------------------------------------------

def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, list):
        raise DodaiError("chat messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DodaiError(f"chat message {i} is not a {{'role': str, 'content': str}} dict")
        out.append(dict(m))
    return out


def _binop_size(op: str, left, right) -> int:
    seqs = (str, bytes, list, tuple)
    if op == "+":
        if isinstance(left, (str, bytes)) and isinstance(right, (str, bytes)):
            return len(left) + len(right)
        if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
            return (len(left) + len(right)) * ITEM_UNITS
        return 0
    if op == "*":
        for seq, k in ((left, right), (right, left)):
            if isinstance(seq, seqs) and isinstance(k, int):
                return len(seq) * max(k, 0) * (1 if isinstance(seq, (str, bytes)) else ITEM_UNITS)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                _refuse(f"`*` would make an integer of about {bits:,} bits (limit {MAX_INT_BITS:,})")
            return bits // 8
        return 0
    if op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            bits = right * left.bit_length() if right < 2 ** 40 else 2 ** 60
            if bits > MAX_INT_BITS:
                _refuse(f"`**` would make an integer of about {bits:,} bits (limit {MAX_INT_BITS:,})")
            return bits // 8
        return 0
    if op == "%" and isinstance(left, (str, bytes)):
        return _percent_size(left, right)
    return 0


def _make_env():
    import jinja2.ext
    from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
    from jinja2.runtime import LoopContext, Macro
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
    from jinja2.utils import Namespace, generate_lorem_ipsum

    global _NAMESPACE, _CONTAINER_TYPES
    _NAMESPACE, _CONTAINER_TYPES = Namespace, (*_CONTAINERS, *_VIEWS, Namespace)
    internal: set[int] = set()  # ids of the helpers below

    class _Env(ImmutableSandboxedEnvironment):
        # every arithmetic operator goes through call_binop (and is never constant-folded at compile time)
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

        def call_binop(self, context, operator, left, right):
            b = _tick()
            _check(_binop_size(operator, left, right), f"the result of `{operator}`")
            r = super().call_binop(context, operator, left, right)
            if b is not None:
                b.charge(_units(r), f"the result of `{operator}`")
            return r

        def getattr(self, obj, attribute):
            _tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj, argument):
            _tick()
            return super().getitem(obj, argument)

        def wrap_str_format(self, value):
            sandboxed = super().wrap_str_format(value)
            if sandboxed is None:
                return None
            fmt, is_map = value.__self__, value.__name__ == "format_map"

            def checked_format(*args, **kwargs):
                if is_map:
                    mapping = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
                    _check(_format_size(fmt, (), mapping), "the result of str.format_map()")
                else:
                    _check(_format_size(fmt, args, kwargs), "the result of str.format()")
                return sandboxed(*args, **kwargs)

            return checked_format

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
            b = _tick()
            if len(args) + len(kwargs) > MAX_CALL_ARGS:
                _refuse(f"a call with {len(args) + len(kwargs):,} arguments (limit {MAX_CALL_ARGS:,})")
            if id(__obj) in internal:  # Jinja adds these for context-aware callables only
                kwargs.pop("_loop_vars", None)
                kwargs.pop("_block_vars", None)
                return __obj(*args, **kwargs)
            owner = getattr(__obj, "__self__", None)
            if isinstance(__obj, (types.BuiltinMethodType, types.MethodType)) and isinstance(owner, (str, bytes)):
                name = __obj.__name__
                if name == "join" and args:
                    items = _materialize(args[0], "a join")
                    args = (items, *args[1:])
                    _check(sum(_text_size(x) for x in items) + max(len(items) - 1, 0) * len(owner),
                           "the result of str.join()")
                else:
                    _check(_str_method_size(owner, name, args, kwargs), f"the result of str.{name}()")
            elif isinstance(owner, (*_CONTAINERS, type)):  # list/dict/set methods, dict.fromkeys(range(…)), …
                sized = (len(x) for x in (owner, *args, *kwargs.values())
                         if isinstance(x, (str, bytes, range, *_CONTAINERS)))
                _check(sum(sized) * ITEM_UNITS, f"the result of {getattr(__obj, '__qualname__', 'a method')}()")
            args = tuple(_iter_guard(x) for x in args)
            if b is None:
                return super().call(__context, __obj, *args, **kwargs)
            b.depth += 1
            try:
                if b.depth > MAX_CALL_DEPTH:
                    kind = "macro" if isinstance(__obj, Macro) else "loop()" if isinstance(__obj, LoopContext) \
                        else "call"
                    b.fail(f"chat template nests {kind} calls more than {MAX_CALL_DEPTH} deep")
                r = super().call(__context, __obj, *args, **kwargs)
            finally:
                b.depth -= 1
            b.charge(_units(r), "a call result")
            return r

    def finalize(value):
        b = _budget()
        if b is not None:  # None: Jinja folding a constant at compile time (bounded by the source)
            b.charge(_text_size(value), "an output piece")
        return value

    env = _Env(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], autoescape=False,
               finalize=finalize)

    def raise_exception(message):
        raise _TemplateRaised(str(message))

    def bounded_range(*args):
        try:
            r = range(*args)
        except TypeError as e:
            raise SecurityError(f"bad range(): {e}") from None
        if len(r) > MAX_ITERATIONS:
            raise SecurityError(f"range of {len(r):,} items is too long (limit {MAX_ITERATIONS:,})")
        return r

    def lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 (jinja's own parameter names)
        _check(_as_int(n) * builtins.max(_as_int(min), _as_int(max)) * 16, "lipsum()")
        return generate_lorem_ipsum(n, html, min, max)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # HF's override: no HTML escaping (templates emit JSON for tool schemas, not for web pages)
        size, depth = _walk(x)  # JSON escapes no more than repr does, apart from ensure_ascii on astral chars
        pad = len(indent) if isinstance(indent, str) else _as_int(indent) if indent is not None else 0
        seps = sum(len(s) for s in separators if isinstance(s, str)) if isinstance(separators, (tuple, list)) else 2
        _check(size + (size // 2 + 1) * (depth * pad + seps), "the result of tojson")
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        _check(16 * len(str(fmt)) + 64, "strftime_now()")
        return time.strftime(fmt)

    # -- helpers the rewritten tree calls (reserved names: templates cannot name them) --
    def dodai_iter(it):
        return _budget_iter(it)

    def dodai_charge(units):
        b = _budget()
        if b is not None and isinstance(units, int) and units >= 0:
            b.charge(units, "a loop or macro body")

    def dodai_concat(*parts):
        _check(sum(_text_size(p) for p in parts), "the result of `~`")
        r = "".join(map(str, parts))
        b = _budget()
        if b is not None:
            b.charge(len(r), "the result of `~`")
        return r

    def dodai_slice(obj, start=None, stop=None, step=None):
        s = slice(start, stop, step)
        if isinstance(obj, (str, bytes, list, tuple)):
            n = len(range(*s.indices(len(obj))))
            _check(n if isinstance(obj, (str, bytes)) else n * ITEM_UNITS, "a slice")
        r = obj[s]
        b = _budget()
        if b is not None:
            b.charge(_units(r), "a slice")
        return r

    def dodai_cmp(x):
        _check(_text_size(x), "a comparison operand")  # comparing costs up to the operands' size
        return x

    internal.update(map(id, (dodai_iter, dodai_charge, dodai_concat, dodai_slice, dodai_cmp)))
    filters = {**DEFAULT_FILTERS, "tojson": tojson}
    env.filters = {name: _wrap_filter(name, f) for name, f in filters.items()}
    env.tests = {name: _wrap_filter(name, f, is_test=True) for name, f in DEFAULT_TESTS.items()}
    env.globals.update(raise_exception=raise_exception, range=bounded_range, strftime_now=strftime_now,
                       lipsum=lipsum, dodai_iter=dodai_iter, dodai_charge=dodai_charge, dodai_concat=dodai_concat,
                       dodai_slice=dodai_slice, dodai_cmp=dodai_cmp)
    return env
