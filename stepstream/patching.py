"""Versioning inside a function: ``ctx.patched(id)`` and ``ctx.deprecate_patch(id)``.

A patch is decided once per run and kept in the run's memo as an entry under a reserved
step id (``$patch:<id>``, output ``true``), so every later replay of the run decides the
same way, on any worker. The decision follows Temporal's ``patched``:

- the marker is in the memo: True (the run took the new path);
- the run is *past* the patch point: False, and nothing is recorded. Past means the
  replay has not yet returned every memo entry (old code ran steps beyond this point),
  or the dispatch targets a step found earlier (a retry or a parallel step: the run
  got there on old code);
- else the run is at its frontier, reaching the patch for the first time: True, and
  the dispatch ends with the marker as its outcome (one extra dispatch per patch per
  run), so the decision is saved before any step of the new path runs.

Markers are not steps: they are left out of the "memo entries not returned yet" test,
so an old patch's marker never makes a later patch look passed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

RESERVED_PREFIX = "$"
"""Step ids starting with it are stepstream's own (``step.run`` refuses them)."""
PATCH_PREFIX = RESERVED_PREFIX + "patch:"
"""Memo keys of patch markers."""


def patch_marker(patch_id: str) -> str:
    """The memo key of ``patch_id``'s marker."""
    if not patch_id:
        raise ValueError("a patch needs a non-empty id")
    return PATCH_PREFIX + patch_id


def is_reserved(step_id: str) -> bool:
    """Whether a step id is stepstream's own (a patch marker, ...), not a user's."""
    return step_id.startswith(RESERVED_PREFIX)


def is_marker(step_id: str) -> bool:
    """Whether a memo key is a patch marker rather than a step."""
    return step_id.startswith(PATCH_PREFIX)


def at_frontier(memo: Iterable[str], returned: Collection[str], target: str | None) -> bool:
    """Whether a dispatch that has returned the memo entries ``returned`` so far is at
    its run's frontier: no step found before (``target``), no memo entry still to come."""
    return target is None and all(step_id in returned or is_marker(step_id)
                                  for step_id in memo)
