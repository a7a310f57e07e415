"""Metrics added for run history: step labels stay bounded (per-partition lag follows
the assignment: tests/unit/test_monitor.py)."""

from __future__ import annotations

from streams.metrics import MAX_STEP_LABELS, OTHER_STEPS, Metrics, step_label


def test_a_step_repeated_in_a_loop_counts_under_its_base_id() -> None:
    assert [step_label(s) for s in ("send", "send:1", "send:12", "a:b", "v2:x:3")] == [
        "send", "send", "send", "a:b", "v2:x"]


def test_step_labels_of_a_function_are_capped_and_the_rest_count_as_other() -> None:
    metrics = Metrics()
    labels = [metrics.step("fetch", f"user-{n}") for n in range(MAX_STEP_LABELS + 5)]
    assert len(set(labels[:MAX_STEP_LABELS])) == MAX_STEP_LABELS
    assert labels[MAX_STEP_LABELS:] == [OTHER_STEPS] * 5
    assert metrics.step("fetch", "user-0") == "user-0"  # a label it has keeps counting
    assert metrics.step("other-function", "user-999") == "user-999"  # caps are per function
