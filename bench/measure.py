"""Pure helpers every benchmark shares, stdlib only.

The peers' scripts import this module from their own virtual environments, so it must
not import stepstream, confluent-kafka or anything else that is not in the stdlib.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``p50``, ``p95``, ``p99``, ``mean``, ``min`` and ``max`` of ``values``."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "mean": sum(values) / len(values),
            "min": min(values), "max": max(values)}


def loadavg() -> float:
    """The 1-minute load average (``/proc/loadavg``); -1 where there is none."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return -1.0


def machine() -> dict[str, Any]:
    """``uname -m``, the CPU model, the number of cores and the Python version."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": model, "cores": os.cpu_count() or 0,
            "python": platform.python_version(), "kernel": platform.release()}


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system) used so far by ``pids`` and all their descendants."""
    tree, total, seen = _children(), 0.0, set()
    todo = list(pids)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(pid, []))
    return total


def pids_named(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name`` (e.g. ``redis-server``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                continue
    return found


class CpuMeter:
    """Cores kept busy by groups of processes over a window: ``(cpu seconds) / (wall)``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {k: v for k, v in groups.items() if v}
        self.start = {k: cpu_seconds(v) for k, v in self.groups.items()}
        self.own = time.process_time()
        self.wall = time.perf_counter()

    def cores(self) -> dict[str, float]:
        wall = max(1e-9, time.perf_counter() - self.wall)
        used = {k: round((cpu_seconds(v) - self.start[k]) / wall, 2)
                for k, v in self.groups.items()}
        used["client"] = round((time.process_time() - self.own) / wall, 2)
        return used


def closed_loop(submit: Callable[[], str], poll_done: Callable[[float], Iterable[str]], *,
                in_flight: int, runs: int | None = None, seconds: float | None = None,
                warmup: int = 0, stall_s: float = 60.0) -> dict[str, Any]:
    """Keep ``in_flight`` runs going; each finished run is replaced at once.

    ``submit()`` starts a run and returns its key; ``poll_done(timeout)`` returns the keys
    of runs that finished (waiting at most ``timeout`` seconds). The first ``warmup``
    completions are not counted; then it measures until ``runs`` more have completed or
    ``seconds`` have passed, and drains what is still in flight without counting it.
    With ``in_flight=1`` it measures latency; with more, throughput.
    """
    if runs is None and seconds is None:
        raise ValueError("give runs or seconds")
    started: dict[str, float] = {}
    latencies: list[float] = []
    completed, measure_from = 0, None
    load_start = loadavg()

    def top_up() -> None:
        while len(started) < in_flight:
            t0 = time.perf_counter()
            started[submit()] = t0

    def finished(now: float) -> bool:
        if measure_from is None:
            return False
        return ((runs is not None and len(latencies) >= runs)
                or (seconds is not None and now - measure_from >= seconds))

    if warmup == 0:
        measure_from = time.perf_counter()
    top_up()
    last_progress = time.perf_counter()
    while True:
        for key in poll_done(0.2):
            t0 = started.pop(key, None)
            if t0 is None:
                continue  # not ours, or a duplicate report
            now = time.perf_counter()
            last_progress = now
            completed += 1
            if measure_from is not None and not finished(now):
                latencies.append((now - t0) * 1000)
            elif measure_from is None and completed >= warmup:
                measure_from = now
        now = time.perf_counter()
        if finished(now):
            break
        if now - last_progress > stall_s:
            raise TimeoutError(f"no run finished for {stall_s:.0f}s "
                               f"({len(started)} in flight, {completed} done)")
        top_up()
    elapsed = time.perf_counter() - (measure_from or now)
    drain_until = time.perf_counter() + stall_s
    while started and time.perf_counter() < drain_until:
        for key in poll_done(0.2):
            started.pop(key, None)
    return {"in_flight": in_flight, "runs": len(latencies), "seconds": round(elapsed, 3),
            "runs_per_s": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms": summarize(latencies), "load": [load_start, loadavg()],
            "undrained": len(started)}


class Beacons:
    """A UDP socket on loopback where step bodies report ``{"i", "pid"}`` as they finish.

    The recovery benchmarks watch it for the first step a survivor completes after a
    worker is killed. Receipt time is taken here, on the benchmark's clock.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    def next(self, timeout: float) -> tuple[float, dict[str, Any]] | None:
        """The next report and when it arrived (``perf_counter``), or None on timeout."""
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        return time.perf_counter(), json.loads(data)

    def close(self) -> None:
        self.sock.close()


def beacon(port: int, **report: Any) -> None:
    """Send a report to a ``Beacons`` socket (used inside step bodies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(json.dumps(report).encode(), ("127.0.0.1", port))


Reports = Callable[[float], tuple[float, dict[str, Any]] | None]
"""``reports(timeout)``: the next ``(arrival time, report)`` of a step, or None on timeout."""


def recovery(reports: Reports,
             kill: Callable[[int], None], *, mid_step: bool, min_steps: int = 5,
             timeout: float = 120.0) -> dict[str, Any]:
    """Kill the worker executing a long chain and time the next step it completes elsewhere.

    ``reports(timeout)`` yields ``(arrival time, {"i": step, "pid": worker, "phase":
    "start" | "done"})`` as steps of the chain start and finish (``phase`` defaults to
    done); ``kill(pid)`` SIGKILLs that worker (and may restart it, for systems that do
    not fail over by themselves). Once ``min_steps`` steps are done, the victim is the
    worker that starts the next step (``mid_step``: killed while it runs it), or else
    the one that finished the last step (for systems where a run stays on one worker).
    """
    deadline = time.perf_counter() + timeout
    done, victim, last_step, running = 0, 0, -1, None
    while True:
        got = reports(max(0.0, deadline - time.perf_counter()))
        if got is None:
            raise TimeoutError(f"only {done} steps completed before the kill")
        report = got[1]
        if report.get("phase", "done") == "done":
            done += 1
            victim, last_step = int(report["pid"]), int(report["i"])
            if done >= min_steps and not mid_step:
                break
        elif done >= min_steps:
            victim, running = int(report["pid"]), int(report["i"])
            break
    load_start = loadavg()
    killed_at = time.perf_counter()
    kill(victim)
    base = {"victim_last_step": last_step, "killed_during_step": running}
    deadline = killed_at + timeout
    while time.perf_counter() < deadline:
        got = reports(max(0.0, deadline - time.perf_counter()))
        if got is None:
            break
        at, report = got
        if report.get("phase", "done") == "done" and int(report["pid"]) != victim:
            return {"recovered_s": round(at - killed_at, 3), **base,
                    "next_step": int(report["i"]), "load": [load_start, loadavg()]}
    return {"recovered_s": None, **base, "load": [load_start, loadavg()],
            "note": f"no step completed within {timeout:.0f}s of the kill"}


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; floats get one decimal (two below 10), None shows as a dash."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's result as one JSON line on stdout (the driver reads it)."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so ``finally`` blocks stop what was started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def log(*parts: Any) -> None:
    """Progress for humans, on stderr (stdout carries the result)."""
    print(*parts, file=sys.stderr, flush=True)
