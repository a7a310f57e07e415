"""Command line and process handling shared by the peers' benchmark scripts (stdlib only)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata

from bench.measure import exit_on_sigterm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arguments(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every peer script takes (``bench.compare`` passes them all)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--sections", nargs="+", default=["per_step", "throughput", "recovery"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--runs", type=int, default=30, help="runs per N (half for N >= 50)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput window")
    parser.add_argument("--brokers", default="", help="Kafka bootstrap (the Kafka peers)")
    parser.add_argument("--broker-pid", type=int, nargs="*", default=[],
                        help="the broker's processes, for their CPU use")
    parser.add_argument("--log-dir", default="", help="worker logs go here")
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    return args


def versions(*names: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def runs_for(n: int, runs: int) -> int:
    return max(5, runs if n < 50 else runs // 2)


def spawn(args: list[str], log_dir: str, name: str,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process of this venv's python, in the repository root, logging to a file."""
    log = (open(os.path.join(log_dir, f"{name}.log"), "ab")  # noqa: SIM115
           if log_dir else subprocess.DEVNULL)
    try:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    finally:
        if log is not subprocess.DEVNULL:
            log.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; by pid, never by name."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to put started processes in; all are stopped on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            stop(process)
