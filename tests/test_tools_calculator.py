"""The calculator tool: exact results (a hypothesis oracle in Fraction arithmetic), bounds, no eval."""

from __future__ import annotations

import builtins
import math
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dodai.tools.base import ToolError
from dodai.tools.calculator import MAX_DIGITS, calculator_tool, evaluate, format_value
from dodai.tools.redteam import CALCULATOR, CALCULATOR_OK, Harness


# ---- the red-team cases (shared harness: builds a small DB and index once) ----------------------------
@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("calc-redteam"), n_docs=50)


@pytest.mark.parametrize("case", CALCULATOR + CALCULATOR_OK, ids=lambda c: f"{c.expect}-{c.name}")
def test_redteam_case(harness, case):
    out = harness.run(case)
    assert out.passed, out.why


# ---- exactness ---------------------------------------------------------------------------------------
def test_exact_rationals_and_types():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert evaluate("6/3") == 2 and isinstance(evaluate("6/3"), int)
    assert evaluate("0.1 + 0.2") == Fraction(3, 10)  # decimal literals are read exactly
    assert evaluate("2**-3") == Fraction(1, 8)
    assert evaluate("7 // 2") == 3 and evaluate("-7 % 3") == 2 and evaluate("-7 // 2") == -4
    assert evaluate("sqrt(16/9)") == Fraction(4, 3)  # perfect squares stay exact
    assert isinstance(evaluate("sqrt(2)"), float) and evaluate("sqrt(2)") == math.sqrt(2)
    assert evaluate("2^10") == 1024 and evaluate("3 × 4 ÷ 6") == 2
    assert evaluate("factorial(25)") == math.factorial(25)
    assert evaluate("comb(52, 5)") == 2598960 and evaluate("gcd(12, 18)") == 6 and evaluate("lcm(4, 6)") == 12
    assert evaluate("round(2.5)") == 2 and evaluate("round(1/3, 3)") == Fraction(333, 1000)
    assert evaluate("max(1/3, 0.3)") == Fraction(1, 3)
    assert math.isclose(evaluate("log(8, 2)"), 3.0) and math.isclose(evaluate("sin(pi/2)"), 1.0)
    assert evaluate("log10(10**2999)") == pytest.approx(2999.0)  # exact ints of any size have logs


def test_format_value():
    assert format_value(12) == "12"
    assert format_value(Fraction(1, 3)) == "1/3 ≈ 0.3333333333333333"
    assert format_value(0.5) == "0.5"
    assert calculator_tool().call({"expression": "1/4"}) == "1/4 ≈ 0.25"


# A random expression tree: ("n", text, value) | ("bin", op, a, b) | ("neg", a) | ("pow", a, k)
def _leaf():
    ints = st.integers(0, 40).map(lambda n: ("n", str(n), Fraction(n)))
    decs = st.tuples(st.integers(0, 9999), st.integers(1, 3)).map(
        lambda t: ("n", f"{t[0] // 10**t[1]}.{t[0] % 10**t[1]:0{t[1]}d}", Fraction(t[0], 10 ** t[1])))
    return ints | decs


def _extend(children):
    return (st.tuples(st.just("bin"), st.sampled_from(["+", "-", "*", "/", "//", "%"]), children, children)
            | st.tuples(st.just("neg"), children)
            | st.tuples(st.just("pow"), children, st.integers(-3, 4)))


TREES = st.recursive(_leaf(), _extend, max_leaves=8)


def _text(t) -> str:
    if t[0] == "n":
        return t[1]
    if t[0] == "neg":
        return f"-({_text(t[1])})"
    if t[0] == "pow":
        return f"({_text(t[1])})**{t[2]}" if t[2] >= 0 else f"({_text(t[1])})**({t[2]})"
    return f"({_text(t[2])}) {t[1]} ({_text(t[3])})"


def _value(t) -> Fraction:
    """The oracle: Python's exact Fraction arithmetic (ZeroDivisionError when undefined)."""
    if t[0] == "n":
        return t[2]
    if t[0] == "neg":
        return -_value(t[1])
    if t[0] == "pow":
        return Fraction(_value(t[1]) ** t[2])
    a, b = _value(t[2]), _value(t[3])
    ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
           "//": lambda: a // b, "%": lambda: a % b}
    return Fraction(ops[t[1]]())  # Fraction // Fraction is an int; keep every value a Fraction


@settings(max_examples=200, deadline=None)
@given(TREES)
def test_property_matches_fraction_arithmetic(tree):
    text = _text(tree)
    try:
        want = _value(tree)
    except ZeroDivisionError:
        with pytest.raises(ToolError, match="division by zero"):
            evaluate(text)
        return
    if max(abs(want.numerator), want.denominator).bit_length() > MAX_DIGITS * 3:
        return  # beyond the size bound: refusal is tested elsewhere
    got = evaluate(text)
    assert got == want, text
    assert isinstance(got, int) == (want.denominator == 1)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet="0123456789+-*/()%.^ e", max_size=200))
def test_property_hostile_text_only_toolerror(expr):
    t0 = time.perf_counter()
    try:
        v = evaluate(expr)
        assert isinstance(v, (int, Fraction, float))
    except ToolError as e:
        assert "\n" not in str(e)
    assert time.perf_counter() - t0 < 2.0


# ---- bounds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["9**9**9", "2**(2**40)", "10**3001", "factorial(5000)", "(10**2000)*(10**2000)",
                                  "perm(100000, 5000)", "10**-3001", "(1/3)**100000", "1e99999"])
def test_size_bounds_refuse_quickly(expr):
    t0 = time.perf_counter()
    with pytest.raises(ToolError):
        evaluate(expr)
    assert time.perf_counter() - t0 < 1.0


def test_largest_allowed_result_is_exact():
    assert evaluate("10**2999") == 10**2999
    assert len(calculator_tool().call({"expression": "factorial(1000)"})) > 2000  # the tool truncates text…
    assert evaluate("factorial(1000)") == math.factorial(1000)  # …the value is exact


def test_never_calls_eval_or_exec(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert evaluate("(2 + 3) * 4 / 5") == 4


def test_spec_and_argument_checks():
    tool = calculator_tool()
    spec = tool.spec()
    assert spec["function"]["name"] == "calculator"
    assert spec["function"]["parameters"]["required"] == ["expression"]
    with pytest.raises(ToolError, match="missing required"):
        tool.call({})
    with pytest.raises(ToolError, match="unknown argument"):
        tool.call({"expression": "1", "code": "x"})
