"""The schemas of a stepstream version one field behind this one, for tests of upgrades.

The previous version here is this one without ``Event.ts``: ``Event`` is inlined in most
records (run starts, run states, history records, waiters), so nearly every record a
worker writes differs between the two versions. Its released versions are its own
schemas (v1); this version's released set is that, then this version's schemas (v2
where they differ), as ``python -m schemas`` would leave it when this version ships.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from schemas.codec import AvroCodec
from schemas.versions import SCHEMA_DIR, release

DROPPED = ("Event", "ts")
"""The record and the field the previous version does not have."""


def previous_version(root: Path) -> tuple[Path, Path]:
    """The previous version's schema files and released versions, written under ``root``."""
    schema_dir, released_dir = root / "schemas", root / "released"
    schema_dir.mkdir(parents=True)
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, schema_dir)
    record, field = DROPPED
    path = schema_dir / f"{record}.avsc"
    schema = json.loads(path.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
    path.write_text(json.dumps(schema, indent=2))
    release(schema_dir, released_dir)
    return schema_dir, released_dir


def this_version_released(root: Path, previous_released: Path) -> Path:
    """This version's released versions once it ships after ``previous_released``."""
    released_dir = root / "released"
    shutil.copytree(previous_released, released_dir)
    release(SCHEMA_DIR, released_dir)
    return released_dir


def codecs(root: Path) -> tuple[AvroCodec, AvroCodec]:
    """The previous version's codec and this version's, as they would be in the field."""
    previous_schemas, previous_released = previous_version(root / "previous")
    return (AvroCodec(previous_schemas, previous_released),
            AvroCodec(SCHEMA_DIR, this_version_released(root / "this", previous_released)))
