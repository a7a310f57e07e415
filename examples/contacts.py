"""Example: import an uploaded contacts CSV as a durable, step-by-step workflow.

Trigger it by sending the event ``api/contact_list.uploaded`` with data like::

    {"file": "examples/data/contacts_valid.csv", "user_email": "owner@example.com"}

and optionally ``"list_id"`` (defaults to the event id). The function then runs:

    validate-csv ──invalid──> send-failure-email                    -> {"status": "invalid"}
         │ valid
         v
    enrich-address-information -> insert-contacts -> send-success-email -> {"status": "imported"}

Each ``step.run`` is durable: its result is recorded once the step succeeds, so if the
worker crashes, the run resumes after the last finished step instead of starting over, and
a step that raises is retried (up to ``retries`` times) on its own.

The real work lives in :mod:`examples.contacts_work` as plain functions; this module only
wires them into steps. Steps hand each other file paths rather than rows, because every
step result is stored in Kafka and must stay small, so all workers need to see the same
filesystem.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from examples import contacts_work as work
from stepstream import Context, NonRetriableError, Stepstream

P = ParamSpec("P")
T = TypeVar("T")

ss = Stepstream(app_id="contacts")


def as_step(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Turn a plain blocking function into a step function.

    It runs in a worker thread, so file, database and SMTP I/O do not stall the event loop
    that drives every other run, and a :class:`~examples.contacts_work.PermanentError` (a
    missing file, a bad setting) becomes a :class:`~stepstream.NonRetriableError`, so the
    step fails at once instead of being retried to no avail.
    """

    @functools.wraps(fn)
    async def step_fn(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except work.PermanentError as exc:
            raise NonRetriableError(str(exc)) from exc

    return step_fn


validate_csv = as_step(work.validate_csv)
enrich_addresses = as_step(work.enrich_addresses)
insert_contacts = as_step(work.insert_contacts)
send_failure_email = as_step(work.send_failure_email)
send_success_email = as_step(work.send_success_email)


@ss.function(id="process-contacts-csv-upload", trigger="api/contact_list.uploaded", retries=4)
async def process_upload(ctx: Context) -> dict[str, Any]:
    """Validate, enrich and store an uploaded contact list, then tell the uploader."""
    event, step = ctx.event, ctx.step
    csv_path, user_email = _required(event.data, "file"), _required(event.data, "user_email")
    list_id = str(event.data.get("list_id") or event.id)

    check = await step.run("validate-csv", validate_csv, csv_path)
    if not check["is_valid"]:
        await step.run(
            "send-failure-email",
            send_failure_email,
            user_email,
            check["errors"],
            check["error_count"],
        )
        return {"status": "invalid", "errors": check["errors"]}

    enriched = await step.run("enrich-address-information", enrich_addresses, csv_path)
    inserted = await step.run(
        "insert-contacts", insert_contacts, enriched["enriched_file"], list_id
    )
    total = inserted["total_users_added"]
    await step.run("send-success-email", send_success_email, user_email, total)
    return {"status": "imported", "total_users_added": total}


def _required(data: dict[str, Any], key: str) -> str:
    """A mandatory string field of the event; an event without it can never succeed."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise NonRetriableError(f"event data needs a non-empty string {key!r}")
    return value
