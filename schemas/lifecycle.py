"""The public lifecycle record (``schemas/public/LifecycleEvent.vN.avsc``): what other
teams read from ``{namespace}.lifecycle``, and how a history record becomes one.

The history topic's ``HistoryRecord`` is the engine's own and evolves by the engine's
rules (``schemas.versions``: a field with a default may go). The lifecycle record is a
contract with readers stepstream does not know, so it is a record of its own, mapped
here, under stricter rules (``schemas.compatibility``): the engine can reshape its
history without breaking them. The highest ``vN`` file is the one written; the earlier
ones stay, published, and are never edited.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from schemas.messages import HistoryRecord

PUBLIC_DIR = Path(__file__).parent / "public"
NAME = "LifecycleEvent"
_VERSION_FILE = re.compile(rf"^{NAME}\.v(?P<version>[1-9][0-9]*)\.avsc$")


@functools.cache
def published(public_dir: Path = PUBLIC_DIR) -> dict[int, dict[str, Any]]:
    """Every published version of the lifecycle record's schema, by version number."""
    versions = {}
    for path in public_dir.glob("*.avsc"):
        match = _VERSION_FILE.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: a public schema is named {NAME}.vN.avsc")
        versions[int(match["version"])] = json.loads(path.read_text())
    return dict(sorted(versions.items()))


def latest() -> tuple[int, dict[str, Any]]:
    """The version the engine writes, and its schema."""
    version, schema = list(published().items())[-1]
    return version, schema


def lifecycle_event(record: HistoryRecord) -> dict[str, Any]:
    """``record`` (secret fields already masked: ``streams.masked``) as the latest
    lifecycle record."""
    version, _ = latest()
    event, error = record.event, record.error
    return {
        "schema_version": version, "kind": record.kind, "run_id": record.run_id,
        "function_id": record.function_id, "seq": record.seq, "ts": record.ts,
        "event_id": record.event_id or (event.id if event is not None else None),
        "event_name": event.name if event is not None else None,
        "event_data_json": event.data_json if event is not None else None,
        "step_id": record.step_id, "attempt": record.attempt,
        "output_json": record.output_json,
        "error_type": error.type if error is not None else None,
        "error_message": error.message if error is not None else None,
        "started_at": record.started_at, "ended_at": record.ended_at,
        "next_attempt_at": record.next_attempt_at, "backfill": record.backfill,
    }
