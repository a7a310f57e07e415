"""Fixtures of the chaos tests: a PostgreSQL schema per test, and the full/CI switch.

Every chaos test runs in the default suite in a short variant; ``STEPSTREAM_CHAOS_FULL=1``
runs the long one (hundreds of runs, a kill every few seconds, longer outages).
The steps record their executions in PostgreSQL (``STEPSTREAM_TEST_DATABASE_URL``,
default the machine's server with trust auth); without one, these tests skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.chaos.functions import SCHEMA

FULL = os.environ.get("STEPSTREAM_CHAOS_FULL", "") not in ("", "0")
DATABASE_URL = os.environ.get("STEPSTREAM_TEST_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def database() -> Iterator[str]:
    """A DSN whose search path is a fresh schema holding the ``executions`` table."""
    import psycopg

    schema = f"chaos_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(SCHEMA)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {DATABASE_URL}: {exc}")
    sep = "&" if "?" in DATABASE_URL else "?"
    try:
        yield f"{DATABASE_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
