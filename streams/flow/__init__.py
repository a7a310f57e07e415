"""Flow control across all workers (docs/flow-control.md).

Shared state lives in Redis and changes only through Lua scripts (atomic), one module per
mechanism; decisions are durable in Kafka: a run held back waits in the delay topics,
never in a busy loop, never only in a process's memory.

- at the trigger (``trigger``): ``ratelimit`` drops events over the limit, ``debounce``
  keeps the last event per key until it has been quiet for the period, ``batch``
  gathers events into one run;
- at the executor (``gate``): ``concurrency`` slots (leases per step execution) and the
  ``throttle`` of run starts; a step that cannot go now is reported as ``StepDeferred``,
  parked on a timer by the state machine and dispatched again then. ``priority`` orders
  the queues of both (``queue``).

Every script is idempotent by the id of what it decides about (run id, dispatch, event
id), so a redelivered message never takes two slots or two tokens.
"""
