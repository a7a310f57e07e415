"""The policy a function's runs follow (``RunPolicy``), from its definition; pure (the
test harness, ``stepstream.testing``, builds it too, with no engine around)."""

from __future__ import annotations

from stepstream.function import FunctionDef
from stepstream.options import to_ms
from stepstream.topic_trigger import event_name
from streams.machine import MAX_STATE_BYTES, CancelRule, RunPolicy


def policy_of(function: FunctionDef, chain_lease_ms: int = 10_000,
              max_state_bytes: int = MAX_STATE_BYTES) -> RunPolicy:
    """The options of ``function`` that the state machine applies."""
    timeouts = function.timeouts
    return RunPolicy(
        retry=function.retry,
        chain_lease_ms=chain_lease_ms,
        max_state_bytes=max_state_bytes,
        cancel_on=tuple(CancelRule(event=event_name(r.event), condition=r.if_,
                                   timeout_ms=to_ms(r.timeout)) for r in function.cancel_on),
        start_timeout_ms=None if timeouts.start is None else to_ms(timeouts.start),
        finish_timeout_ms=None if timeouts.finish is None else to_ms(timeouts.finish))
