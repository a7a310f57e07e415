"""A run's read-model document from its history records, as the projector builds it."""

from __future__ import annotations

from typing import Any

from schemas.messages import HistoryRecord
from streams.timeline import apply_record


def project(*records: HistoryRecord) -> dict[str, Any]:
    """The document ``records`` make, applied in order to no document."""
    doc: dict[str, Any] | None = None
    for r in records:
        doc = apply_record(doc, r)
    assert doc is not None
    return doc
