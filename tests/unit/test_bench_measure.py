"""The benchmarks' pure helpers (the benchmarks themselves are not part of the tests)."""

from __future__ import annotations

import itertools

import pytest

from bench.measure import closed_loop, format_table, percentile, recovery, summarize


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.95) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summarize() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s["n"], s["min"], s["max"], s["mean"]) == (4, 1.0, 4.0, 2.5)
    assert summarize([]) == {"n": 0}


def test_format_table() -> None:
    table = format_table(["system", "p50 ms", "runs"], [["a", 3.14159, 10], ["b", 123.45, None]])
    assert table.splitlines() == ["| system | p50 ms | runs |", "|---|---|---|",
                                  "| a | 3.14 | 10 |", "| b | 123.5 | - |"]


def test_closed_loop_keeps_runs_in_flight_and_counts_after_warmup() -> None:
    ids = (str(i) for i in itertools.count())
    in_system: list[str] = []
    most_in_flight = 0

    def submit() -> str:
        nonlocal most_in_flight
        in_system.append(next(ids))
        most_in_flight = max(most_in_flight, len(in_system))
        return in_system[-1]

    def poll_done(timeout: float) -> list[str]:
        done = in_system[:2]  # the oldest two finish on every poll
        del in_system[:2]
        return done

    result = closed_loop(submit, poll_done, in_flight=4, runs=10, warmup=3)
    assert result["runs"] == 10
    assert result["latency_ms"]["n"] == 10
    assert most_in_flight == 4
    assert result["undrained"] == 0 and not in_system


def _reports(items: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    queue = [(float(n), item) for n, item in enumerate(items)]
    return lambda timeout: queue.pop(0) if queue else None


def test_recovery_kills_the_worker_that_starts_the_next_step() -> None:
    killed: list[int] = []
    steps = [{"i": i, "pid": 1 + i % 2, "phase": phase} for i in range(3)
             for phase in ("start", "done")]
    after = [{"i": 2, "pid": 1, "phase": "done"},  # the victim's late report: not recovery
             {"i": 2, "pid": 2, "phase": "start"}, {"i": 2, "pid": 2, "phase": "done"}]
    result = recovery(_reports(steps[:4] + steps[4:5] + after), killed.append,
                      mid_step=True, min_steps=2)
    assert killed == [1]
    assert (result["victim_last_step"], result["killed_during_step"]) == (1, 2)
    assert result["next_step"] == 2 and result["recovered_s"] is not None


def test_recovery_without_start_reports_kills_the_last_finisher() -> None:
    killed: list[int] = []
    result = recovery(_reports([{"i": 0, "pid": 7}, {"i": 1, "pid": 7}]), killed.append,
                      mid_step=False, min_steps=2, timeout=0.01)
    assert killed == [7]
    assert result["recovered_s"] is None and "no step completed" in result["note"]
