"""Metrics added for run history: step labels stay bounded (per-partition lag follows
the assignment: tests/unit/test_monitor.py)."""

from __future__ import annotations

from streams.metrics import step_label


def test_a_step_repeated_in_a_loop_counts_under_its_base_id() -> None:
    assert [step_label(s) for s in ("send", "send:1", "send:12", "a:b", "v2:x:3")] == [
        "send", "send", "send", "a:b", "v2:x"]
