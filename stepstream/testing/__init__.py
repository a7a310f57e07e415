"""Testing durable functions in process, with no broker and no Redis.

``run`` runs a function to its end on the engine's own state machine and replay, with
mocked steps, given events and a virtual clock; ``replay`` checks that new code takes
the path of a recorded run (``ReplayMismatch`` if not).
"""

from stepstream.errors import ReplayMismatch
from stepstream.testing.harness import run
from stepstream.testing.replay import replay
from stepstream.testing.result import RunResult

__all__ = [
    "ReplayMismatch",
    "RunResult",
    "replay",
    "run",
]
