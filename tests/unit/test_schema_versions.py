"""Released schema versions: the current schemas are pinned to them, every one of them
still decodes, and records and run states of a previous version read in this one."""

from __future__ import annotations

import io
import random
from pathlib import Path

import fastavro
import pytest
from fastavro.utils import generate_one

from schemas import messages
from schemas.codec import MARKER, RECORDS, AvroCodec, NewerSchemaError, default_codec
from schemas.versions import current, fingerprint_of, parse, released, unreleased
from streams.run_records import RunRecords
from tests.schema_evolution import DROPPED, codecs

RELEASED = [(name, number) for name, by_number in sorted(released().items())
            for number in sorted(by_number)]


def test_every_current_schema_is_a_released_version() -> None:
    changed = sorted(unreleased())

    assert not changed, (
        f"the schemas of {', '.join(changed)} changed and no released version has them, so "
        "a later version could not read the records this one writes (run states in the "
        "changelogs, records in flight). Run `python -m schemas` to add them to "
        "schemas/released/ and commit the new files; make each change readable from the "
        "earlier versions (a new field needs a default); never edit or remove a released "
        "version.")


def test_every_record_has_a_released_version_and_no_version_is_there_twice() -> None:
    by_name = released()
    fingerprints = [fingerprint_of(parse(schema)) for versions in by_name.values()
                    for schema in versions.values()]

    assert set(by_name) == {cls.__name__ for cls in RECORDS}
    assert len(fingerprints) == len(set(fingerprints))


@pytest.mark.parametrize(("name", "number"), RELEASED, ids=[f"{n}.v{v}" for n, v in RELEASED])
def test_every_released_version_decodes_into_the_current_record(name: str, number: int
                                                                 ) -> None:
    writer = parse(released()[name][number])
    out = io.BytesIO()
    out.write(MARKER + fingerprint_of(writer))
    random.seed(number)
    fastavro.schemaless_writer(out, writer, generate_one(writer))

    record = default_codec().decode(out.getvalue())

    assert type(record).__name__ == name


def test_a_record_of_the_current_version_is_read_without_resolution() -> None:
    codec = default_codec()
    for name, schema in current().items():
        _, _, reader = codec._by_fingerprint[fingerprint_of(parse(schema))]
        assert reader is None, name


# --- a previous version -------------------------------------------------------------


def run_state(event: messages.Event) -> messages.RunState:
    return messages.RunState(
        run_id="r", function_id="f", event=event, status="running", seq=2, started_at=7,
        memo={"a": messages.MemoEntry(output_json="1")})


def test_records_of_the_previous_version_are_read_with_what_it_did_not_have_defaulted(
        tmp_path: Path) -> None:
    previous, this = codecs(tmp_path)
    event = messages.Event(id="e", name="n", data_json='{"x": 1}', ts=1234)

    started = this.decode(previous.encode(messages.RunStarted(
        run_id="r", function_id="f", event=event, ts=5)))

    assert DROPPED == ("Event", "ts")
    assert started == messages.RunStarted(run_id="r", function_id="f",
                                          event=messages.Event(id="e", name="n",
                                                               data_json='{"x": 1}'), ts=5)
    # Records that do not hold an Event are the same version in both.
    timer = messages.TimerFired(run_id="r", timer_id="t", ts=1)
    assert previous.encode(timer) == this.encode(timer)


def test_a_run_state_stored_by_the_previous_version_is_read_by_this_one(tmp_path: Path
                                                                        ) -> None:
    previous, this = codecs(tmp_path)
    state = run_state(messages.Event(id="e", name="n", ts=99))
    stored = RunRecords(previous).records(b"r", state, lambda: None, lambda _key: None)

    read = RunRecords(this).value(b"r", stored[b"r"], stored.get)

    assert read == run_state(messages.Event(id="e", name="n", ts=0))


def test_the_previous_version_takes_this_ones_records_for_a_newer_versions(tmp_path: Path
                                                                          ) -> None:
    previous, this = codecs(tmp_path)
    data = this.encode(run_state(messages.Event(id="e", name="n")))

    with pytest.raises(NewerSchemaError, match=data[2:10].hex()) as raised:
        previous.decode(data)
    assert raised.value.fingerprint == data[2:10]


def test_a_schema_changed_without_a_released_version_is_found(tmp_path: Path) -> None:
    previous_root = tmp_path / "previous"
    codecs(tmp_path)  # writes the previous version's schemas and released versions

    changed = unreleased(Path(__file__).parents[2] / "schemas", previous_root / "released")

    assert "Event" in changed and "RunState" in changed and "TimerFired" not in changed


def test_the_codec_of_a_version_encodes_with_its_own_schemas(tmp_path: Path) -> None:
    previous, _ = codecs(tmp_path)
    event = messages.Event(id="e", name="n", ts=5)

    assert previous.decode(previous.encode(event)) == messages.Event(id="e", name="n")
    assert AvroCodec().encode(event) == default_codec().encode(event)
