"""Expressions that failed at run time: counted at every event, logged once each."""

from __future__ import annotations

import logging
from typing import Literal

from stepstream.errors import ExpressionError
from streams.metrics import Metrics

log = logging.getLogger("stepstream.expressions")

Kind = Literal["filter", "wait", "key"]
"""``filter``: a function's ``if_``; ``wait``: a ``wait_for_event`` or ``cancel_on``
condition; ``key``: idempotency, flow-control keys and priority."""

OUTCOME: dict[Kind, str] = {"filter": "the event does not match",
                            "wait": "the event does not match",
                            "key": "the run fails"}


def report(metrics: Metrics, function_id: str, kind: Kind, error: ExpressionError) -> None:
    """Count ``error`` under ``stepstream_expression_failures``; log its first time."""
    metrics.expression_failures.labels(function_id, kind, error.reason).inc()
    if metrics.first_failure(function_id, kind, error.source):
        log.warning("%s expression of %s: %s; %s (logged once, counted in "
                    "stepstream_expression_failures)", kind, function_id, error, OUTCOME[kind])
