"""Recovery of stepstream: SIGKILL of the worker executing a run, to its next step.

Two workers; one run of a long chain of 100 ms steps. Each step returns the pid of the
worker that ran it, so once a few steps are done, the history topic says which worker
is executing the run: that one is killed, and the time is taken until the history
topic shows a step of the run completed by another process: the survivor, or with
``--restart-after`` the killed worker started again under its name that many seconds
after the kill, as Kubernetes or systemd would. Each kill is on a fresh cluster.

    python -m bench.recovery [--kills 5] [--restart-after 1] [--json] [--write]
                             [--broker tansu|kafka] [--session-timeout S] [--chain-takeover]
                             [--brokers HOST:PORT]

With ``--broker kafka`` every kill's cluster is a fresh namespace on one Kafka node.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from typing import Any

from bench.harness import (
    Cluster,
    History,
    add_broker_option,
    running_engine,
    shared_broker,
    step_reports,
    write_results,
)
from bench.measure import emit, exit_on_sigterm, format_table, log, recovery
from stepstream import Stepstream


def measure(brokers: str | None, timeout: float = 120.0, restart_after: float | None = None,
            static: bool = False, **env: str) -> dict[str, Any]:
    with running_engine("bench.functions", workers=2, brokers=brokers,
                        static=static, **env) as cluster:
        result = measure_on(cluster, timeout, restart_after=restart_after)
    if "STEPSTREAM_SESSION_TIMEOUT_S" in env:  # the workers', not the harness's default
        result["session_timeout_s"] = float(env["STEPSTREAM_SESSION_TIMEOUT_S"])
    return {**result, "static": static,
            "chain_takeover": env.get("STEPSTREAM_CHAIN_TAKEOVER") == "true"}


def measure_on(cluster: Cluster, timeout: float, steps: int = 200, step_ms: int = 100,
               restart_after: float | None = None) -> dict[str, Any]:
    """Needs two workers; kills one of them (and starts it again ``restart_after`` s
    later, when given)."""
    by_pid = {w.process.pid: w for w in cluster.workers if w.process is not None}
    history = History(cluster.settings)
    client = Stepstream("bench", settings=cluster.settings)
    restarts: list[threading.Timer] = []

    def kill(pid: int) -> None:
        by_pid[pid].kill()
        if restart_after is not None:
            restarts.append(threading.Timer(restart_after, cluster.restart, [pid]))
            restarts[-1].start()

    try:
        client.send("bench/slow", {"n": steps, "ms": step_ms})
        # A run's steps all go to the worker that owns its partition: the one that
        # finished the last step is executing the next.
        result = recovery(step_reports(history, "slow-chain"), kill, mid_step=False,
                          timeout=timeout)
    finally:
        for restart in restarts:
            restart.join()
        client.close()
        history.close()
    result.update(step_ms=step_ms, restarted_after_s=restart_after,
                  session_timeout_s=cluster.settings.session_timeout_s,
                  chain_lease_s=getattr(cluster.settings, "chain_lease_ms", 0) / 1000 or None)
    log(f"stepstream recovery: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", help="use this broker instead of starting one")
    add_broker_option(parser)
    parser.add_argument("--session-timeout", type=float,
                        help="the workers' STEPSTREAM_SESSION_TIMEOUT_S (default: theirs)")
    parser.add_argument("--chain-takeover", action="store_true",
                        help="STEPSTREAM_CHAIN_TAKEOVER=true: a new owner re-dispatches the "
                        "killed worker's chain at once, not one lease after it was last alive")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after")
    parser.add_argument("--kills", type=int, default=1, help="kills, each on a fresh cluster")
    parser.add_argument("--restart-after", type=_seconds_or_none, nargs="+", default=[None],
                        help="start the killed worker again this many seconds after the "
                        "kill (several: one series each; 'none': not restarted)")
    parser.add_argument("--membership", choices=["static", "dynamic"], default="dynamic",
                        help="workers with STEPSTREAM_INSTANCE_ID (static) or without")
    parser.add_argument("--json", action="store_true", help="print a RESULT line (bench.compare)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    static = args.membership == "static"
    env = ({"STEPSTREAM_SESSION_TIMEOUT_S": f"{args.session_timeout:g}"}
           if args.session_timeout else {})
    if args.chain_takeover:
        env["STEPSTREAM_CHAIN_TAKEOVER"] = "true"
    with shared_broker(args.broker, args.brokers) as brokers:
        series = {after: [measure(brokers, args.timeout, after, static, **env)
                          for _ in range(args.kills)] for after in args.restart_after}
    if args.json:
        emit({"system": "stepstream", "recovery": series[args.restart_after[0]][0]})
        return 0
    text = table(series)
    print(text)
    if args.write:
        command = "python -m bench.recovery " + " ".join(argv or sys.argv[1:])
        session = (f", session {args.session_timeout:g} s" if args.session_timeout else "") + (
            ", chain takeover" if args.chain_takeover else "")
        write_results(f"Recovery after SIGKILL (two workers, {args.membership} members"
                      f"{session})", command, text, broker=args.broker)
    return 0


def _seconds_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def table(series: dict[float | None, list[dict[str, Any]]]) -> str:
    rows = []
    for after, results in series.items():
        times = sorted(r["recovered_s"] for r in results if r["recovered_s"] is not None)
        rows.append(["not restarted" if after is None else f"restarted {after:g} s after",
                     len(results), len(results) - len(times),
                     statistics.median(times) if times else None, times[0] if times else None,
                     times[-1] if times else None, " ".join(f"{t:.2f}" for t in times)])
    return format_table(["killed worker", "kills", "not recovered", "median s", "min s",
                         "max s", "each s"], rows)


if __name__ == "__main__":
    sys.exit(main())
