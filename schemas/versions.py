"""Every released version of each record schema, kept so that records written by an older
stepstream (in a topic, or a run's state in a changelog) still decode after an upgrade.

``schemas/released/{Name}.v{N}.avsc`` holds version N of record ``Name`` as its writer
wrote it: the full schema, every record it names written out (``expand``), so the file
alone is the writer schema, whatever the other ``.avsc`` files become. A version is
never edited or removed while a record it wrote may still be read (a topic's
retention, and a run state's lifetime: a run stays in its table until it ends, then
``finished_run_retention_s``).

v1 of every record is its schema in every version so far (from ``be733d8`` on; MemoItem
came later, as a new record). The shapes before it in ``git log -p schemas/`` lived a
few hours of the first day's development (2026-11-26), before the deploy manifests and
any documented release, and are not kept (some would not even resolve faithfully:
``Dispatched.lease_chain`` became ``alive_at``, another meaning under another name).

Changing a ``.avsc`` file (or a record it names, which changes its fingerprint too) is a
new version: run ``python -m schemas`` to add it here, and make it readable from
every earlier version (Avro's resolution rules: a new field needs a default; a field is
removed only if it has one). ``tests/unit/test_schema_versions.py`` fails until then.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas import messages

SCHEMA_DIR = Path(__file__).parent
RELEASED_DIR = SCHEMA_DIR / "released"

# Referenced types first: a record may only name records parsed before it.
RECORDS: tuple[type, ...] = (
    messages.ErrorInfo, messages.Event, messages.MemoEntry, messages.MemoItem,
    messages.LogLine,
    messages.PlannedStep,
    messages.Waiter, messages.Dispatched, messages.Pending,
    messages.RunStarted, messages.StepCompleted, messages.StepFailed, messages.StepPlanned,
    messages.FunctionFinished, messages.TimerFired, messages.CancelRequested,
    messages.EventMatched, messages.ChildFinished, messages.ReplayRequested,
    messages.StepDeferred, messages.ChainAlive, messages.FunctionControl,
    messages.ScheduleState,
    messages.SingletonClaim, messages.SingletonReleased, messages.SingletonHolder,
    messages.FlowTimer,
    messages.StepRequest,
    messages.WaiterChanged, messages.WaiterSet, messages.Delayed, messages.HistoryRecord,
    messages.DeadLetter, messages.Quarantined, messages.RunState,
)

_VERSION_FILE = re.compile(r"^(?P<name>\w+)\.v(?P<version>[1-9][0-9]*)\.avsc$")


def expand(schema: Any, sources: dict[str, Any], defined: set[str]) -> Any:
    """``schema`` with each named record written out in full at its first use."""
    if isinstance(schema, str):
        if schema in sources and schema not in defined:
            defined.add(schema)
            return expand(sources[schema], sources, defined)
        return schema
    if isinstance(schema, list):
        return [expand(s, sources, defined) for s in schema]
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            defined.add(f"{schema.get('namespace', 'stepstream')}.{schema['name']}")
            fields = [{**f, "type": expand(f["type"], sources, defined)}
                      for f in schema["fields"]]
            return {**schema, "fields": fields}
        if schema.get("type") == "map":
            return {**schema, "values": expand(schema["values"], sources, defined)}
        if schema.get("type") == "array":
            return {**schema, "items": expand(schema["items"], sources, defined)}
    return schema


def current(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The expanded schema of each record in ``schema_dir``, by record name."""
    sources: dict[str, Any] = {}
    expanded: dict[str, Any] = {}
    for cls in RECORDS:
        raw = json.loads((schema_dir / f"{cls.__name__}.avsc").read_text())
        sources[f"{raw['namespace']}.{raw['name']}"] = raw
        # Inlined, the records it names change its fingerprint when they change.
        expanded[cls.__name__] = expand(raw, sources, set())
    return expanded


def released(released_dir: Path = RELEASED_DIR) -> dict[str, dict[int, Any]]:
    """The released versions of each record: name -> version -> expanded schema."""
    versions: dict[str, dict[int, Any]] = {}
    for path in sorted(released_dir.glob("*.avsc")):
        match = _VERSION_FILE.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: a released schema is named Name.vN.avsc")
        versions.setdefault(match["name"], {})[int(match["version"])] = json.loads(
            path.read_text())
    return versions


def parse(schema: Any) -> Any:
    """``schema`` parsed by fastavro, with named types of its own (versions of one record
    define the same names differently)."""
    return parse_schema(schema, named_schemas={})


def fingerprint_of(parsed: Any) -> bytes:
    """The CRC-64-AVRO fingerprint of a parsed schema, as single-object encoding writes it
    (fastavro's hex is already the little-endian bytes the spec puts on the wire)."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def unreleased(schema_dir: Path = SCHEMA_DIR, released_dir: Path = RELEASED_DIR
               ) -> dict[str, Any]:
    """The current schemas whose fingerprint no released version has, by record name."""
    known = {fingerprint_of(parse(schema)) for versions in released(released_dir).values()
             for schema in versions.values()}
    return {name: schema for name, schema in current(schema_dir).items()
            if fingerprint_of(parse(schema)) not in known}


def release(schema_dir: Path = SCHEMA_DIR, released_dir: Path = RELEASED_DIR) -> list[Path]:
    """Write each unreleased current schema as its record's next version; returns the
    files written."""
    released_dir.mkdir(exist_ok=True)
    versions = released(released_dir)
    written = []
    for name, schema in unreleased(schema_dir, released_dir).items():
        number = max(versions.get(name, {0: None})) + 1
        path = released_dir / f"{name}.v{number}.avsc"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    return written
