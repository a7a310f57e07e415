"""History records as people see them: secret fields masked (``stepstream.masking``).

Masking happens where a record is written to the history topic, so the topic, the read
model projected from it (and rebuilt from it), the API, the dashboard, the CLI and
``Stepstream.result`` all show ``***``. Nothing in the engine reads the history topic
back: a run's state in the runs changelog (its trigger event, its memo of step outputs)
is what dispatches, replays (``ReplayRequested`` names only the run) and dead-letter
replays use, and it keeps the real values, as do the step requests and the data handed
to the function. Masking at the projector instead would leave secrets on a topic kept
for 30 days that any history reader (and a rebuild) sees.
"""

from __future__ import annotations

from dataclasses import replace

from schemas.messages import HistoryRecord
from stepstream.masking import SecretFields


def masked_history(record: HistoryRecord, secrets: SecretFields) -> HistoryRecord:
    """``record`` with secret fields masked in its JSON: the trigger event's data (a
    child run's invoke data too) and the output of a step, a wait or the run. Errors and
    log lines are free text and stay as they are."""
    if not secrets:
        return record
    output = secrets.mask_json(record.output_json)
    event = record.event
    if event is not None:
        data = secrets.mask_json(event.data_json)
        if data is not event.data_json:
            event = replace(event, data_json=data or "{}")
    if output is record.output_json and event is record.event:
        return record
    return replace(record, output_json=output, event=event)
