"""Sleeps and event waits live in Kafka, not in a worker: they survive SIGKILL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepstream import Stepstream
from stepstream.devsmtp import MailSink
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import get_json, wait_for, wait_for_run


def step_status(base_url: str, run_id: str, step_id: str) -> str | None:
    run: dict[str, Any] | None = get_json(f"{base_url}/v1/runs/{run_id}")
    step = next((s for s in (run or {}).get("steps", []) if s["id"] == step_id), None)
    return None if step is None else str(step["status"])


def test_sleeping_and_waiting_runs_survive_a_killed_worker(
        settings: Settings, start_worker: WorkerFactory) -> None:
    victim = start_worker("tests.integration.toolkit_functions")
    client = Stepstream("t", settings=settings)
    sleeper = run_id_for("sleeper", client.send("kit/sleep", {"seconds": 4}))
    approver = run_id_for("approver", client.send("kit/invoice.created",
                                                  {"invoice_id": "inv-k", "timeout": 120}))
    wait_for(lambda: step_status(victim.url, sleeper, "nap") == "sleeping", what="sleeping")
    wait_for(lambda: step_status(victim.url, approver, "wait-approval") == "waiting",
             what="waiting")

    victim.kill()
    survivor = start_worker("tests.integration.toolkit_functions")
    client.send("kit/invoice.approved", {"invoice_id": "inv-k", "by": "bob"})

    slept = wait_for_run(survivor.url, sleeper, timeout=60)
    approved = wait_for_run(survivor.url, approver, timeout=60)
    assert slept["status"] == "completed" and slept["output"]["slept"] >= 4
    assert approved["output"] == {"approved": True, "by": "bob"}


def test_onboarding_example_runs_parallel_steps_waits_and_sleeps(
        settings: Settings, start_worker: WorkerFactory, tmp_path: Path) -> None:
    with MailSink() as mail:
        worker = start_worker("examples.onboarding", STEPSTREAM_SMTP_PORT=str(mail.port),
                              ONBOARDING_DB=str(tmp_path / "onboarding.db"))
        client = Stepstream("t", settings=settings)
        active = run_id_for("onboard-user", client.send("app/user.signed_up", {
            "user_id": "u1", "email": "ada@example.com", "tips_after_hours": 0.0003}))
        idle = run_id_for("onboard-user", client.send("app/user.signed_up", {
            "user_id": "u2", "email": "bob@example.com", "wait_hours": 0.0005}))
        wait_for(lambda: step_status(worker.url, active, "wait-for-activation") == "waiting",
                 what="u1 waiting for activation")
        client.send("app/user.activated", {"user_id": "u1"})

        done = wait_for_run(worker.url, active)
        nudged = wait_for_run(worker.url, idle)
        assert done["output"] == {"activated": True, "workspace": "ws-u1"}
        assert nudged["output"] == {"activated": False, "workspace": "ws-u2"}
        subjects = {(m.rcpt_tos[0], m.subject) for m in mail.messages}
        assert ("ada@example.com", "Three tips for your first week") in subjects
        assert ("bob@example.com", "Need a hand?") in subjects
        assert ("ada@example.com", "Need a hand?") not in subjects
