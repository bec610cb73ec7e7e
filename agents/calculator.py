"""The `calculator` tool's arithmetic: safe (no `eval`) and bounded (SPEC 13, trust boundaries).

Every number the evaluator makes is checked before it is made, where making it
could be costly (a power: its size is known from the operands), and after every
step: an integer stays within 64 bits (|n| < 2**63, so a result is always a JSON
number any client reads), a float stays finite, `round` takes at most
MAX_ROUND_DIGITS digits.  Each step is therefore cheap; the tool still runs this in
a sandbox worker (agents/sandbox.py) under a time limit, which is the guarantee.
"""
from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from agents.sandbox import JobError

MAX_EXPRESSION = 200
MAX_INT = 2**63 - 1
MAX_ROUND_DIGITS = 30


class CalculationError(JobError):
    """The expression cannot be computed; the message says why."""


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # |base| >= 2**(bit_length - 1): the power has at least (bit_length - 1) * exponent bits.
        if (abs(base).bit_length() - 1) * exponent >= 63:
            raise CalculationError(f"the result is too large: {_INT_LIMIT}")
    result = operator.pow(base, exponent)
    if isinstance(result, complex):
        raise CalculationError("the result is not a real number (a negative number to a fractional power)")
    return result


def _round(value: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(value)
    if not isinstance(digits, int):
        raise CalculationError("round's second argument (the digits) must be a whole number")
    if abs(digits) > MAX_ROUND_DIGITS:
        raise CalculationError(f"round takes from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS} digits")
    return round(value, digits)


_INT_LIMIT = "integers are limited to 64 bits (less than 2**63 in size); use a float, e.g. 2.0**100"
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "abs": abs, "round": _round, "min": min, "max": max,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "log": math.log, "exp": math.exp,
}
_CONSTS = {"pi": math.pi, "e": math.e}


def _checked(value: Any) -> int | float:
    """`value` when it is a number within the bounds, else CalculationError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculationError("the result is not a real number")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise CalculationError(f"the result is too large: {_INT_LIMIT}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is too large for a float" if math.isinf(value) else "the result is not a number")
    return value


def evaluate(expression: str) -> int | float:
    """Safe arithmetic: numbers, + - * / // % **, parentheses and a few math functions. No eval.

    Raises CalculationError for anything else, and for a result out of bounds.
    """
    if len(expression) > MAX_EXPRESSION:
        raise CalculationError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _value(tree)
    except ZeroDivisionError:
        raise CalculationError("division by zero") from None
    except RecursionError:
        raise CalculationError("the expression is nested too deeply") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise CalculationError(f"cannot compute: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def _value(node: ast.AST) -> int | float:
    """The value of an expression's node, each step checked (CalculationError for what is not arithmetic)."""
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculationError(f"unsupported element in expression: {ast.dump(node)[:40]}")


def _call(node: ast.Call) -> int | float:
    """A call of one of _FUNCS by name, with at most three positional arguments."""
    func = node.func
    if not isinstance(func, ast.Name) or func.id not in _FUNCS or node.keywords or len(node.args) > 3:
        raise CalculationError(f"unsupported element in expression: {ast.dump(node)[:40]}")
    return _checked(_FUNCS[func.id](*(_value(a) for a in node.args)))
