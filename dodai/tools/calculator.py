"""A calculator tool: exact arithmetic over a whitelisted Python-expression AST, never ``eval``.

The expression is parsed with :func:`ast.parse` (``mode="eval"``) and walked by :func:`evaluate`,
which accepts only these nodes:

- numbers: ``int`` literals, and decimal literals (``0.1``, ``2.5e-3``), which are read *exactly*
  from their source text as :class:`fractions.Fraction` (so ``0.1 + 0.2 == 3/10``, not
  ``0.30000000000000004``);
- the binary operators ``+ - * / // % **`` and unary ``+ -``, with parentheses;
- the names ``pi``, ``e``, ``tau`` and ``inf``-free calls to a small table of functions (:data:`FUNCTIONS`).

Values are ``int`` or ``Fraction`` (exact) until an irrational operation (``sqrt(2)``, ``log``,
``sin``, a fractional power, the constants) makes them ``float``; once a float enters, the result is
a float, as on a pocket calculator. ``/`` on exact values is exact division (``1/3`` stays ``1/3``).

Bounds (each one a :class:`ToolError`, never a hang or a memory blow-up), all checked *before* the work
they bound is done:

- the expression length (:data:`MAX_CHARS`) and the parenthesis/call nesting depth (:data:`MAX_DEPTH`,
  before parsing, since CPython's parser itself recurses);
- the number of operations (:data:`MAX_NODES` syntax nodes, counted on the parsed tree before evaluating),
  so the total work is at most that many operations on bounded numbers;
- the size of every exact value (:data:`MAX_BITS` for numerator and denominator): decimal literals are
  read from their digits and exponent, so ``1e-99999999`` is refused without building 10**99999999 (which
  :class:`fractions.Fraction` would do); a power, product, factorial, comb or perm is refused from its
  size estimate before it is computed (``9**9**9``, ``10**10**10``, ``factorial(10**6)``);
- a wall clock (:data:`MAX_SECONDS`), checked at every node: a backstop, since each single operation is
  already bounded by the sizes above;
- float overflow / NaN. Division by zero, complex results and domain errors are refused with a one-line
  message.
"""

from __future__ import annotations

import ast
import math
import re
import time
from fractions import Fraction

from dodai.tools.base import Tool, ToolError

MAX_CHARS = 500  # longest expression accepted
MAX_DEPTH = 40  # deepest nesting of brackets
MAX_DIGITS = 3000  # largest exact result, in decimal digits (Python's own str(int) limit is 4300)
MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1  # the same bound in bits, checked on every exact value
MAX_NODES = 600  # syntax nodes of one expression (MAX_CHARS already keeps it near this)
MAX_SECONDS = 1.0  # wall clock for one evaluation

Number = int | Fraction | float


def _bits(x: Number) -> int:
    if isinstance(x, int):
        return x.bit_length()
    if isinstance(x, Fraction):
        return max(x.numerator.bit_length(), x.denominator.bit_length())
    return 0


def _check(x: Number) -> Number:
    """Normalise (Fraction with denominator 1 → int) and enforce the size and finiteness bounds."""
    if isinstance(x, bool):  # bool is an int subclass; no boolean arithmetic here
        raise ToolError("calculator: booleans are not numbers here")
    if isinstance(x, complex):
        raise ToolError("calculator: the result is a complex number")
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            raise ToolError("calculator: the result is not a finite number (overflow or undefined)")
        return x
    if _bits(x) > MAX_BITS:
        raise ToolError(f"calculator: a value has more than {MAX_DIGITS} digits")
    if isinstance(x, Fraction) and x.denominator == 1:
        return x.numerator
    return x


def _exact(x: Number) -> bool:
    return isinstance(x, (int, Fraction))


def _to_float(x: Number) -> float:
    try:
        return float(x)
    except OverflowError:
        raise ToolError("calculator: a value is too large for floating point") from None


def _int_arg(x: Number, what: str, lo: int = 0, hi: int | None = None) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise ToolError(f"calculator: {what} needs an integer, got {x!r}")
        x = int(x)
    if isinstance(x, Fraction):
        if x.denominator != 1:
            raise ToolError(f"calculator: {what} needs an integer, got {x}")
        x = x.numerator
    if x < lo or (hi is not None and x > hi):
        raise ToolError(f"calculator: {what} needs an integer in [{lo}, {hi if hi is not None else '∞'}], got {x}")
    return x


# ---- operations ---------------------------------------------------------------------------------
def _pow(a: Number, b: Number) -> Number:
    if _exact(a) and _exact(b) and Fraction(b).denominator == 1:
        n = int(b)
        if a == 0 and n < 0:
            raise ToolError("calculator: division by zero (0 to a negative power)")
        if a in (0, 1) or n == 0:
            return Fraction(a) ** n
        if a == -1:
            return 1 if n % 2 == 0 else -1
        # |a**n| has about |n| * bits(a) bits: refuse before computing it (9**9**9 would take forever).
        if abs(n) * max(_bits(a) - 1, 1) > MAX_BITS:
            raise ToolError(f"calculator: the power has more than {MAX_DIGITS} digits")
        return Fraction(a) ** n
    fa, fb = _to_float(a), _to_float(b)
    if fa < 0 and not fb.is_integer():
        raise ToolError("calculator: a negative number to a fractional power is complex")
    if fa == 0 and fb < 0:
        raise ToolError("calculator: division by zero (0 to a negative power)")
    try:
        return math.pow(fa, fb)
    except OverflowError:
        raise ToolError("calculator: the power overflows floating point") from None


def _div(a: Number, b: Number, op: str) -> Number:
    if b == 0:
        raise ToolError("calculator: division by zero")
    if _exact(a) and _exact(b):
        a, b = Fraction(a), Fraction(b)
    return {"/": lambda: a / b, "//": lambda: a // b, "%": lambda: a % b}[op]()


def _binop(op: ast.operator, a: Number, b: Number) -> Number:
    if isinstance(op, ast.Pow):
        return _pow(a, b)
    if isinstance(op, ast.Div):
        return _div(a, b, "/")
    if isinstance(op, ast.FloorDiv):
        return _div(a, b, "//")
    if isinstance(op, ast.Mod):
        return _div(a, b, "%")
    if isinstance(op, ast.Mult) and _exact(a) and _exact(b) and _bits(a) + _bits(b) > MAX_BITS + 1:
        raise ToolError(f"calculator: a product has more than {MAX_DIGITS} digits")
    f = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b}.get(type(op))
    if f is None:
        raise ToolError(f"calculator: operator {type(op).__name__} is not allowed")
    return f()


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise ToolError("calculator: square root of a negative number")
    if _exact(x):  # exact when numerator and denominator are perfect squares
        x = Fraction(x)
        rn, rd = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if rn * rn == x.numerator and rd * rd == x.denominator:
            return Fraction(rn, rd)
    return math.sqrt(_to_float(x))


def _factorial(x: Number) -> int:
    n = _int_arg(x, "factorial", 0)
    if math.lgamma(n + 1) / math.log(10) > MAX_DIGITS:  # log10(n!) before computing it
        raise ToolError(f"calculator: factorial({n}) has more than {MAX_DIGITS} digits")
    return math.factorial(n)


def _comb_perm(f, name):
    def g(n: Number, k: Number) -> int:
        n, k = _int_arg(n, name, 0, 100_000), _int_arg(k, name, 0, 100_000)
        if k <= n:  # the natural log of the result, from log-gamma, before computing it
            ln = math.lgamma(n + 1) - math.lgamma(n - k + 1) - (math.lgamma(k + 1) if name == "comb" else 0.0)
            if ln > MAX_DIGITS * math.log(10):
                raise ToolError(f"calculator: {name}({n}, {k}) has more than {MAX_DIGITS} digits")
        return f(n, k)
    return g


def _float_fn(f, name):
    def g(*xs: Number) -> float:
        try:
            return f(*(_to_float(x) for x in xs))
        except (ValueError, OverflowError):
            raise ToolError(f"calculator: {name} is undefined or overflows for these arguments") from None
    return g


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise ToolError("calculator: log needs a positive argument (and a positive base ≠ 1)")
    # math.log takes ints of any size exactly; Fractions as the difference of two int logs.
    def ln(v):
        if isinstance(v, Fraction):
            return math.log(v.numerator) - math.log(v.denominator)
        return math.log(v)
    return ln(x) if base is None else ln(x) / ln(base)


def _round(x: Number, nd: Number | None = None) -> Number:
    if nd is None:
        return round(x)  # Fraction and float round half to even, as Python does
    return round(x, _int_arg(nd, "round digits", -MAX_DIGITS, MAX_DIGITS))


def _minmax(f):
    def g(*xs: Number) -> Number:
        if not xs:
            raise ToolError("calculator: min/max need at least one argument")
        return f(xs)
    return g


def _gcd_lcm(f, name):
    def g(*xs: Number) -> int:
        return f(*(_int_arg(x, name, -(2 ** MAX_BITS), 2 ** MAX_BITS) for x in xs))
    return g


# name -> (function, min args, max args)
FUNCTIONS = {
    "sqrt": (_sqrt, 1, 1), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1), "trunc": (math.trunc, 1, 1),
    "factorial": (_factorial, 1, 1), "comb": (_comb_perm(math.comb, "comb"), 2, 2),
    "perm": (_comb_perm(math.perm, "perm"), 2, 2), "gcd": (_gcd_lcm(math.gcd, "gcd"), 1, 8),
    "lcm": (_gcd_lcm(math.lcm, "lcm"), 1, 8), "min": (_minmax(min), 1, 16), "max": (_minmax(max), 1, 16),
    "log": (_log, 1, 2), "ln": (_log, 1, 1), "log10": (lambda x: _log(x, 10), 1, 1),
    "log2": (lambda x: _log(x, 2), 1, 1), "exp": (_float_fn(math.exp, "exp"), 1, 1),
    "sin": (_float_fn(math.sin, "sin"), 1, 1), "cos": (_float_fn(math.cos, "cos"), 1, 1),
    "tan": (_float_fn(math.tan, "tan"), 1, 1), "asin": (_float_fn(math.asin, "asin"), 1, 1),
    "acos": (_float_fn(math.acos, "acos"), 1, 1), "atan": (_float_fn(math.atan, "atan"), 1, 1),
    "atan2": (_float_fn(math.atan2, "atan2"), 2, 2), "hypot": (_float_fn(math.hypot, "hypot"), 1, 8),
    "degrees": (_float_fn(math.degrees, "degrees"), 1, 1), "radians": (_float_fn(math.radians, "radians"), 1, 1),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


# ---- the walker ---------------------------------------------------------------------------------
def _nesting(expr: str) -> int:
    depth = best = 0
    for ch in expr:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth -= 1
    return best


_DECIMAL = re.compile(r"(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "…"


def _decimal(text: str) -> Number | None:
    """A decimal literal's exact value from its digits and exponent, refusing (before building it) a value
    whose numerator or denominator would exceed MAX_DIGITS digits; None if ``text`` is not decimal."""
    m = _DECIMAL.fullmatch(text.replace("_", ""))
    if m is None or not (m.group(1) or m.group(2)):
        return None
    whole, frac, exp = m.group(1) or "", m.group(2) or "", m.group(3)
    digits = (whole + frac).lstrip("0")
    if not digits:
        return 0
    e = (int(exp) if exp is not None and len(exp) <= 12 else 0) - len(frac)
    if exp is not None and len(exp) > 12:  # an exponent of more than 12 digits
        e = 10 ** 12 if not exp.startswith("-") else -(10 ** 12)
    mantissa = int(digits)
    if e >= 0:
        if len(digits) + e > MAX_DIGITS:
            raise ToolError(f"calculator: the literal {_short(text)} has more than {MAX_DIGITS} digits")
        return mantissa * 10 ** e
    if -e > MAX_DIGITS + len(digits):  # the reduced denominator still has more than MAX_DIGITS digits
        raise ToolError(f"calculator: the literal {_short(text)} has more than {MAX_DIGITS} digits after the point")
    return Fraction(mantissa, 10 ** -e)


def _literal(node: ast.Constant, source: str) -> Number:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ToolError(f"calculator: only numbers are allowed, not {type(v).__name__} literals")
    if isinstance(v, int):
        return v
    text = ast.get_source_segment(source, node) or repr(v)
    exact = _decimal(text)  # the decimal literal exactly as written: 0.1 is 1/10, not the nearest binary float
    if exact is not None:
        return exact
    if math.isinf(v) or math.isnan(v):
        raise ToolError("calculator: a literal is too large")
    return Fraction(v)


def _eval(node: ast.AST, source: str, deadline: float = math.inf) -> Number:
    if time.monotonic() > deadline:
        raise ToolError(f"calculator: took longer than {MAX_SECONDS:g} s")
    if isinstance(node, ast.Expression):
        return _eval(node.body, source, deadline)
    if isinstance(node, ast.Constant):
        return _check(_literal(node, source))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand, source, deadline)
        return _check(-v if isinstance(node.op, ast.USub) else +v)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, source, deadline), _eval(node.right, source, deadline)
        return _check(_binop(node.op, a, b))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"calculator: unknown name {node.id!r} (constants: {', '.join(CONSTANTS)})")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ToolError("calculator: calling an expression is not allowed (only named functions)")
        if node.func.id not in FUNCTIONS:
            raise ToolError(f"calculator: unknown function {node.func.id!r} (known: {', '.join(sorted(FUNCTIONS))})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ToolError("calculator: functions take plain positional arguments only")
        f, lo, hi = FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise ToolError(f"calculator: {node.func.id} takes {lo}" + (f" to {hi}" if hi > lo else "")
                            + f" argument(s), got {len(node.args)}")
        args = [_eval(a, source, deadline) for a in node.args]
        try:
            return _check(f(*args))
        except ToolError:
            raise
        except (ValueError, OverflowError, ZeroDivisionError, TypeError) as e:
            raise ToolError(f"calculator: {node.func.id}: {e}") from None
    raise ToolError(f"calculator: {type(node).__name__} is not allowed (only numbers, + - * / // % **, "
                    "parentheses and math functions)")


def evaluate(expr: str) -> Number:
    """The value of ``expr``: ``int`` or ``Fraction`` when exact, else ``float``. Raises :class:`ToolError`."""
    if not isinstance(expr, str):
        raise ToolError("calculator: the expression must be a string")
    if len(expr) > MAX_CHARS:
        raise ToolError(f"calculator: expression longer than {MAX_CHARS} characters")
    if not expr.strip():
        raise ToolError("calculator: empty expression")
    if _nesting(expr) > MAX_DEPTH:
        raise ToolError(f"calculator: brackets nested deeper than {MAX_DEPTH}")
    expr = expr.strip().replace("^", "**").replace("×", "*").replace("÷", "/")  # what people (and models) type
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        msg = e.msg if isinstance(e, SyntaxError) else type(e).__name__
        raise ToolError(f"calculator: not a valid expression ({msg})") from None
    n_nodes = sum(1 for n in ast.walk(tree) if isinstance(n, ast.expr))
    if n_nodes > MAX_NODES:
        raise ToolError(f"calculator: more than {MAX_NODES} numbers and operations")
    try:
        return _eval(tree, expr, time.monotonic() + MAX_SECONDS)
    except ZeroDivisionError:
        raise ToolError("calculator: division by zero") from None
    except RecursionError:
        raise ToolError("calculator: expression nested too deeply") from None
    except (OverflowError, ValueError, TypeError, MemoryError) as e:
        raise ToolError(f"calculator: {type(e).__name__}: {e}".splitlines()[0]) from None


def format_value(v: Number) -> str:
    """``12``, ``1/3 ≈ 0.3333333333333333``, or a float's shortest repr."""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Fraction):
        approx = _to_float(v) if _bits(v) < 1000 else float("nan")
        return f"{v.numerator}/{v.denominator}" + ("" if math.isnan(approx) else f" ≈ {approx!r}")
    return repr(v)


def calculator_tool() -> Tool:
    """The ``calculator`` tool: ``{"expression": "2**10 / 3"}`` → ``"1024/3 ≈ 341.3333333333333"``."""
    return Tool(
        name="calculator",
        description=("Evaluate an arithmetic expression exactly: numbers, + - * / // % ** (or ^), parentheses, "
                     "sqrt, factorial, comb, gcd, log, exp, sin, cos, round, min, max, pi, e. "
                     "Fractions stay exact (1/3 is 1/3)."),
        parameters={"type": "object",
                    "properties": {"expression": {"type": "string",
                                                  "description": "the expression, e.g. (17 + 3) * 2 / 7"}},
                    "required": ["expression"]},
        fn=lambda args: format_value(evaluate(args["expression"])),
    )
