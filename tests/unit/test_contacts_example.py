"""The seed's CSV workflow (``examples/contacts.py``) under ``stepstream.testing.run``:
real validation, enrichment and SQLite inserts, mocked email, no broker."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from examples.contacts import process_upload
from stepstream.testing import run

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
OWNER = "owner@example.com"


def sent(to: str, subject: str = "mocked") -> dict[str, Any]:
    return {"to": to, "subject": subject, "message_id": "<mock@test>"}


@pytest.fixture(autouse=True)
def workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Enriched files and the contacts database go to the test's own directory."""
    monkeypatch.setenv("STEPSTREAM_EXAMPLE_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("CONTACTS_DB", str(tmp_path / "contacts.db"))
    monkeypatch.delenv("CONTACTS_DATABASE_URL", raising=False)
    return tmp_path


async def test_a_valid_csv_is_enriched_stored_and_the_uploader_told(workspace: Path) -> None:
    emails: list[tuple[str, int]] = []

    def success_email(to: str, total: int) -> dict[str, Any]:
        emails.append((to, total))
        return sent(to)

    result = await run(process_upload, {"file": str(DATA / "contacts_valid.csv"),
                                        "user_email": OWNER, "list_id": "list-1"},
                       mocks={"send-success-email": success_email})

    assert result.status == "completed"
    assert result.output == {"status": "imported", "total_users_added": 20}
    assert list(result.steps) == ["validate-csv", "enrich-address-information",
                                  "insert-contacts", "send-success-email"]
    assert emails == [(OWNER, 20)]
    with sqlite3.connect(workspace / "contacts.db") as db:
        assert db.execute("select count(*) from contacts").fetchone() == (20,)


async def test_an_invalid_csv_sends_the_failure_email_and_stops() -> None:
    result = await run(process_upload, {"file": str(DATA / "contacts_invalid.csv"),
                                        "user_email": OWNER},
                       mocks={"send-failure-email": sent(OWNER)})

    assert result.status == "completed"
    assert result.output["status"] == "invalid" and result.output["errors"]
    assert list(result.steps) == ["validate-csv", "send-failure-email"]
    assert result.steps["validate-csv"]["is_valid"] is False


async def test_an_email_step_failing_twice_succeeds_on_its_third_attempt() -> None:
    result = await run(process_upload, {"file": str(DATA / "contacts_valid.csv"),
                                        "user_email": OWNER},
                       mocks={"send-success-email": [ConnectionRefusedError,
                                                     ConnectionRefusedError, sent(OWNER)]})

    assert result.status == "completed"
    assert result.attempts["send-success-email"] == 3
    assert len(result.retry_delays["send-success-email"]) == 2
    assert all(n == 1 for step, n in result.attempts.items() if step != "send-success-email")
