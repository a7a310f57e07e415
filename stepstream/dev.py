"""``stepstream dev``: the embedded default, with the seed example and a demo.

Starts the dev broker (Tansu), Redis (the machine's, else an embedded one), a
local SMTP sink and one worker running the example module, sends the sample
contact lists and prints the finished runs with their steps.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from stepstream.client import Stepstream
from stepstream.devservices import DevBroker, DevRedis, WorkerProcess, free_port
from stepstream.devsmtp import MailSink
from stepstream.redact import redact_url
from stepstream.settings import Settings

_FINAL = {"completed", "failed", "cancelled"}


def _port_or_free(port: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


def wait_for_runs(base_url: str, event_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The runs of ``event_id`` once all of them reached a final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs: list[dict[str, Any]] = _get(f"{base_url}/v1/events/{event_id}/runs")["runs"]
        if runs and all(run["status"] in _FINAL for run in runs):
            return runs
        time.sleep(0.05)
    raise TimeoutError(f"runs of event {event_id} not finished after {timeout}s")


def describe(run: dict[str, Any]) -> str:
    """A run as a few lines of text: status, duration, and one line per step."""
    took = (run["ended_at"] - run["started_at"]) if run["ended_at"] else 0
    lines = [f"run {run['run_id']}  {run['function_id']}  {run['status'].upper()}  "
             f"in {took} ms"]
    for step in run["steps"]:
        ms = (step["ended_at"] or 0) - (step["started_at"] or 0)
        lines.append(f"  {step['status']:<10} {step['id']:<28} attempts={step['attempts']} "
                     f"{ms:>4} ms  -> {json.dumps(step['output'])[:70]}")
    lines.append(f"  output: {json.dumps(run['output'])[:100]}")
    if run["error"]:
        lines.append(f"  error: {run['error']['type']}: {run['error']['message']}")
    return "\n".join(lines)


def _demo(settings: Settings, base_url: str, mail: MailSink) -> None:
    data_dir = Path(__file__).resolve().parent.parent / "examples" / "data"
    client = Stepstream("dev-demo", settings=settings)
    try:
        for sample in ("contacts_valid.csv", "contacts_invalid.csv"):
            started = time.monotonic()
            event_id = client.send("api/contact_list.uploaded", {
                "file": str(data_dir / sample), "user_email": "owner@example.com"})
            runs = wait_for_runs(base_url, event_id)
            elapsed = (time.monotonic() - started) * 1000
            print(f"\nevent {event_id} ({sample}): finished in {elapsed:.0f} ms end to end")
            for run in runs:
                print(describe(run))
    finally:
        client.close()
    print(f"\nmail received by the SMTP sink ({len(mail.messages)}):")
    for message in mail.messages:
        print(f"  to {', '.join(message.rcpt_tos)}: {message.subject}")


def run_dev(*, module: str = "examples.contacts", demo: bool = True, stay: bool = True,
            http_port: int = 8288) -> int:
    """Run the embedded default until Ctrl-C (or until the demo is done, ``stay=False``)."""
    workdir = Path(".stepstream") / "dev"
    workdir.mkdir(parents=True, exist_ok=True)
    base = Settings.from_env()
    broker = DevBroker(port=_port_or_free(9092), log_path=workdir / "broker.log").start()
    redis = DevRedis(url=base.redis_url).start(workdir)
    mail = MailSink(port=_port_or_free(8025), mbox_path=workdir / "mail.mbox").start()
    settings = base.with_(brokers=broker.bootstrap, redis_url=redis.url)
    worker = WorkerProcess(module, env={
        "STEPSTREAM_BROKERS": settings.brokers,
        "STEPSTREAM_REDIS_URL": settings.redis_url,
        "STEPSTREAM_NAMESPACE": settings.namespace,
        "STEPSTREAM_SMTP_PORT": str(mail.port),
        "CONTACTS_DB": str((workdir / "contacts.db").resolve()),
        "STEPSTREAM_EXAMPLE_OUTPUT_DIR": str((workdir / "enriched").resolve()),
    }, http_port=_port_or_free(http_port), log_path=workdir / "worker.log", cwd=os.getcwd())
    try:
        worker.start().wait_ready()
        print(f"stepstream dev ({module})\n"
              f"  broker   {broker.bootstrap}  (Tansu, memory storage)\n"
              f"  redis    {redact_url(redis.url)}\n"
              f"  smtp     127.0.0.1:{mail.port}  (sink; mbox {workdir / 'mail.mbox'})\n"
              f"  worker   {worker.url}  (/metrics, /v1/runs/ID, /v1/events/ID/runs)\n"
              f"  logs     {workdir}/", flush=True)
        if demo:
            _demo(settings, worker.url, mail)
        if stay:
            print("\nrunning; send events with `stepstream send NAME --data JSON` "
                  f"(STEPSTREAM_BROKERS={broker.bootstrap}). Ctrl-C stops.", flush=True)
            assert worker.process is not None
            worker.process.wait()
        return 0
    finally:
        worker.stop()
        mail.stop()
        redis.stop()
        broker.stop()
