"""The public lifecycle record: every published version is a compatible change of the
one before (``schemas.compatibility``), published versions are never edited, the engine
writes the latest, and incompatible changes are caught."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from schemas.compatibility import breaking_changes
from schemas.lifecycle import latest, lifecycle_event, published
from schemas.messages import ErrorInfo, Event, HistoryRecord
from schemas.versions import fingerprint_of, parse

PUBLISHED_FINGERPRINTS = {1: "52e12f2d40551c24"}
"""Each published version's fingerprint: a published schema is never edited (readers
have it); a change is a new ``LifecycleEvent.vN.avsc``. Add its line here with it."""

PAIRS = list(zip(published(), list(published())[1:], strict=False))


def test_published_versions_are_numbered_from_one_and_never_edited() -> None:
    versions = published()

    assert list(versions) == list(range(1, len(versions) + 1))
    assert {n: fingerprint_of(parse(s)).hex() for n, s in versions.items()} == \
        PUBLISHED_FINGERPRINTS


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"v{o}-v{n}" for o, n in PAIRS])
def test_each_version_is_a_compatible_change_of_the_one_before(old: int, new: int) -> None:
    assert breaking_changes(published()[old], published()[new]) == []


def test_the_engine_writes_the_latest_version() -> None:
    version, schema = latest()
    record = HistoryRecord(run_id="r", seq=3, ts=10, kind="step.failed", function_id="f",
                           step_id="s", attempt=1, error=ErrorInfo("KeyError", "k"),
                           next_attempt_at=20, event_id="e")

    event = lifecycle_event(record)

    assert event["schema_version"] == version == max(published())
    assert fastavro.validate(event, fastavro.parse_schema(schema, named_schemas={}))
    assert (event["error_type"], event["error_message"], event["event_id"]) == (
        "KeyError", "k", "e")


def test_a_run_start_carries_its_event_also_from_a_history_record_without_event_id() -> None:
    record = HistoryRecord(run_id="r", seq=1, ts=1, kind="run.started", function_id="f",
                           event=Event(id="e", name="shop/order", data_json='{"a": 1}'))

    event = lifecycle_event(record)

    assert (event["event_id"], event["event_name"], event["event_data_json"]) == (
        "e", "shop/order", '{"a": 1}')


# --- the check itself --------------------------------------------------------------


def changed(change: Any) -> dict[str, Any]:
    """The latest schema, changed by ``change(fields)``."""
    schema = copy.deepcopy(latest()[1])
    change(schema["fields"])
    return schema


def field(fields: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f for f in fields if f["name"] == name)


def test_an_optional_field_with_a_default_is_a_compatible_change() -> None:
    new = changed(lambda fields: fields.append(
        {"name": "tenant", "type": ["null", "string"], "default": None}))

    assert breaking_changes(latest()[1], new) == []
    # Both ways, as the rules promise: the old reader skips it, the new defaults it.
    old_parsed = fastavro.parse_schema(latest()[1], named_schemas={})
    new_parsed = fastavro.parse_schema(new, named_schemas={})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, new_parsed, {**lifecycle_event(HistoryRecord(
        run_id="r", seq=1, ts=1, kind="run.started", function_id="f")), "tenant": "t"})
    out.seek(0)
    assert fastavro.schemaless_reader(out, new_parsed, old_parsed)["run_id"] == "r"


@pytest.mark.parametrize(("change", "problem"), [
    (lambda fields: field(fields, "output_json").update(name="output"),
     "'output_json' is removed or renamed"),
    (lambda fields: fields.remove(field(fields, "step_id")), "'step_id' is removed"),
    (lambda fields: field(fields, "seq").update(type="int"), "'seq' changes type"),
    (lambda fields: field(fields, "attempt").update(type="string", default="0"),
     "'attempt' changes type"),
    (lambda fields: fields.append({"name": "tenant", "type": "string"}),
     "'tenant' is added without a default"),
], ids=["renamed", "removed", "narrowed", "retyped", "required"])
def test_an_incompatible_change_is_refused(change: Any, problem: str) -> None:
    problems = breaking_changes(latest()[1], changed(change))

    assert any(problem in p for p in problems), problems


def test_resolution_fails_a_new_required_field_too() -> None:
    # Besides the rule, the new reader cannot read the old records.
    problems = breaking_changes(latest()[1], changed(lambda fields: fields.append(
        {"name": "tenant", "type": "string"})))

    assert any("the new version cannot read the old's" in p for p in problems), problems


def test_a_renamed_record_is_refused() -> None:
    new = {**latest()[1], "name": "RunEvent"}

    assert any("renamed" in p for p in breaking_changes(latest()[1], new))
