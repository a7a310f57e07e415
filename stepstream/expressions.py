"""CEL expressions: ``wait_for_event`` and ``cancel_on`` conditions, idempotency keys.

Expressions are compiled once and cached; evaluating one never executes event data.
In a condition, ``event`` is the run's triggering event and ``async`` the incoming
event, as in Inngest: ``async.data.invoice_id == event.data.invoice_id``.

Cost. The ``cel`` library (Rust, through PyO3; no cost limit, step limit or timeout in
its API) holds the GIL while it evaluates: a thread cannot bound an evaluation (a ticker
thread got 1 tick in a 0.6 s evaluation), and a process per evaluation would cost more
than the evaluations. So an evaluation is bounded before it starts. CEL has no loops;
only comprehensions iterate. Measured (2-core test machine, cel 0.10.0):
``exists``/``all``/``exists_one`` cost about 0.4 us per step; ``map``/``filter`` copy
their result at every step, so they are quadratic (1,000 values 24 ms, 4,000: 370 ms);
nested, ``xs.map(a, xs.map(b, a * b))`` is cubic (300 values 1.8 s, 1,000: 72 s).

The estimate: over data of ``n`` values (``size_of``: the JSON values of the events the
expression sees), comprehensions nested ``d`` deep take ``n**d`` steps, at
``STEP_COST`` each, plus ``n**(d+1)`` copies if one is a ``map`` or ``filter``
(``cost_shape`` reads ``d`` from the source). Over ``MAX_COST`` the expression is not
evaluated: it fails as over budget. Measured at a budget of 2,000,000: ``exists`` over
125k values 56 ms, ``map`` over 1,400: 50 ms, two nested ``exists`` over 353: 39 ms, two
nested ``map`` over 122: 105 ms; the budget is an eighth of that. Without
comprehensions the cost is linear in the expression's length (``MAX_EXPRESSION_LENGTH``)
and the event's size, and is not checked. Not modelled: a body that copies a large
string at every step (1,000 steps over 800 KB took 0.13 s).

Any exception of an evaluation other than a missing field or variable (None: "nothing
to match or key on") raises ``ExpressionError``; callers decide what it means (no match
for conditions, a failed run for keys).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import cel

from stepstream.errors import ConfigError, ExpressionError

MAX_EXPRESSION_LENGTH = 1024
"""Longer expressions are refused: they are user input evaluated for every event."""

MAX_COST = 250_000
"""The largest estimated cost an expression is evaluated at: about 6 ms of the worker's
event loop (``map`` over 480 values, ``exists`` over 15k). At 2,000,000 (about 50 ms), 20
events a second whose filter maps over 1,000 values tripled a concurrent chain's
latency (bench/expressions.py)."""

STEP_COST = 16
"""A comprehension step (its body evaluated once), in copies of a list element."""

_TOKENS = re.compile(r"""
    (?P<comment>//[^\n]*)
  | (?P<raw>[bB]?[rR][bB]?(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|"[^"\n]*"))
  | (?P<text>[bB]?(?:'''(?:\\.|.)*?'''|\"\"\"(?:\\.|.)*?\"\"\"|'(?:\\.|[^'\\\n])*'
                  |"(?:\\.|[^"\\\n])*"))
  | (?P<copies>\.\s*(?:map|filter)\s*\()
  | (?P<scans>\.\s*(?:all|exists_one|exists)\s*\()
  | (?P<open>\()
  | (?P<close>\))
""", re.VERBOSE | re.DOTALL)
"""What the depth scan needs to tell apart: strings and comments are skipped whole."""


def cost_shape(source: str) -> tuple[int, bool]:
    """How deep comprehensions nest in ``source`` (0: none), and whether one is a ``map``
    or ``filter``. ``a.map(x, b.exists(y, y))`` is ``(2, True)``."""
    frames: list[bool] = []  # per open parenthesis: whether it is a comprehension's
    depth = deepest = 0
    copies = False
    for token in _TOKENS.finditer(source):
        kind = token.lastgroup
        if kind in ("open", "copies", "scans"):
            frames.append(kind != "open")
            depth += kind != "open"
            deepest = max(deepest, depth)
            copies = copies or kind == "copies"
        elif kind == "close" and frames:
            depth -= frames.pop()
    return deepest, copies


def estimated_cost(shape: tuple[int, bool], size: int) -> int:
    """The cost of an expression of ``shape`` over ``size`` values, in element copies."""
    depth, copies = shape
    if not depth:
        return 0
    steps: int = size ** depth
    return STEP_COST * steps + (steps * size if copies else 0)


def size_of(*data_json: str) -> int:
    """About how many JSON values ``data_json`` hold (a string's commas count too)."""
    return sum(d.count(",") + d.count("[") + d.count("{") + 1 for d in data_json)


@lru_cache(maxsize=4096)
def compile_condition(source: str) -> Any:
    """The compiled program of ``source``; raises ConfigError when it does not parse."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ConfigError(f"CEL expression over {MAX_EXPRESSION_LENGTH} characters")
    try:
        return cel.compile(source)
    except ValueError as exc:
        raise ConfigError(f"invalid CEL expression {source!r}: {exc}") from exc


@lru_cache(maxsize=4096)
def _shape(source: str) -> tuple[int, bool]:
    return cost_shape(source)


def evaluate(source: str, context: dict[str, Any], size: int | None = None) -> Any:
    """The value of ``source`` over ``context``; None when a field or variable it reads
    is missing. ``size`` is ``size_of`` the data in ``context`` (measured when not
    given). Raises ExpressionError when the evaluation fails or is over budget."""
    program = compile_condition(source)
    shape = _shape(source)
    if shape[0]:
        if size is None:
            size = size_of(json.dumps(context, default=str))
        cost = estimated_cost(shape, size)
        if cost > MAX_COST:
            raise ExpressionError(source, "budget", (
                f"comprehensions nested {shape[0]} deep over {size} values would cost "
                f"about {cost:,}, over {MAX_COST:,}"))
    try:
        return program.execute(context)
    except Exception as exc:  # the library's errors (ZeroDivision, Overflow, Index...)
        if isinstance(exc, KeyError) or (
                isinstance(exc, RuntimeError) and str(exc).startswith("Undefined variable")):
            return None  # a missing field, or ``async`` where there is no incoming event
        raise ExpressionError(source, "error", f"{type(exc).__name__}: {exc}") from exc


def matches(condition: str | None, context: dict[str, Any], size: int | None = None) -> bool:
    """Whether an optional condition holds (no condition always holds); raises
    ExpressionError as ``evaluate`` does."""
    return condition is None or evaluate(condition, context, size) is True
