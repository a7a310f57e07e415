"""The plain work behind the contacts example: validate, enrich, store, and email.

Nothing here knows about stepstream. Each public function is an ordinary blocking function
that takes and returns JSON-friendly values, so it can be unit tested on its own and
wrapped as a durable step by ``examples/contacts.py``.

Configuration comes from the environment, read when a function is called (never at import):

    STEPSTREAM_EXAMPLE_OUTPUT_DIR  where enriched CSVs go (default: next to the input file)
    CONTACTS_DATABASE_URL          a postgresql:// DSN; if set, contacts go to PostgreSQL
    CONTACTS_DB                    otherwise, the SQLite file to use (default: contacts.db)
    STEPSTREAM_SMTP_HOST           SMTP server host (default: 127.0.0.1)
    STEPSTREAM_SMTP_PORT           SMTP server port (default: 8025)
    STEPSTREAM_MAIL_FROM           sender address (default: contacts@stepstream.local)

Errors that no retry can fix (a missing file, a bad setting) are raised as
:class:`PermanentError`; everything else is left to propagate so the caller may retry.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import re
import smtplib
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Protocol, TypedDict

import zipcodes

REQUIRED_COLUMNS: tuple[str, ...] = ("email", "first_name", "last_name", "street", "city", "zip")
"""Columns an uploaded CSV must have; extra columns are allowed and ignored."""

ENRICHED_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "state", "county", "lat", "long")
"""Columns of the enriched CSV written by :func:`enrich_addresses`."""

MAX_REPORTED_ERRORS = 100
"""Cap on the errors returned by :func:`validate_csv`.

Step results are stored in Kafka, where a message has a size limit; a file with a
million bad rows must not produce a million-entry result.
"""

DEFAULT_SMTP_HOST = "127.0.0.1"
DEFAULT_SMTP_PORT = 8025
DEFAULT_MAIL_FROM = "contacts@stepstream.local"
DEFAULT_SQLITE_PATH = "contacts.db"

SUCCESS_SUBJECT = "Your contact list was imported"
FAILURE_SUBJECT = "Your contact list could not be imported"

# Deliberately simple: it catches typos ("jane.example.com", "jane@example") without trying
# to implement RFC 5322, which accepts addresses no mail provider would.
_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_ZIP = re.compile(r"^\d{5}$")


class PermanentError(Exception):
    """A failure that retrying cannot fix, such as a missing file or a bad setting."""


class RowError(TypedDict):
    """One validation problem. ``row`` 0 is the file itself (header, emptiness)."""

    row: int
    column: str | None
    message: str


class ValidationResult(TypedDict):
    """What :func:`validate_csv` returns."""

    is_valid: bool
    errors: list[RowError]
    error_count: int
    rows: int


class EnrichmentResult(TypedDict):
    """What :func:`enrich_addresses` returns."""

    enriched_file: str
    matched: int
    unmatched: int


class InsertResult(TypedDict):
    """What :func:`insert_contacts` returns."""

    total_users_added: int


class SentEmail(TypedDict):
    """What the ``send_*`` functions return: enough to find the message in a mailbox."""

    to: str
    subject: str
    message_id: str


# --------------------------------------------------------------------------- validation


def validate_csv(path: str) -> ValidationResult:
    """Check an uploaded contacts CSV.

    The header must contain every column of :data:`REQUIRED_COLUMNS` (names are matched
    case-insensitively, surrounding blanks ignored). Each data row must have a plausible
    email, non-empty ``first_name`` and ``last_name``, and a 5-digit ``zip``.

    Data rows are numbered from 1: the first record after the header is row 1, so row ``n``
    is row ``n + 1`` in a spreadsheet. Blank rows keep their number but are otherwise
    skipped. Problems with the file as a whole (missing columns, no data rows) are row 0.

    Args:
        path: Path of the CSV file to check.

    Returns:
        ``{"is_valid", "errors", "error_count", "rows"}``, where ``errors`` lists at most
        :data:`MAX_REPORTED_ERRORS` problems, ``error_count`` counts all of them, and
        ``rows`` is the number of non-blank data rows.

    Raises:
        PermanentError: If the file does not exist.
    """
    errors: list[RowError] = []
    rows = 0
    with _read_csv(path) as (header, records):
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if not header:
            errors.append(_error(0, None, "the file is empty; expected a header row"))
        elif missing:
            errors.extend(_error(0, c, f"required column {c!r} is missing") for c in missing)
        else:
            for number, record in records:
                rows += 1
                errors.extend(_check_row(number, record))
            if rows == 0:
                errors.append(_error(0, None, "the file has a header but no contacts"))
    return {
        "is_valid": not errors,
        "errors": errors[:MAX_REPORTED_ERRORS],
        "error_count": len(errors),
        "rows": rows,
    }


def _check_row(row: int, record: dict[str, str]) -> Iterator[RowError]:
    """Yield the problems of one data row."""
    if not _EMAIL.match(record["email"]) or ".." in record["email"]:
        yield _error(row, "email", f"{record['email']!r} is not a valid email address")
    for column in ("first_name", "last_name"):
        if not record[column]:
            yield _error(row, column, f"{column} must not be empty")
    if not _ZIP.match(record["zip"]):
        yield _error(row, "zip", f"{record['zip']!r} is not a 5-digit ZIP code")


def _error(row: int, column: str | None, message: str) -> RowError:
    return {"row": row, "column": column, "message": message}


# --------------------------------------------------------------------------- enrichment


def lookup_zip(zip_code: str) -> dict[str, str]:
    """Look up a US ZIP code offline with the ``zipcodes`` package.

    Args:
        zip_code: A ZIP code such as ``"94103"``.

    Returns:
        ``{"state", "county", "lat", "long"}``; every value is ``""`` when the code is
        unknown or malformed.
    """
    return dict(_lookup_zip_cached(zip_code))


@functools.cache
def _lookup_zip_cached(zip_code: str) -> tuple[tuple[str, str], ...]:
    # zipcodes scans its whole table per call, and uploads repeat the same few ZIPs.
    try:
        matches = zipcodes.matching(zip_code)  # type: ignore[no-untyped-call]
    except (TypeError, ValueError):
        matches = []
    found: dict[str, Any] = matches[0] if matches else {}
    return tuple((key, str(found.get(key) or "")) for key in ("state", "county", "lat", "long"))


def enrich_addresses(path: str, output_dir: str | None = None) -> EnrichmentResult:
    """Add ``state``, ``county``, ``lat`` and ``long`` to every row of a validated CSV.

    The enriched file is named ``<name>.enriched.csv``. It is written to a temporary file
    and renamed into place, so a crash mid-write never leaves a half file for the next step,
    and running this again simply rewrites the same output.

    Args:
        path: Path of a CSV that passed :func:`validate_csv`.
        output_dir: Directory for the enriched file. Defaults to the env variable
            ``STEPSTREAM_EXAMPLE_OUTPUT_DIR``, else the input file's directory.

    Returns:
        ``{"enriched_file", "matched", "unmatched"}``: the output path and how many rows
        had a ZIP code that was found or not found.

    Raises:
        PermanentError: If the input file does not exist.
    """
    source = Path(path)
    target_dir = Path(
        output_dir or os.environ.get("STEPSTREAM_EXAMPLE_OUTPUT_DIR") or source.parent
    )
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{source.stem}.enriched.csv"

    matched = unmatched = 0
    with _read_csv(path) as (_, records), _atomic_writer(target) as out:
        writer = csv.DictWriter(out, fieldnames=ENRICHED_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for _, record in records:
            place = lookup_zip(record["zip"])
            if place["state"]:
                matched += 1
            else:
                unmatched += 1
            writer.writerow({**record, **place})
    return {"enriched_file": str(target), "matched": matched, "unmatched": unmatched}


@contextlib.contextmanager
def _atomic_writer(target: Path) -> Iterator[Any]:
    """Open a temporary file beside ``target`` and move it over ``target`` on success."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- database

_SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS contacts (
    email      TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    street     TEXT,
    city       TEXT,
    zip        TEXT,
    state      TEXT,
    county     TEXT,
    lat        REAL,
    long       REAL,
    list_id    TEXT,
    updated_at TEXT NOT NULL
)"""

_POSTGRES_DDL = """
CREATE TABLE IF NOT EXISTS contacts (
    email      TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    street     TEXT,
    city       TEXT,
    zip        TEXT,
    state      TEXT,
    county     TEXT,
    lat        DOUBLE PRECISION,
    long       DOUBLE PRECISION,
    list_id    TEXT,
    updated_at TIMESTAMPTZ NOT NULL
)"""

_TABLE_COLUMNS: tuple[str, ...] = (*ENRICHED_COLUMNS, "list_id", "updated_at")


def _upsert_sql(placeholder: str) -> str:
    """The idempotent insert: a retried step overwrites the rows it already wrote."""
    columns = ", ".join(_TABLE_COLUMNS)
    values = ", ".join([placeholder] * len(_TABLE_COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _TABLE_COLUMNS if c != "email")
    return (
        f"INSERT INTO contacts ({columns}) VALUES ({values}) "
        f"ON CONFLICT (email) DO UPDATE SET {updates}"
    )


class _Cursor(Protocol):
    """The part of a DB-API cursor used here; sqlite3 and psycopg both provide it."""

    def execute(self, sql: str, /) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


def insert_contacts(path: str, list_id: str, database: str | None = None) -> InsertResult:
    """Upsert the contacts of an enriched CSV into the ``contacts`` table.

    The table is created if missing. All rows are written in one transaction, keyed by
    email (lower-cased), so running this twice leaves the same rows; when an email appears
    more than once in the file, its last row wins.

    Args:
        path: Path of a CSV written by :func:`enrich_addresses`.
        list_id: Identifier of the uploaded list, stored with each contact.
        database: A ``postgresql://`` DSN or an SQLite file path. Defaults to the env
            variable ``CONTACTS_DATABASE_URL``, else ``CONTACTS_DB``, else ``contacts.db``
            in the working directory.

    Returns:
        ``{"total_users_added": n}``, the number of distinct contacts upserted.

    Raises:
        PermanentError: If the file does not exist, ``CONTACTS_DATABASE_URL`` is not a
            PostgreSQL DSN, or psycopg is needed but not installed.
    """
    target = database or os.environ.get("CONTACTS_DATABASE_URL") or ""
    if target and "://" in target and not _is_postgres_dsn(target):
        raise PermanentError(f"unsupported database URL {_redact(target)!r}; use postgresql://")
    if not target:
        target = os.environ.get("CONTACTS_DB") or DEFAULT_SQLITE_PATH

    updated_at = datetime.now(UTC)
    rows = _contact_rows(path, list_id, updated_at)
    if _is_postgres_dsn(target):
        _write_postgres(target, rows)
    else:
        _write_sqlite(target, rows)
    return {"total_users_added": len(rows)}


def _contact_rows(path: str, list_id: str, updated_at: datetime) -> list[tuple[Any, ...]]:
    """Read the enriched CSV into table rows (in ``_TABLE_COLUMNS`` order), one per email."""
    by_email: dict[str, tuple[Any, ...]] = {}
    with _read_csv(path) as (_, records):
        for _, record in records:
            # Mail providers treat addresses case-insensitively; so does our primary key.
            email = record["email"].lower()
            by_email[email] = (
                email,
                record["first_name"],
                record["last_name"],
                record["street"],
                record["city"],
                record["zip"],
                record.get("state", ""),
                record.get("county", ""),
                _float_or_none(record.get("lat", "")),
                _float_or_none(record.get("long", "")),
                list_id,
                updated_at,
            )
    return list(by_email.values())


def _write_sqlite(db_path: str, rows: list[tuple[Any, ...]]) -> None:
    # sqlite3 has no adapter for aware datetimes in 3.12+, so store ISO-8601 text.
    text_rows = [(*row[:-1], row[-1].isoformat()) for row in rows]
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn, conn:
        _upsert(conn.cursor(), _SQLITE_DDL, _upsert_sql("?"), text_rows)


def _write_postgres(dsn: str, rows: list[tuple[Any, ...]]) -> None:
    try:
        import psycopg  # only needed, and only required to be installed, for PostgreSQL
    except ImportError as exc:
        raise PermanentError("CONTACTS_DATABASE_URL needs psycopg: pip install psycopg") from exc
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:  # commits on clean exit
        _upsert(cur, _POSTGRES_DDL, _upsert_sql("%s"), rows)


def _upsert(cur: _Cursor, ddl: str, upsert: str, rows: Sequence[Sequence[Any]]) -> None:
    cur.execute(ddl)
    cur.executemany(upsert, rows)


def _is_postgres_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into an error message."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _float_or_none(value: str) -> float | None:
    return float(value) if value.strip() else None


# --------------------------------------------------------------------------- email


def send_email(to: str, subject: str, body: str) -> SentEmail:
    """Send a plain-text email over SMTP.

    The server and sender come from ``STEPSTREAM_SMTP_HOST``, ``STEPSTREAM_SMTP_PORT``
    and ``STEPSTREAM_MAIL_FROM``. A step that sends mail is at-least-once: if the worker
    dies after sending but before the step is recorded, the retry sends it again.

    Args:
        to: Recipient address.
        subject: Subject line.
        body: Plain-text body.

    Returns:
        ``{"to", "subject", "message_id"}`` of the sent message.

    Raises:
        PermanentError: If ``STEPSTREAM_SMTP_PORT`` is not a number.
    """
    host = os.environ.get("STEPSTREAM_SMTP_HOST") or DEFAULT_SMTP_HOST
    port_text = os.environ.get("STEPSTREAM_SMTP_PORT") or str(DEFAULT_SMTP_PORT)
    if not port_text.isdigit():
        raise PermanentError(f"STEPSTREAM_SMTP_PORT={port_text!r} is not a port number")
    message = EmailMessage()
    message["From"] = os.environ.get("STEPSTREAM_MAIL_FROM") or DEFAULT_MAIL_FROM
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="stepstream.local")
    message.set_content(body)
    with smtplib.SMTP(host, int(port_text), timeout=30) as smtp:
        smtp.send_message(message)
    return {"to": to, "subject": subject, "message_id": message["Message-ID"]}


def send_failure_email(
    to: str, errors: list[RowError], error_count: int | None = None
) -> SentEmail:
    """Tell the uploader why their list was rejected.

    Args:
        to: The uploader's address.
        errors: Problems from :func:`validate_csv`.
        error_count: Total number of problems, when ``errors`` was capped.

    Returns:
        See :func:`send_email`.
    """
    return send_email(to, FAILURE_SUBJECT, failure_body(errors, error_count))


def send_success_email(to: str, total_users_added: int) -> SentEmail:
    """Tell the uploader how many contacts were imported.

    Args:
        to: The uploader's address.
        total_users_added: Number of contacts written.

    Returns:
        See :func:`send_email`.
    """
    return send_email(to, SUCCESS_SUBJECT, success_body(total_users_added))


def failure_body(errors: list[RowError], error_count: int | None = None) -> str:
    """The text of the rejection email, one line per problem.

    Args:
        errors: Problems from :func:`validate_csv`.
        error_count: Total number of problems, when ``errors`` was capped.

    Returns:
        The email body.
    """
    lines = ["We could not import your contact list because of these problems:", ""]
    for err in errors:
        where = "file" if err["row"] == 0 else f"row {err['row']}"
        column = f", column {err['column']}" if err["column"] else ""
        lines.append(f"  - {where}{column}: {err['message']}")
    hidden = (error_count or len(errors)) - len(errors)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more.")
    lines += ["", "Rows are numbered from 1, starting after the header line.", ""]
    lines.append("Please fix the file and upload it again.")
    return "\n".join(lines) + "\n"


def success_body(total_users_added: int) -> str:
    """The text of the success email.

    Args:
        total_users_added: Number of contacts written.

    Returns:
        The email body.
    """
    noun = "contact" if total_users_added == 1 else "contacts"
    return f"Your contact list was imported: {total_users_added} {noun} added or updated.\n"


# --------------------------------------------------------------------------- helpers


Record = dict[str, str]


@contextlib.contextmanager
def _read_csv(path: str) -> Iterator[tuple[list[str], Iterator[tuple[int, Record]]]]:
    """Open a CSV; yield its header and its non-blank records as ``(row_number, record)``.

    Header names are lower-cased and stripped, and so are cell values (stripped only), so
    ``" Email "`` matches ``email``. A record short of cells gets ``""`` for the missing
    ones; cells beyond the header are dropped.

    Raises:
        PermanentError: If the file does not exist.
    """
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports often start with.
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise PermanentError(f"CSV file not found: {path}") from exc
    with handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        yield header, _records(header, reader)


def _records(header: list[str], reader: Iterator[list[str]]) -> Iterator[tuple[int, Record]]:
    for number, cells in enumerate(reader, start=1):
        if not any(cell.strip() for cell in cells):
            continue  # trailing blank lines are common in hand-edited files
        padded = [*cells, *[""] * (len(header) - len(cells))]
        yield number, {name: value.strip() for name, value in zip(header, padded, strict=False)}
