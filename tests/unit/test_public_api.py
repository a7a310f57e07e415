"""What ``import stepstream`` gives users, pinned."""

from __future__ import annotations

import subprocess
import sys

import stepstream
from stepstream.errors import StepstreamError
from stepstream.step import StepInterrupt

EXPORTS = [
    "BatchEvents",
    "CancelOn",
    "Concurrency",
    "ConfigError",
    "Context",
    "Debounce",
    "NonRetriableError",
    "NondeterminismError",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "RetryPolicy",
    "SerializationError",
    "Settings",
    "StepError",
    "Stepstream",
    "StepstreamError",
    "Throttle",
    "Timeouts",
    "TriggerEvent",
]


def test_the_export_list_is_pinned() -> None:
    assert sorted(stepstream.__all__) == EXPORTS
    assert len(stepstream.__all__) == len(set(stepstream.__all__))


def test_every_export_exists() -> None:
    for name in stepstream.__all__:
        assert getattr(stepstream, name) is not None, name


def test_the_package_namespace_holds_only_the_exports() -> None:
    public = {name for name in vars(stepstream) if not name.startswith("_")}
    submodules = {name for name, value in vars(stepstream).items()
                  if type(value) is type(stepstream)}

    assert public - submodules == set(EXPORTS)


def test_every_exported_error_is_a_stepstream_error() -> None:
    errors = [getattr(stepstream, n) for n in EXPORTS if n.endswith("Error")]

    assert all(issubclass(e, StepstreamError) for e in errors)


def test_the_step_interrupt_is_not_an_exception_and_not_exported() -> None:
    assert issubclass(StepInterrupt, BaseException)
    assert not issubclass(StepInterrupt, Exception)
    assert "StepInterrupt" not in stepstream.__all__


def test_importing_the_sdk_does_not_import_faust() -> None:
    code = ("import stepstream, sys; "
            "assert 'faust' not in sys.modules, 'faust imported'; "
            "assert 'confluent_kafka' not in sys.modules, 'confluent_kafka imported'")

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr


def test_importing_the_state_machine_does_not_import_faust() -> None:
    code = "import streams.machine, sys; assert 'faust' not in sys.modules"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr
