"""Unit tests of the contacts example's plain work, with a real SMTP sink and SQLite.

A PostgreSQL test runs too when ``CONTACTS_TEST_DATABASE_URL`` names a server to use.
"""

from __future__ import annotations

import csv
import mailbox
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from examples import contacts_work as work
from stepstream.devsmtp import MailSink, ReceivedMail

DATA = Path(work.__file__).parent / "data"
VALID = DATA / "contacts_valid.csv"
INVALID = DATA / "contacts_invalid.csv"
HEADER = "email,first_name,last_name,street,city,zip\n"

_ENV = (
    "STEPSTREAM_EXAMPLE_OUTPUT_DIR",
    "CONTACTS_DATABASE_URL",
    "CONTACTS_DB",
    "STEPSTREAM_SMTP_HOST",
    "STEPSTREAM_SMTP_PORT",
    "STEPSTREAM_MAIL_FROM",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from the defaults, in a scratch working directory."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailSink]:
    """A running SMTP sink that the work functions are configured to send to."""
    with MailSink(port=0) as running:
        monkeypatch.setenv("STEPSTREAM_SMTP_HOST", running.host)
        monkeypatch.setenv("STEPSTREAM_SMTP_PORT", str(running.port))
        yield running


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    """A copy of the valid sample in a scratch directory, so outputs land there."""
    target = tmp_path / "upload" / "contacts.csv"
    target.parent.mkdir()
    shutil.copy(VALID, target)
    return target


def write_csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- validation


def test_valid_sample_passes() -> None:
    result = work.validate_csv(str(VALID))
    assert result == {"is_valid": True, "errors": [], "error_count": 0, "rows": 20}


def test_invalid_sample_reports_each_problem_by_row_and_column() -> None:
    result = work.validate_csv(str(INVALID))
    assert result["is_valid"] is False
    assert result["rows"] == 6
    assert [(e["row"], e["column"]) for e in result["errors"]] == [
        (2, "email"),
        (3, "first_name"),
        (4, "zip"),
        (6, "email"),
        (6, "zip"),
    ]
    assert result["error_count"] == 5


def test_missing_file_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(work.PermanentError, match="not found"):
        work.validate_csv(str(tmp_path / "nope.csv"))


def test_missing_columns_are_reported_as_row_0(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", "email,first_name,last_name\na@example.com,A,B\n")
    result = work.validate_csv(path)
    assert not result["is_valid"]
    assert [(e["row"], e["column"]) for e in result["errors"]] == [
        (0, "street"),
        (0, "city"),
        (0, "zip"),
    ]


@pytest.mark.parametrize("text", ["", HEADER, HEADER + "\n\n"])
def test_file_without_contacts_is_invalid(tmp_path: Path, text: str) -> None:
    result = work.validate_csv(write_csv(tmp_path / "f.csv", text))
    assert not result["is_valid"]
    assert result["rows"] == 0
    assert result["errors"][0]["row"] == 0


def test_header_is_matched_loosely_and_cells_are_stripped(tmp_path: Path) -> None:
    text = (
        "\ufeff Email ,First_Name,last_name,street,city,ZIP,notes\n"
        " a@example.com ,A,B,1 Main,X, 94103 ,hi\n"
    )
    result = work.validate_csv(write_csv(tmp_path / "f.csv", text))
    assert result["is_valid"], result["errors"]


def test_blank_rows_keep_their_number(tmp_path: Path) -> None:
    text = HEADER + "a@example.com,A,B,1 Main,X,94103\n\nbad,A,B,1 Main,X,94103\n"
    result = work.validate_csv(write_csv(tmp_path / "f.csv", text))
    assert result["rows"] == 2
    assert [(e["row"], e["column"]) for e in result["errors"]] == [(3, "email")]


def test_reported_errors_are_capped(tmp_path: Path) -> None:
    bad = "".join(f"user{i}@example.com,,B,1 Main,X,94103\n" for i in range(150))
    result = work.validate_csv(write_csv(tmp_path / "f.csv", HEADER + bad))
    assert len(result["errors"]) == work.MAX_REPORTED_ERRORS
    assert result["error_count"] == 150


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", "ada.lovelace+news@mail.example.co.uk", "o'neil@example.org"],
)
def test_plausible_emails_pass(tmp_path: Path, email: str) -> None:
    path = write_csv(tmp_path / "f.csv", HEADER + f"{email},A,B,1 Main,X,94103\n")
    assert work.validate_csv(path)["is_valid"]


@pytest.mark.parametrize(
    "email", ["", "ada", "ada@", "@example.com", "ada@example", "ada..x@example.com", "a b@x.com"]
)
def test_implausible_emails_fail(tmp_path: Path, email: str) -> None:
    path = write_csv(tmp_path / "f.csv", HEADER + f"{email},A,B,1 Main,X,94103\n")
    assert [e["column"] for e in work.validate_csv(path)["errors"]] == ["email"]


@pytest.mark.parametrize("zip_code", ["", "9410", "941033", "ABCDE", "94103-1234"])
def test_zip_must_be_five_digits(tmp_path: Path, zip_code: str) -> None:
    path = write_csv(tmp_path / "f.csv", HEADER + f"a@example.com,A,B,1 Main,X,{zip_code}\n")
    assert [e["column"] for e in work.validate_csv(path)["errors"]] == ["zip"]


# --------------------------------------------------------------------------- enrichment


def test_lookup_known_zip() -> None:
    place = work.lookup_zip("94103")
    assert place["state"] == "CA"
    assert place["county"] == "San Francisco County"
    assert float(place["lat"]) == pytest.approx(37.77, abs=0.05)
    assert float(place["long"]) == pytest.approx(-122.41, abs=0.05)


@pytest.mark.parametrize("zip_code", ["00000", "ABCDE", ""])
def test_lookup_unknown_zip_is_blank(zip_code: str) -> None:
    assert work.lookup_zip(zip_code) == {"state": "", "county": "", "lat": "", "long": ""}


def read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_enrichment_writes_next_to_input(upload: Path) -> None:
    result = work.enrich_addresses(str(upload))
    assert result == {
        "enriched_file": str(upload.parent / "contacts.enriched.csv"),
        "matched": 20,
        "unmatched": 0,
    }
    header, rows = read_rows(result["enriched_file"])
    assert header == list(work.ENRICHED_COLUMNS)
    assert len(rows) == 20
    ny = next(r for r in rows if r["zip"] == "10118")
    assert (ny["state"], ny["county"]) == ("NY", "New York County")
    assert ny["lat"] and ny["long"]
    # Quoted cells with commas survive the round trip.
    assert any(r["street"] == "1111 Lincoln Rd, Suite 400" for r in rows)
    assert not list(upload.parent.glob("*.tmp"))


def test_enrichment_honours_output_dir_env(
    upload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "nested"
    monkeypatch.setenv("STEPSTREAM_EXAMPLE_OUTPUT_DIR", str(out))
    result = work.enrich_addresses(str(upload))
    assert result["enriched_file"] == str(out / "contacts.enriched.csv")
    assert Path(result["enriched_file"]).is_file()


def test_enrichment_leaves_unknown_zip_blank(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "f.csv",
        HEADER + "a@example.com,A,B,1 Main,X,00000\nb@example.com,B,C,2 Main,Y,60606\n",
    )
    result = work.enrich_addresses(path)
    assert (result["matched"], result["unmatched"]) == (1, 1)
    _, rows = read_rows(result["enriched_file"])
    assert [r["state"] for r in rows] == ["", "IL"]
    assert rows[0]["lat"] == rows[0]["long"] == rows[0]["county"] == ""


# --------------------------------------------------------------------------- database


def sqlite_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT email, state, county, lat, long, list_id FROM contacts ORDER BY email"
        ).fetchall()


def test_sqlite_upsert_is_idempotent(upload: Path, tmp_path: Path) -> None:
    enriched = work.enrich_addresses(str(upload))["enriched_file"]
    db = tmp_path / "contacts.db"

    assert work.insert_contacts(enriched, "list-1", str(db)) == {"total_users_added": 20}
    first = sqlite_rows(db)
    assert work.insert_contacts(enriched, "list-1", str(db)) == {"total_users_added": 20}

    assert sqlite_rows(db) == first
    assert len(first) == 20
    ada = next(r for r in first if r[0] == "ada.lovelace@example.com")
    assert ada[1:3] == ("NY", "New York County")
    assert isinstance(ada[3], float) and isinstance(ada[4], float)
    assert ada[5] == "list-1"


def test_sqlite_path_comes_from_env_then_default(
    upload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enriched = work.enrich_addresses(str(upload))["enriched_file"]
    work.insert_contacts(enriched, "list-1")
    assert len(sqlite_rows(tmp_path / "contacts.db")) == 20  # the working directory

    monkeypatch.setenv("CONTACTS_DB", str(tmp_path / "other.db"))
    work.insert_contacts(enriched, "list-1")
    assert len(sqlite_rows(tmp_path / "other.db")) == 20


def test_upsert_updates_existing_contact_and_merges_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    first = write_csv(tmp_path / "a.csv", HEADER + "Ada@Example.com,Ada,L,1 Main,X,94103\n")
    work.insert_contacts(first, "list-1", str(db))
    second = write_csv(
        tmp_path / "b.csv",
        HEADER + "ada@example.com,Ada,Old,1 Main,X,94103\nADA@example.com,Ada,New,2 Main,Y,60606\n",
    )
    assert work.insert_contacts(second, "list-2", str(db)) == {"total_users_added": 1}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT email, last_name, street, list_id FROM contacts").fetchall()
    assert rows == [("ada@example.com", "New", "2 Main", "list-2")]


def test_unsupported_database_url_is_permanent(
    upload: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTACTS_DATABASE_URL", "mysql://user:secret@db/contacts")
    with pytest.raises(work.PermanentError, match="unsupported") as info:
        work.insert_contacts(str(upload), "list-1")
    assert "secret" not in str(info.value)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A DSN into a fresh schema of the server named by CONTACTS_TEST_DATABASE_URL."""
    base = os.environ.get("CONTACTS_TEST_DATABASE_URL")
    if not base:
        pytest.skip("set CONTACTS_TEST_DATABASE_URL to a postgresql:// DSN to run this")
    psycopg = pytest.importorskip("psycopg")
    schema = f"contacts_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_postgres_upsert_is_idempotent(upload: Path, postgres_url: str) -> None:
    import psycopg

    enriched = work.enrich_addresses(str(upload))["enriched_file"]
    for _ in range(2):
        assert work.insert_contacts(enriched, "list-1", postgres_url) == {"total_users_added": 20}
    with psycopg.connect(postgres_url) as conn:
        count, states = conn.execute(
            "SELECT count(*), count(DISTINCT state) FROM contacts"
        ).fetchone()
    assert (count, states) == (20, 19)


# --------------------------------------------------------------------------- email


def test_success_email_is_delivered(sink: MailSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPSTREAM_MAIL_FROM", "imports@example.com")
    sent = work.send_success_email("owner@example.com", 20)

    mail = sink.wait_for(lambda m: m.subject == work.SUCCESS_SUBJECT, timeout=5)
    assert sent["message_id"] == mail.message["Message-ID"]
    assert mail.mail_from == "imports@example.com"
    assert mail.rcpt_tos == ["owner@example.com"]
    assert "20 contacts" in mail.body


def test_failure_email_lists_the_errors(sink: MailSink) -> None:
    check = work.validate_csv(str(INVALID))
    work.send_failure_email("owner@example.com", check["errors"], check["error_count"])

    mail = sink.wait_for(timeout=5)
    assert mail.subject == "Your contact list could not be imported"
    assert mail.message["From"] == work.DEFAULT_MAIL_FROM
    for line in ("row 2, column email", "row 3, column first_name", "row 4, column zip"):
        assert line in mail.body
    assert "more" not in mail.body


def test_failure_body_mentions_hidden_errors() -> None:
    errors: list[work.RowError] = [{"row": 1, "column": "zip", "message": "bad"}]
    assert "... and 41 more." in work.failure_body(errors, 42)
    assert "file, column zip: bad" in work.failure_body([{**errors[0], "row": 0}])


def test_bad_smtp_port_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPSTREAM_SMTP_PORT", "smtp")
    with pytest.raises(work.PermanentError):
        work.send_success_email("owner@example.com", 1)


def test_unreachable_smtp_server_is_retriable(monkeypatch: pytest.MonkeyPatch) -> None:
    with MailSink(port=0) as stopped:
        port = stopped.port
    monkeypatch.setenv("STEPSTREAM_SMTP_PORT", str(port))
    with pytest.raises(OSError):
        work.send_success_email("owner@example.com", 1)


def test_sink_picks_a_port_and_writes_mbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box_path = tmp_path / "mail.mbox"
    seen: list[ReceivedMail] = []
    with MailSink(port=0, mbox_path=box_path, on_message=seen.append) as sink:
        assert sink.port != 0
        monkeypatch.setenv("STEPSTREAM_SMTP_PORT", str(sink.port))
        work.send_success_email("one@example.com", 1)
        work.send_success_email("two@example.com", 2)
        second = sink.wait_for(lambda m: m.rcpt_tos == ["two@example.com"], timeout=5)
    assert "2 contacts" in second.body
    assert [m.rcpt_tos for m in seen] == [["one@example.com"], ["two@example.com"]]
    box = mailbox.mbox(box_path)
    assert [m["To"] for m in box] == ["one@example.com", "two@example.com"]
    box.close()


def test_sink_wait_for_times_out() -> None:
    with MailSink(port=0) as sink, pytest.raises(TimeoutError):
        sink.wait_for(timeout=0.05)


async def test_sink_async_wait_does_not_block_the_loop(sink: MailSink) -> None:
    import asyncio

    sending = asyncio.create_task(asyncio.to_thread(work.send_success_email, "a@example.com", 3))
    mail = await sink.wait_for_async(lambda m: m.rcpt_tos == ["a@example.com"], timeout=5)
    await sending
    assert "3 contacts" in mail.body


# --------------------------------------------------------------------------- the workflow


class RecordingStep:
    """Runs each step at once, in order, recording its id: the handler's happy path."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def run(self, step_id: str, fn: Any, *args: Any) -> Any:
        self.ids.append(step_id)
        result = fn(*args)
        return await result if hasattr(result, "__await__") else result


def make_ctx(data: dict[str, Any]) -> SimpleNamespace:
    event = SimpleNamespace(id="evt-1", name="api/contact_list.uploaded", data=data)
    return SimpleNamespace(event=event, step=RecordingStep())


async def test_workflow_imports_a_valid_list(upload: Path, tmp_path: Path, sink: MailSink) -> None:
    contacts = pytest.importorskip("examples.contacts")
    ctx = make_ctx({"file": str(upload), "user_email": "owner@example.com"})

    result = await contacts.process_upload(ctx)

    assert result == {"status": "imported", "total_users_added": 20}
    assert ctx.step.ids == [
        "validate-csv",
        "enrich-address-information",
        "insert-contacts",
        "send-success-email",
    ]
    assert sqlite_rows(tmp_path / "contacts.db")[0][5] == "evt-1"  # list_id from the event id
    await sink.wait_for_async(lambda m: m.subject == work.SUCCESS_SUBJECT, timeout=5)


async def test_workflow_rejects_an_invalid_list(sink: MailSink) -> None:
    contacts = pytest.importorskip("examples.contacts")
    ctx = make_ctx({"file": str(INVALID), "user_email": "owner@example.com"})

    result = await contacts.process_upload(ctx)

    assert result["status"] == "invalid"
    assert len(result["errors"]) == 5
    assert ctx.step.ids == ["validate-csv", "send-failure-email"]
    await sink.wait_for_async(lambda m: m.subject == work.FAILURE_SUBJECT, timeout=5)


async def test_workflow_missing_file_fails_without_retry(tmp_path: Path) -> None:
    contacts = pytest.importorskip("examples.contacts")
    from stepstream import NonRetriableError

    ctx = make_ctx({"file": str(tmp_path / "gone.csv"), "user_email": "owner@example.com"})
    with pytest.raises(NonRetriableError, match="not found"):
        await contacts.process_upload(ctx)
