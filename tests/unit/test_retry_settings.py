"""Options and configuration: RetryPolicy, Settings, function registration, topics, tiers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.delays
from schemas.messages import Delayed
from stepstream import ConfigError, Context, RetryPolicy, Settings, Stepstream
from streams.delays import DelayTiers
from topics.catalog import DELAY_TIERS, catalog

# --- RetryPolicy ------------------------------------------------------------------------


def test_delays_grow_by_the_factor_without_jitter() -> None:
    policy = RetryPolicy(initial=timedelta(milliseconds=500), factor=3.0, jitter=0.0)

    assert [policy.delay_ms(n, "seed") for n in range(4)] == [500, 1_500, 4_500, 13_500]


def test_delays_are_capped_at_the_maximum() -> None:
    policy = RetryPolicy(initial=timedelta(seconds=1), factor=2.0,
                         maximum=timedelta(seconds=5), jitter=0.0)

    assert [policy.delay_ms(n, "seed") for n in range(5)] == [1_000, 2_000, 4_000, 5_000, 5_000]
    assert policy.delay_ms(200, "seed") == 5_000


def test_a_factor_of_one_gives_constant_delays() -> None:
    policy = RetryPolicy(initial=timedelta(seconds=2), factor=1.0, jitter=0.0)

    assert {policy.delay_ms(n, "s") for n in range(10)} == {2_000}


def test_the_defaults() -> None:
    policy = RetryPolicy()

    assert policy.retries == 3
    assert (policy.initial, policy.factor, policy.maximum, policy.jitter) == (
        timedelta(seconds=1), 2.0, timedelta(minutes=10), 0.2)


@settings(max_examples=200, deadline=None)
@given(retry=st.integers(min_value=0, max_value=40), seed=st.text(max_size=30),
       jitter=st.floats(min_value=0.0, max_value=1.0))
def test_jitter_only_ever_shortens_the_delay_by_up_to_its_fraction(
        retry: int, seed: str, jitter: float) -> None:
    policy = RetryPolicy(initial=timedelta(seconds=1), factor=2.0,
                         maximum=timedelta(minutes=10), jitter=jitter)
    base = min(1_000 * 2**retry, 600_000)

    delay = policy.delay_ms(retry, seed)

    assert base * (1 - jitter) - 1 <= delay <= base


@settings(max_examples=50, deadline=None)
@given(retry=st.integers(min_value=0, max_value=10), seed=st.text(max_size=30))
def test_the_same_failure_always_gets_the_same_delay(retry: int, seed: str) -> None:
    policy = RetryPolicy(jitter=0.5)

    assert policy.delay_ms(retry, seed) == RetryPolicy(jitter=0.5).delay_ms(retry, seed)


def test_jitter_spreads_runs_that_fail_together() -> None:
    policy = RetryPolicy(jitter=0.5)

    delays = {policy.delay_ms(0, f"run-{i}:step") for i in range(50)}

    assert len(delays) > 25
    assert min(delays) >= 500 and max(delays) <= 1_000


def test_jitter_differs_between_retries_of_the_same_step() -> None:
    policy = RetryPolicy(initial=timedelta(seconds=1), factor=1.0, jitter=0.5)

    assert len({policy.delay_ms(n, "run:step") for n in range(10)}) > 1


@pytest.mark.parametrize("options", [
    {"retries": -1}, {"jitter": -0.1}, {"jitter": 1.5}, {"factor": 0.5},
])
def test_a_policy_that_cannot_work_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)


def test_a_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().retries = 5  # type: ignore[misc]


# --- Settings ---------------------------------------------------------------------------


def test_no_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_variables_are_parsed_to_the_field_types() -> None:
    env = {"STEPSTREAM_BROKERS": "k1:9092,k2:9092", "STEPSTREAM_NAMESPACE": "team-a_1",
           "STEPSTREAM_PARTITIONS": "12", "STEPSTREAM_SESSION_TIMEOUT_S": "6.5",
           "STEPSTREAM_HTTP_PORT": "0", "STEPSTREAM_MAX_PAYLOAD_BYTES": "2048",
           "STEPSTREAM_REDIS_URL": "redis://r:6379/3", "UNRELATED": "x"}

    s = Settings.from_env(env)

    assert (s.brokers, s.namespace, s.partitions, s.session_timeout_s, s.http_port,
            s.max_payload_bytes, s.redis_url) == (
        "k1:9092,k2:9092", "team-a_1", 12, 6.5, 0, 2048, "redis://r:6379/3")
    assert isinstance(s.partitions, int) and isinstance(s.session_timeout_s, float)


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPSTREAM_NAMESPACE", "from-env")

    assert Settings.from_env().namespace == "from-env"


def test_keyword_overrides_win_over_the_environment() -> None:
    env = {"STEPSTREAM_NAMESPACE": "from-env", "STEPSTREAM_PARTITIONS": "3"}

    s = Settings.from_env(env, namespace="explicit", partitions=None)

    assert (s.namespace, s.partitions) == ("explicit", 3)


@pytest.mark.parametrize(("name", "value"), [
    ("PARTITIONS", "four"), ("PARTITIONS", "1.5"), ("HTTP_PORT", ""),
    ("SESSION_TIMEOUT_S", "soon"), ("EXECUTOR_CONCURRENCY", "many"),
])
def test_a_value_of_the_wrong_type_is_a_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"STEPSTREAM_{name}"):
        Settings.from_env({f"STEPSTREAM_{name}": value})


@pytest.mark.parametrize("namespace", [
    "", "has space", "dots.not.allowed", "-leading-dash", "_leading", "x" * 65, "ünï",
])
def test_a_bad_namespace_is_a_config_error(namespace: str) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        Settings.from_env({"STEPSTREAM_NAMESPACE": namespace})


@pytest.mark.parametrize("env", [
    {"STEPSTREAM_PARTITIONS": "0"}, {"STEPSTREAM_REPLICATION": "0"},
    {"STEPSTREAM_EXECUTOR_CONCURRENCY": "0"}, {"STEPSTREAM_BROKERS": "  "},
])
def test_values_that_cannot_work_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_an_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown settings"):
        Settings.from_env({}, brokres="typo:9092")


def test_topic_names_carry_the_namespace() -> None:
    s = Settings(namespace="ns")

    assert s.topic("events") == "ns.events"
    assert s.with_(namespace="other").topic("runs") == "other.runs"
    assert s.namespace == "ns"


def test_a_finished_run_is_kept_as_long_as_the_events_topic_keeps_its_event() -> None:
    s = Settings(namespace="ns")
    events = next(t for t in catalog(s) if t.name == "ns.events")
    assert int(events.configs["retention.ms"]) == s.finished_run_retention_s * 1000


# --- Stepstream.function ----------------------------------------------------------------


def app() -> Stepstream:
    return Stepstream(app_id="tests", settings=Settings())


async def handler(ctx: Context) -> None:
    return None


def test_a_function_is_registered_with_its_options() -> None:
    ss = app()

    returned = ss.function(id="billing/charge-v2", trigger="order.paid", retries=7)(handler)

    assert returned is handler
    fn = ss.functions["billing/charge-v2"]
    assert (fn.id, fn.trigger, fn.handler, fn.retry) == (
        "billing/charge-v2", "order.paid", handler, RetryPolicy(retries=7))


def test_a_full_retry_policy_wins_over_retries() -> None:
    ss = app()
    policy = RetryPolicy(retries=1, jitter=0.0)

    ss.function(id="f", trigger="t", retries=9, retry=policy)(handler)

    assert ss.functions["f"].retry is policy


def test_a_function_id_registered_twice_is_refused() -> None:
    ss = app()
    ss.function(id="f", trigger="t")(handler)

    with pytest.raises(ConfigError, match="registered twice"):
        ss.function(id="f", trigger="other")(handler)
    assert ss.functions["f"].trigger == "t"


def test_a_handler_that_is_not_async_is_refused() -> None:
    ss = app()

    def sync_handler(ctx: Context) -> None:
        return None

    async def generator(ctx: Context) -> Any:
        yield None

    for bad in (sync_handler, generator, lambda ctx: None):
        with pytest.raises(ConfigError, match="async"):
            ss.function(id="f", trigger="t")(bad)
    assert ss.functions == {}


@pytest.mark.parametrize("bad_id", ["", " f", "-f", "has space", "ü", "f" * 129, "a\nb"])
def test_a_bad_function_id_is_refused(bad_id: str) -> None:
    with pytest.raises(ConfigError, match="function id"):
        app().function(id=bad_id, trigger="t")


def test_a_function_without_a_trigger_is_refused() -> None:
    with pytest.raises(ConfigError, match="trigger"):
        app().function(id="f", trigger="")


def test_negative_retries_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retries"):
        app().function(id="f", trigger="t", retries=-1)


@pytest.mark.parametrize("bad_id", ["", "has space", "-x"])
def test_a_bad_app_id_is_refused(bad_id: str) -> None:
    with pytest.raises(ConfigError, match="app_id"):
        Stepstream(app_id=bad_id, settings=Settings())


def test_connection_overrides_change_the_settings() -> None:
    ss = Stepstream(app_id="a", settings=Settings(), brokers="b:1", namespace="ns2",
                    redis_url="redis://x/1")

    assert (ss.settings.brokers, ss.settings.namespace, ss.settings.redis_url) == (
        "b:1", "ns2", "redis://x/1")


def test_without_settings_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPSTREAM_NAMESPACE", "env-ns")

    assert Stepstream(app_id="a").settings.namespace == "env-ns"


# --- topics and delay tiers -------------------------------------------------------------


def test_the_catalog_names_every_topic_of_the_namespace() -> None:
    specs = catalog(Settings(namespace="ns", partitions=6, replication=3))
    by_name = {s.name: s for s in specs}

    assert len(by_name) == len(specs)
    assert set(by_name) == {
        "ns.events", "ns.runs", "ns.steps", "ns.history", "ns.steps.dlq", "ns.quarantine",
        "ns.delay.1s", "ns.delay.10s", "ns.delay.1m", "ns.delay.10m", "ns.delay.1h",
        "ns.waiters", "ns.events.by-name",
        "ns-runs-changelog", "ns-waiters-changelog", "ns-functions-changelog",
        "ns-singletons-changelog"}
    assert all(s.replication == 3 for s in specs)
    # runs, steps and the delay tiers are joined by run id, waiters and re-keyed events
    # by event name, and the engine's tasks take partition p of every topic it reads:
    # same partition count.
    joined = {"ns.events", "ns.runs", "ns.steps", *(f"ns.delay.{t}" for t, _ in DELAY_TIERS),
              "ns.waiters", "ns.events.by-name", "ns-runs-changelog", "ns-waiters-changelog",
              "ns-functions-changelog", "ns-singletons-changelog"}
    for name in joined:
        assert by_name[name].co_partitioned and by_name[name].partitions == 6
    for name in ("ns-runs-changelog", "ns-waiters-changelog", "ns-functions-changelog",
                 "ns-singletons-changelog"):
        assert by_name[name].configs["cleanup.policy"] == "compact"
    for name in ("ns.events", "ns.runs", "ns.steps", "ns.history", "ns.steps.dlq",
                 "ns.waiters", "ns.events.by-name"):
        assert by_name[name].configs["cleanup.policy"] == "delete"
        assert int(by_name[name].configs["retention.ms"]) > 0


def test_delay_tiers_are_listed_shortest_first() -> None:
    holds = [hold for _, hold in DELAY_TIERS]

    assert holds == sorted(holds)
    assert len(set(holds)) == len(holds)


@pytest.mark.parametrize(("delay_ms", "tier"), [
    (0, "1s"), (200, "1s"), (1_000, "1s"), (9_999, "1s"), (10_000, "10s"), (59_999, "10s"),
    (60_000, "1m"), (600_000, "10m"), (3_599_999, "10m"), (3_600_000, "1h"),
    (50 * 3_600_000, "1h"), (-5, "1s"),
])
def test_the_longest_tier_that_does_not_overshoot_is_chosen(delay_ms: int, tier: str) -> None:
    assert DelayTiers(Settings()).tier_for(delay_ms) == tier


def test_wrap_picks_the_tier_for_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.delays, "now_ms", lambda: 1_000_000)

    tier, delayed = DelayTiers(Settings()).wrap("ns.runs", b"k", b"v", due_ms=1_000_000 + 90_000)

    assert tier == "1m"
    assert delayed == Delayed(due_ms=1_090_000, topic="ns.runs", key=b"k", value=b"v")
