"""The README's "Use your existing topics" example runs as printed: its trigger gives a
record's event id, its filter keeps created orders, and its handler completes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stepstream.expressions import matches
from stepstream.settings import Settings
from stepstream.testing import run
from streams.registry import RegistryDecoder
from streams.source_records import SourceRecords
from streams.waiters import event_context
from tests.fakes import FakeMessage

README = Path(__file__).parents[2] / "README.md"


def example() -> dict[str, Any]:
    """The section's first code block, run as a module."""
    section = README.read_text().split("## Use your existing topics", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    assert len(code[1].strip().splitlines()) <= 12  # a short example
    module: dict[str, Any] = {}
    exec(compile(code[1], "README.md", "exec"), module)
    return module


async def test_the_readme_example_runs() -> None:
    fulfil = example()["fulfil"].stepstream_function
    order = {"order_id": 7, "qty": 2, "unit_price": 5}
    message = FakeMessage("shop.orders", 0, 3, json.dumps(order).encode(),
                          headers=[("kind", b"created")])
    records = SourceRecords(RegistryDecoder(Settings()), limit=10_000)
    event, record = await records.event_of(message, fulfil.source)
    assert event.id == "order-7"
    context = {"event": event_context(event), "record": record}
    assert matches(fulfil.trigger_if, context)
    assert not matches(fulfil.trigger_if, {**context, "record": {**record, "headers": {}}})

    result = await run(fulfil, order)
    assert (result.status, result.output) == ("completed", {"order_id": 7, "total": 10})

