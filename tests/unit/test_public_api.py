"""What ``import stepstream`` gives users, pinned."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import stepstream
from stepstream.errors import StepstreamError
from stepstream.step import StepInterrupt

EXPORTS = [
    "BatchEvents",
    "CancelOn",
    "Concurrency",
    "ConfigError",
    "Context",
    "Cron",
    "Debounce",
    "NonRetriableError",
    "NondeterminismError",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "RetryPolicy",
    "RunFailed",
    "SerializationError",
    "Settings",
    "Singleton",
    "StepError",
    "Stepstream",
    "StepstreamError",
    "Throttle",
    "Timeouts",
    "TopicTrigger",
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


def test_importing_the_sdk_imports_no_kafka_client_and_no_engine() -> None:
    code = ("import stepstream, sys; "
            "assert 'confluent_kafka' not in sys.modules, 'confluent_kafka imported'; "
            "assert 'streams.kafka' not in sys.modules, 'the runtime imported'")

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr


def test_the_testing_exports_are_pinned_and_need_no_broker_client_nor_redis() -> None:
    code = ("import stepstream.testing as t, sys; "
            "assert sorted(t.__all__) == ['ReplayMismatch', 'RunResult', 'replay', 'run']; "
            "assert not {'confluent_kafka', 'redis', 'streams.kafka'} & set(sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('confluent', 'redis', 'streams')))")

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr


def test_importing_the_state_machine_imports_no_kafka_client() -> None:
    code = "import streams.machine, sys; assert 'confluent_kafka' not in sys.modules"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)

    assert result.returncode == 0, result.stderr


def test_the_engine_uses_neither_faust_nor_aiokafka() -> None:
    root = Path(__file__).resolve().parents[2]
    found = [f"{path.relative_to(root)}:{n}" for package in ("stepstream", "streams")
             for path in sorted((root / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"^\s*(import faust|from faust|import aiokafka|from aiokafka)", line)]
    assert found == []
