"""Mocks: what ``stepstream.testing.run`` runs instead of a step's body.

A mock is one of:

- an exception instance or class: raised (every attempt);
- a callable: called with the step's arguments instead of its body (sync or async; it
  may raise);
- any other value: returned (it goes through the same JSON round trip as a real output);
- a ``list`` of the above: one per attempt, the last one for any attempt beyond the list
  (``[TimeoutError, TimeoutError, "sent"]`` fails twice, then returns ``"sent"``). To
  return a list, wrap it: ``[[1, 2]]`` or ``lambda *_: [1, 2]``.

Mocks are keyed by step id. A repeated step id (``"item:1"``, ``"item:2"`` for a step
called in a loop) uses its own key if there is one, else the id as the handler wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from stepstream.errors import ConfigError
from stepstream.step import Stub

_REPEAT = re.compile(r"^(.*):\d+$")


def stub_of(mocks: Mapping[str, Any]) -> Stub:
    """The body replacer that applies ``mocks`` (the real body for unmocked steps)."""
    for step_id, mock in mocks.items():
        if isinstance(mock, list) and not mock:
            raise ConfigError(f"mock of step {step_id!r}: an empty list has no attempt")

    def stub(step_id: str, attempt: int, body: Callable[..., Any]) -> Callable[..., Any]:
        key = step_id
        if key not in mocks and (repeat := _REPEAT.match(step_id)) is not None:
            key = repeat.group(1)
        if key not in mocks:
            return body
        mock = mocks[key]
        if isinstance(mock, list):
            mock = mock[min(attempt, len(mock) - 1)]
        return as_body(mock)

    return stub


def as_body(mock: Any) -> Callable[..., Any]:
    """One mock as a step body."""
    if isinstance(mock, BaseException) or (isinstance(mock, type)
                                           and issubclass(mock, BaseException)):
        def fail(*_: Any) -> Any:
            raise mock

        return fail
    if callable(mock):
        return mock  # type: ignore[no-any-return]
    return lambda *_: mock
