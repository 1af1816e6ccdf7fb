"""Constrained decoding (R7.2): the output must match a regular expression or a JSON schema.

A regex is compiled to a Thompson NFA (Thompson 1968), determinised lazily (subset construction on
demand, one DFA state per reachable set of NFA states). The token-level automaton over the
tokenizer's vocabulary then follows the idea of Willard & Louf 2023 ("Efficient Guided Generation
for Large Language Models", the Outlines paper): in DFA state s, token t is allowed iff walking the
characters of t's text from s never reaches the dead state. The vocabulary is stored as a character
trie, so one depth-first walk from s visits each live prefix once; the allowed-token mask of a state
is computed the first time that state is reached and cached. EOS is allowed exactly in accepting states
(and is the only choice when no character can follow).

Supported regex syntax (full-match semantics, a subset of Python's ``re`` with the same meaning):
literals, ``\\xHH``, ``.`` (any character but newline), classes ``[a-z0-9_]`` / ``[^"\\\\]``, escapes ``\\d \\w \\s``
(ASCII, as ``re.ASCII``), ``\\D \\W \\S``, escaped metacharacters, groups ``( )`` and ``(?: )``, ``|``, ``* + ?`` and
``{m}``, ``{m,}``, ``{m,n}``. Anchors, backreferences and lookarounds are refused with a DodaiError.

:func:`json_schema_regex` turns a JSON schema (object / array / string / integer / number / boolean /
null / enum / const) into such a regex for *compact* JSON (no whitespace), object properties in the
schema's order and all present. Strings are capped at ``maxLength`` (default 32) and arrays at
``maxItems`` (default 8), so the language is finite and generation always ends.

Conventions: tokens whose text is not valid UTF-8 on its own (byte-level BPE pieces of a multi-byte
character decode to U+FFFD) and special tokens are never allowed — a simplification that loses only
non-ASCII paths through multi-token characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dodai.errors import DodaiError
from dodai.generate.processors import LogitsPipeline

MAX_NFA_STATES = 200_000  # {m,n} copies fragments: refuse patterns that would blow up
MAX_REPEAT = 1000

# ---- regex → NFA ---------------------------------------------------------------------------------

Pred = Callable[[str], bool]


def _class_pred(items: list, negated: bool) -> Pred:
    def pred(c: str) -> bool:
        hit = any(it(c) if callable(it) else it[0] <= c <= it[1] for it in items)
        return hit != negated
    return pred


_ESC_CLASS: dict[str, Pred] = {
    "d": lambda c: "0" <= c <= "9",
    "w": lambda c: c == "_" or "0" <= c <= "9" or "a" <= c <= "z" or "A" <= c <= "Z",
    "s": lambda c: c in " \t\n\r\f\v",
}
_ESC_CHAR = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}


class _NFA:
    """States 0..n-1; ``eps[s]`` ε-edges, ``edge[s]`` an optional (predicate, target)."""

    def __init__(self):
        self.eps: list[list[int]] = []
        self.edge: list[tuple[Pred, int] | None] = []

    def new(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise DodaiError(f"the pattern is too large (over {MAX_NFA_STATES} automaton states)")
        self.eps.append([])
        self.edge.append(None)
        return len(self.eps) - 1


class _Parser:
    """Recursive descent over the pattern; each rule returns an NFA fragment (start, end)."""

    def __init__(self, pattern: str, nfa: _NFA):
        self.p, self.i, self.nfa = pattern, 0, nfa

    def error(self, msg: str) -> DodaiError:
        return DodaiError(f"regex {self.p!r}: {msg} at position {self.i}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> tuple[int, int]:
        frag = self.alt()
        if self.i != len(self.p):
            raise self.error("unbalanced ')'")
        return frag

    def alt(self) -> tuple[int, int]:
        frags = [self.cat()]
        while self.peek() == "|":
            self.i += 1
            frags.append(self.cat())
        if len(frags) == 1:
            return frags[0]
        s, e = self.nfa.new(), self.nfa.new()
        for a, b in frags:
            self.nfa.eps[s].append(a)
            self.nfa.eps[b].append(e)
        return s, e

    def cat(self) -> tuple[int, int]:
        s = e = self.nfa.new()
        while self.peek() is not None and self.peek() not in "|)":
            a, b = self.repeat()
            self.nfa.eps[e].append(a)
            e = b
        return s, e

    def repeat(self) -> tuple[int, int]:
        start = self.i
        frag = self.atom()
        atom_src = self.p[start:self.i]
        while self.peek() is not None and self.peek() in "*+?{":
            c = self.peek()
            if c == "{":
                m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.p, self.i)
                if not m:
                    raise self.error("bad {m,n} repetition")
                self.i = m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if (hi is not None and hi < lo) or max(lo, hi or 0) > MAX_REPEAT:
                    raise self.error(f"repetition {{{lo},{hi}}} is out of range (at most {MAX_REPEAT})")
            else:
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            if self.peek() in ("?", "+"):
                raise self.error("lazy/possessive quantifiers are not supported")
            frag = self._repeat(frag, atom_src, lo, hi)
            atom_src = self.p[start:self.i]
        return frag

    def _copy(self, src: str) -> tuple[int, int]:
        return _Parser(src, self.nfa).parse()

    def _repeat(self, frag, src, lo, hi):
        nfa = self.nfa
        pieces = [frag] + [self._copy(src) for _ in range(max(lo, 1) - 1)]
        s = e = nfa.new()
        for a, b in pieces[:lo]:
            nfa.eps[e].append(a)
            e = b
        if hi is None:  # the last copy loops (x+ = x x*; x* = (x)* with an ε bypass)
            a, b = pieces[-1] if lo >= 1 else pieces[0]
            if lo == 0:
                nfa.eps[e].append(a)
                nfa.eps[b].append(e)
            else:
                nfa.eps[b].append(a)
            return s, e
        end = nfa.new()
        nfa.eps[e].append(end)
        for n in range(hi - lo):  # optional copies, each may be skipped to the end
            a, b = pieces[lo] if (lo == 0 and n == 0) else self._copy(src)
            nfa.eps[e].append(a)
            nfa.eps[b].append(end)
            e = b
        return s, end

    def _char(self, pred: Pred) -> tuple[int, int]:
        s, e = self.nfa.new(), self.nfa.new()
        self.nfa.edge[s] = (pred, e)
        return s, e

    def atom(self) -> tuple[int, int]:
        c = self.peek()
        if c == "(":
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.error("lookarounds and named groups are not supported")
            frag = self.alt()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.i += 1
            return frag
        if c == "[":
            return self._char(self.char_class())
        if c == ".":
            self.i += 1
            return self._char(lambda ch: ch != "\n")
        if c == "\\":
            return self._char(self.escape(in_class=False))
        if c in "*+?{":
            raise self.error("nothing to repeat")
        if c in "^$":
            raise self.error("anchors are not supported (the whole output must match)")
        self.i += 1
        return self._char(lambda ch, c=c: ch == c)

    def escape(self, in_class: bool):
        self.i += 1
        c = self.peek()
        if c is None:
            raise self.error("dangling backslash")
        self.i += 1
        if c in _ESC_CLASS:
            return _ESC_CLASS[c]
        if c in "DWS":
            base = _ESC_CLASS[c.lower()]
            return lambda ch: not base(ch)
        if c in _ESC_CHAR or c == "x":
            if c == "x":  # \xHH
                hexd = self.p[self.i:self.i + 2]
                if len(hexd) != 2 or any(h not in "0123456789abcdefABCDEF" for h in hexd):
                    raise self.error("\\x needs two hex digits")
                self.i += 2
                ch = chr(int(hexd, 16))
            else:
                ch = _ESC_CHAR[c]
            return ch if in_class else (lambda x, ch=ch: x == ch)
        if c.isalnum():
            raise self.error(f"unsupported escape \\{c}")
        return c if in_class else (lambda x, c=c: x == c)

    def char_class(self) -> Pred:
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        items: list = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.error("missing ']'")
            if c == "]" and not first:
                self.i += 1
                return _class_pred(items, negated)
            first = False
            if c == "\\":
                lo = self.escape(in_class=True)
            else:
                self.i += 1
                lo = c
            if callable(lo):
                items.append(lo)
                continue
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                if self.peek() == "\\":
                    hi = self.escape(in_class=True)
                else:
                    hi = self.p[self.i]
                    self.i += 1
                if callable(hi) or hi < lo:
                    raise self.error("bad character range")
                items.append((lo, hi))
            else:
                items.append((lo, lo))


# ---- lazy DFA ------------------------------------------------------------------------------------

class RegexDFA:
    """A lazily determinised automaton for ``pattern`` (full match). State 0 is the start; -1 is dead."""

    DEAD = -1

    def __init__(self, pattern: str):
        if not isinstance(pattern, str):
            raise DodaiError("the pattern must be a string")
        self.pattern = pattern
        self.nfa = _NFA()
        self._start, self._accept = _Parser(pattern, self.nfa).parse()
        self._sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self._next: dict[tuple[int, str], int] = {}
        self._state(self._closure({self._start}))

    def _closure(self, states) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for t in self.nfa.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    def _state(self, s: frozenset[int]) -> int:
        if not s:
            return self.DEAD
        if s not in self._ids:
            self._ids[s] = len(self._sets)
            self._sets.append(s)
        return self._ids[s]

    def step(self, state: int, ch: str) -> int:
        if state == self.DEAD:
            return self.DEAD
        key = (state, ch)
        nxt = self._next.get(key)
        if nxt is None:
            targets = set()
            for s in self._sets[state]:
                e = self.nfa.edge[s]
                if e is not None and e[0](ch):
                    targets.add(e[1])
            nxt = self._state(self._closure(targets))
            self._next[key] = nxt
        return nxt

    def walk(self, text: str, state: int = 0) -> int:
        for ch in text:
            state = self.step(state, ch)
            if state == self.DEAD:
                break
        return state

    def accepting(self, state: int) -> bool:
        return state != self.DEAD and self._accept in self._sets[state]

    def fullmatch(self, text: str) -> bool:
        return self.accepting(self.walk(text))


# ---- token-level automaton -----------------------------------------------------------------------

class _Trie:
    __slots__ = ("kids", "tokens")

    def __init__(self):
        self.kids: dict[str, _Trie] = {}
        self.tokens: list[int] = []


class TokenConstraint:
    """Which tokens may come next, for a regex and a tokenizer (``decode(list[int]) -> str``)."""

    def __init__(self, pattern: str, tokenizer, vocab_size: int | None = None):
        self.dfa = RegexDFA(pattern)
        n_tok = int(tokenizer.vocab_size)
        self.vocab_size = max(vocab_size or n_tok, n_tok)
        specials = set((getattr(tokenizer, "special_tokens", None) or {}).values())
        self.eos_id = getattr(tokenizer, "eos_id", None)
        self.strings: dict[int, str] = {}
        self.trie = _Trie()
        for t in range(n_tok):
            if t in specials:
                continue
            s = tokenizer.decode([t])
            if not s or "\ufffd" in s:  # an incomplete UTF-8 piece or an empty token: never allowed
                continue
            self.strings[t] = s
            node = self.trie
            for ch in s:
                node = node.kids.setdefault(ch, _Trie())
            node.tokens.append(t)
        self._masks: dict[int, torch.Tensor] = {}
        self._after: dict[tuple[int, int], int] = {}

    def allowed(self, state: int) -> torch.Tensor:
        """Bool mask (vocab_size,) of the tokens allowed in DFA ``state`` (EOS iff accepting)."""
        m = self._masks.get(state)
        if m is not None:
            return m
        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        if state != RegexDFA.DEAD:
            ids: list[int] = []
            stack = [(self.trie, state)]
            while stack:  # depth-first over the trie, pruned at the dead state
                node, s = stack.pop()
                for ch, kid in node.kids.items():
                    t = self.dfa.step(s, ch)
                    if t != RegexDFA.DEAD:
                        ids.extend(kid.tokens)
                        stack.append((kid, t))
            if ids:
                m[torch.tensor(ids)] = True
        if self.eos_id is not None and (self.dfa.accepting(state) or not m.any()):
            m[self.eos_id] = True  # EOS ends an accepted output (or is the only way out of a dead end)
        self._masks[state] = m
        return m

    def state_after(self, ids: list[int]) -> int:
        """The DFA state after the generated tokens ``ids`` (dead if any is not allowed)."""
        s = 0
        for t in ids:
            if s == RegexDFA.DEAD:
                return s
            key = (s, t)
            nxt = self._after.get(key)
            if nxt is None:
                text = self.strings.get(t)
                nxt = RegexDFA.DEAD if text is None else self.dfa.walk(text, s)
                self._after[key] = nxt
            s = nxt
        return s


@dataclass
class ConstrainedPipeline(LogitsPipeline):
    """A :class:`LogitsPipeline` whose penalties stage also masks the tokens the constraint forbids,
    before any warper (so top-k / top-p choose among allowed tokens only)."""

    constraint: TokenConstraint | None = field(default=None)

    @property
    def reads_ids(self) -> bool:
        return self.constraint is not None or super().reads_ids

    @property
    def is_plain_greedy(self) -> bool:
        return self.constraint is None and super().is_plain_greedy

    def process(self, input_ids: torch.Tensor, logits: torch.Tensor, n_prompt: int | None = None) -> torch.Tensor:
        logits = super().process(input_ids, logits, n_prompt)
        if self.constraint is None:
            return logits
        masks = []
        for row in input_ids[:, (n_prompt or 0):].tolist():
            masks.append(self.constraint.allowed(self.constraint.state_after(row)))
        allowed = torch.stack(masks).to(logits.device)  # (B, V_tok)
        V = logits.shape[-1]
        if allowed.shape[1] < V:  # model rows beyond the tokenizer's vocabulary: never allowed
            allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], V - allowed.shape[1])], 1)
        return logits.masked_fill(~allowed[:, :V], float("-inf"))


def generate_constrained(model, tokenizer, prompt_ids, pattern: str, max_new_tokens: int = 128,
                         temperature: float = 0.0, seed: int | None = None, **knobs) -> str:
    """Generate text that matches ``pattern`` (a full match once EOS is produced); returns the text."""
    from dodai.generate.engine import complete

    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    pipe = ConstrainedPipeline(temperature=temperature, constraint=TokenConstraint(pattern, tokenizer, vocab),
                               **knobs)
    eos = getattr(tokenizer, "eos_id", None)
    if eos is None:
        raise DodaiError("constrained decoding needs a tokenizer with an EOS token (to end a matched output)")
    out = complete(model, prompt_ids, max_new_tokens, pipe, seed=seed, eos_id=eos, tokenizer=tokenizer)[0]
    return out.text


# ---- JSON schema → regex -------------------------------------------------------------------------

_STR_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])'
_META = set(r".^$*+?{}[]\|()")


def _esc(s: str) -> str:
    return "".join("\\" + c if c in _META else c for c in s)


def json_schema_regex(schema: dict, _depth: int = 0) -> str:
    """A regex (in the syntax above) for compact JSON documents valid under ``schema``."""
    if _depth > 16:
        raise DodaiError("JSON schema nests too deeply (more than 16 levels)")
    if not isinstance(schema, dict):
        raise DodaiError(f"a JSON schema must be an object, got {type(schema).__name__}")
    if "const" in schema:
        return _esc(json.dumps(schema["const"], separators=(",", ":"), ensure_ascii=False))
    if "enum" in schema:
        vals = schema["enum"]
        if not isinstance(vals, list) or not vals:
            raise DodaiError("JSON schema 'enum' must be a non-empty list")
        return "(?:" + "|".join(_esc(json.dumps(v, separators=(",", ":"), ensure_ascii=False)) for v in vals) + ")"
    t = schema.get("type")
    if t == "string":
        lo, hi = int(schema.get("minLength", 0)), int(schema.get("maxLength", 32))
        if not 0 <= lo <= hi <= MAX_REPEAT:
            raise DodaiError(f"string length bounds [{lo}, {hi}] out of range (at most {MAX_REPEAT})")
        return f'"{_STR_CHAR}{{{lo},{hi}}}"'
    if t == "integer":
        return r"-?(?:0|[1-9][0-9]{0,15})"
    if t == "number":
        return r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,8})?"
    if t == "boolean":
        return "(?:true|false)"
    if t == "null":
        return "null"
    if t == "array":
        item = json_schema_regex(schema.get("items", {"type": "string"}), _depth + 1)
        lo, hi = int(schema.get("minItems", 0)), int(schema.get("maxItems", 8))
        if not 0 <= lo <= hi <= 64:
            raise DodaiError(f"array item bounds [{lo}, {hi}] out of range (at most 64)")
        if hi == 0:
            return r"\[\]"
        body = f"{item}(?:,{item}){{{max(lo - 1, 0)},{hi - 1}}}"
        return rf"\[{body}\]" if lo >= 1 else rf"\[(?:{body})?\]"
    if t == "object":
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise DodaiError("JSON schema 'properties' must be an object")
        parts = [_esc(json.dumps(k, ensure_ascii=False)) + ":" + json_schema_regex(v, _depth + 1)
                 for k, v in props.items()]
        return r"\{" + ",".join(parts) + r"\}"
    raise DodaiError(f"unsupported JSON schema type {t!r} (object, array, string, integer, number, boolean, "
                     "null, enum, const)")


def json_value_regex(depth: int = 3) -> str:
    """A regex for any compact JSON value nested at most ``depth`` levels of objects/arrays (OpenAI's
    ``response_format={"type": "json_object"}`` wants an object: see :func:`json_object_regex`). Strings and
    numbers are unbounded here; the token budget ends a runaway value."""
    string = f'"{_STR_CHAR}*"'
    scalar = rf"(?:{string}|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)"
    value = scalar
    for _ in range(max(depth, 0)):
        obj = rf"\{{(?:{string}:{value}(?:,{string}:{value})*)?\}}"
        arr = rf"\[(?:{value}(?:,{value})*)?\]"
        value = f"(?:{scalar}|{obj}|{arr})"
    return value


def json_object_regex(depth: int = 3) -> str:
    """A regex for a compact JSON *object* whose values nest at most ``depth - 1`` further levels."""
    if depth < 1:
        raise DodaiError("a JSON object needs depth >= 1")
    string = f'"{_STR_CHAR}*"'
    value = json_value_regex(depth - 1)
    return rf"\{{(?:{string}:{value}(?:,{string}:{value})*)?\}}"


def validate_json(value, schema: dict) -> bool:
    """A small checker for the schema subset above (used by tests and the experiment as the oracle)."""
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return value in schema["enum"]
    t = schema.get("type")
    if t == "string":
        return isinstance(value, str) and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 32)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if t == "array":
        return (isinstance(value, list) and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 8)
                and all(validate_json(v, schema.get("items", {"type": "string"})) for v in value))
    if t == "object":
        props = schema.get("properties", {})
        return (isinstance(value, dict) and list(value) == list(props)
                and all(validate_json(value[k], s) for k, s in props.items()))
    return False
