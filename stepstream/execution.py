"""One dispatch: replay the handler with the memo and report what happened."""

from __future__ import annotations

import logging

from schemas.messages import (
    FunctionFinished,
    StepCompleted,
    StepFailed,
    StepPlanned,
    StepRequest,
)
from stepstream.context import Context
from stepstream.events import TriggerEvent, dumps
from stepstream.function import FunctionDef
from stepstream.logs import RunLogger, with_logs
from stepstream.progress import ReportProgress
from stepstream.replay import ReplayPaths
from stepstream.step import (
    ChainBudget,
    Progress,
    SendEvents,
    Step,
    StepInterrupt,
    Stub,
    error_info,
    now_ms,
)

Outcome = StepCompleted | StepFailed | StepPlanned | FunctionFinished

_log = logging.getLogger("stepstream.function")

_PATHS = ReplayPaths()
"""This process's record of the steps each run's dispatches asked for."""


@with_logs
async def execute(function: FunctionDef, request: StepRequest, *, max_output_bytes: int,
                  send_events: SendEvents | None = None, chain: ChainBudget | None = None,
                  on_progress: Progress | None = None, paths: ReplayPaths | None = None,
                  stub: Stub | None = None,
                  report_progress: ReportProgress | None = None) -> Outcome:
    """Run ``function``'s handler for ``request`` up to its first new step(s).

    Returns the outcome of the step it ran, the steps it planned, or
    ``FunctionFinished`` when the handler returned or raised outside any step. With
    a ``chain`` budget and an ``on_progress`` callback (eager execution), each step that
    completes is reported through ``on_progress`` and the handler goes on to the next
    step, until something needs the orchestrator or the budget is spent.

    ``paths`` replaces this process's record of the steps each run asked for (a test
    harness keeps its own); ``stub`` replaces step bodies (its mocks).
    ``report_progress`` takes what ``ctx.progress`` says (``stepstream.progress``).
    """
    known = _PATHS if paths is None else paths
    step = Step(request, max_output_bytes=max_output_bytes, send_events=send_events,
                chain=chain if function.eager else None, on_progress=on_progress,
                expected_path=known.expected(request.run_id, function.handler, request.memo),
                stub=stub, report_progress=report_progress)
    outcome = await _replay(function, request, step, max_output_bytes)
    if step.diverged is not None:  # even if the handler caught it: the run cannot go on
        outcome = FunctionFinished(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                                   error=error_info(step.diverged), chain=step.chain)
    if isinstance(outcome, FunctionFinished):
        known.forget(request.run_id)
    else:
        known.record(request.run_id, function.handler, step.path, request.memo)
    return outcome


async def _replay(function: FunctionDef, request: StepRequest, step: Step,
                  max_output_bytes: int) -> Outcome:
    logger = RunLogger(_log, {"run_id": request.run_id, "function_id": function.id,
                              "attempt": request.attempt})
    try:
        event = TriggerEvent.from_envelope(request.event)
        events = [TriggerEvent.from_envelope(e) for e in request.batch] or [event]
        ctx = Context(event=event, step=step, run_id=request.run_id,
                      attempt=request.attempt, logger=logger, events=events)
        result = await function.handler(ctx)
        output = dumps(result, limit=max_output_bytes, what=f"return value of {function.id!r}")
    except StepInterrupt as interrupt:
        return interrupt.outcome
    except Exception as exc:
        target = await step.target_outcome()
        return target or FunctionFinished(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                                          error=error_info(exc), chain=step.chain)
    finally:
        step.close()
    target = await step.target_outcome()
    return target or FunctionFinished(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                                      output_json=output, chain=step.chain)
