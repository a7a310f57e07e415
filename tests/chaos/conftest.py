"""Fixtures of the chaos tests: a PostgreSQL schema per test, and the full/CI switch.

The poison-input and scale tests run in the default suite; the random-kill and outage
tests run with ``STEPSTREAM_CHAOS=1`` (short variant) or ``STEPSTREAM_CHAOS_FULL=1``
(hundreds of runs, a kill every few seconds, rebalance timings).
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
FAULTS = FULL or os.environ.get("STEPSTREAM_CHAOS", "") not in ("", "0")
"""The random-kill and outage tests are opt-in for now (``STEPSTREAM_CHAOS=1``): they
still fail at times (runs left stuck after rebalances and outages under Faust 0.15.3;
see the issue notes), and the default suite must stay a reliable gate. The kill -9
tests in tests/integration (a killed worker mid-run, mid-chain, while sleeping and
waiting) stay in it."""
_OPT_IN_FILES = {"test_chaos.py", "test_outages.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FAULTS:
        return
    skip = pytest.mark.skip(reason="fault-injection chaos test: opt in with STEPSTREAM_CHAOS=1")
    for item in items:
        if item.path.name in _OPT_IN_FILES and item.path.parent.name == "chaos":
            item.add_marker(skip)
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
