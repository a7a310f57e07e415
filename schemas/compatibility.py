"""The evolution rules of a public schema, checked: a new version may only add fields,
each optional with a default; no field is renamed, removed or given another type (a
nested record is a type: it is never changed either), and the record keeps its name.

Under these rules Avro's schema resolution works both ways: a reader on the new version
reads records of the old one (an added field takes its default), and a reader still on
the old version reads records of the new one (an added field is skipped). Each rule is
checked by name, and then both resolutions are tried on generated records, so a change
the rules did not foresee still fails.
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from fastavro.utils import generate_many


def breaking_changes(old: dict[str, Any], new: dict[str, Any], *, samples: int = 20
                     ) -> list[str]:
    """What in ``new`` breaks readers or writers of ``old`` (empty: a compatible
    change)."""
    problems = []
    if (old.get("namespace"), old["name"]) != (new.get("namespace"), new["name"]):
        problems.append(f"the record is renamed {old['name']!r} -> {new['name']!r}")
    old_fields = {f["name"]: f for f in old["fields"]}
    new_fields = {f["name"]: f for f in new["fields"]}
    for name, field in old_fields.items():
        if name not in new_fields:
            problems.append(f"field {name!r} is removed or renamed")
        elif _type(field) != _type(new_fields[name]):
            problems.append(f"field {name!r} changes type {_type(field)} -> "
                            f"{_type(new_fields[name])}")
    for name in new_fields.keys() - old_fields.keys():
        if "default" not in new_fields[name]:
            problems.append(f"field {name!r} is added without a default")
    problems += _unresolvable(old, new, samples, "the new version cannot read the old's")
    problems += _unresolvable(new, old, samples, "the old version cannot read the new's")
    return problems


def _type(field: dict[str, Any]) -> str:
    return json.dumps(field["type"], sort_keys=True)


def _unresolvable(writer: dict[str, Any], reader: dict[str, Any], samples: int,
                  what: str) -> list[str]:
    parsed_writer = fastavro.parse_schema(writer, named_schemas={})
    parsed_reader = fastavro.parse_schema(reader, named_schemas={})
    try:
        for record in generate_many(parsed_writer, samples):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed_writer, record)
            out.seek(0)
            fastavro.schemaless_reader(out, parsed_writer, parsed_reader)
    except Exception as exc:  # fastavro's resolution errors have no common base
        return [f"{what}: {type(exc).__name__}: {exc}"]
    return []
