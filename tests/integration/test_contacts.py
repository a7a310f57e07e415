"""The seed's CSV-upload workflow, end to end, with a real database and SMTP server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stepstream import Stepstream
from stepstream.devsmtp import MailSink
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import ROOT, WorkerFactory
from tests.integration.helpers import wait_for_run

DATA = ROOT / "examples" / "data"
FUNCTION = "process-contacts-csv-upload"


@pytest.fixture
def mail() -> MailSink:
    with MailSink() as sink:
        yield sink


def contacts_in(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE name='contacts'").fetchall()
        return conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] if tables else 0


def test_valid_and_invalid_uploads(settings: Settings, start_worker: WorkerFactory,
                                   mail: MailSink, tmp_path: Path) -> None:
    db = tmp_path / "contacts.db"
    worker = start_worker("examples.contacts", STEPSTREAM_SMTP_PORT=str(mail.port),
                          CONTACTS_DB=str(db), STEPSTREAM_EXAMPLE_OUTPUT_DIR=str(tmp_path))
    client = Stepstream("t", settings=settings)

    invalid = client.send("api/contact_list.uploaded", {
        "file": str(DATA / "contacts_invalid.csv"), "user_email": "bad@example.com"})
    run = wait_for_run(worker.url, run_id_for(FUNCTION, invalid))
    assert run["status"] == "completed"
    assert [s["id"] for s in run["steps"]] == ["validate-csv", "send-failure-email"]
    assert run["output"]["status"] == "invalid"
    assert {(e["row"], e["column"]) for e in run["steps"][0]["output"]["errors"]} >= {
        (2, "email"), (4, "zip")}
    assert contacts_in(db) == 0
    failure = mail.wait_for(lambda m: "bad@example.com" in m.rcpt_tos, timeout=30)
    assert failure.subject == "Your contact list could not be imported"

    valid = client.send("api/contact_list.uploaded", {
        "file": str(DATA / "contacts_valid.csv"), "user_email": "owner@example.com"})
    run = wait_for_run(worker.url, run_id_for(FUNCTION, valid))
    assert run["status"] == "completed", run["error"]
    assert [s["id"] for s in run["steps"]] == [
        "validate-csv", "enrich-address-information", "insert-contacts", "send-success-email"]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in run["steps"])
    starts = [s["started_at"] for s in run["steps"]]
    assert starts == sorted(starts)
    assert run["output"] == {"status": "imported", "total_users_added": 20}
    assert contacts_in(db) == 20
    with sqlite3.connect(db) as conn:
        states = {row[0] for row in conn.execute("SELECT state FROM contacts")}
    assert "" not in states  # every zip was enriched
    success = mail.wait_for(lambda m: "owner@example.com" in m.rcpt_tos, timeout=30)
    assert success.subject == "Your contact list was imported"
    assert "20" in success.body
