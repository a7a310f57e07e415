"""Settings, read once at the edge (``Settings.from_env()``) and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from stepstream.errors import ConfigError
from stepstream.masking import DEFAULT_SECRET_FIELDS, SecretFields

_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LIFECYCLE_FORMATS = ("none", "confluent")


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything a client or a worker needs to reach its services.

    Secrets (``sasl_password``, ``http_token``, a password in ``redis_url``) never appear
    in ``repr``.
    """

    brokers: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]``."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for the read model (run history) and flow-control state."""
    namespace: str = "stepstream"
    """Prefix of every topic and of the consumer group: one namespace, one engine."""
    partitions: int = 8
    """Partitions of the co-partitioned ``runs``, ``steps`` and delay topics."""
    replication: int = 1
    """Replication factor of every topic."""
    http_host: str = "127.0.0.1"
    """Where the worker serves its HTTP API, metrics and dashboard."""
    http_port: int = 8288
    """Port of the HTTP API; 0 picks a free one."""
    executor_concurrency: int = 16
    """Steps a worker runs at once, so a slow step does not block its partition."""
    max_active_runs: int = 1000
    """Runs of a worker's partitions that may wait for a step to run at once; beyond it the
    worker reads no new events (they wait in Kafka) until half have moved on, so a backlog
    does not become memory. Sleeping and waiting runs do not count."""
    fetch_max_wait_ms: int = 5
    """Consumer fetch max-wait; the dev broker answers a fetch only when it expires."""
    max_payload_bytes: int = 900 * 1024
    """Largest event data or step output accepted, in bytes of JSON: under Kafka's default
    record limit (1 MB), with room for the record around it."""
    store: str = "memory://"
    """State stores: ``memory://`` (restored from the changelog) or ``rocksdb://`` (local
    state with its changelog position: a restart reads only the tail)."""
    data_dir: str = ".stepstream"
    """Where a worker keeps local store state (``rocksdb://``)."""
    rocksdb_memory_mb: int = 64
    """What a worker's RocksDB stores take in memory, all together (block cache and
    memtables; ``rocksdb://`` only)."""
    read_committed: bool = True
    """Consumers read only committed transactions (Kafka's ``read_committed``). Turning it off
    lets the engine see records of open and aborted transactions: only for a broker whose
    transactions do not work."""
    session_timeout_s: float = 6.0
    """Consumer group session timeout; short, so a dead worker is replaced in seconds.
    6 s is the shortest a Kafka broker takes by default (``group.min.session.timeout.ms``);
    librdkafka's background thread sends the heartbeats, so a busy event loop does not
    miss them."""
    instance_id: str = ""
    """A name of this worker that stays the same across its restarts and that no other
    worker of the namespace has (a StatefulSet pod's name, a systemd instance name). Set,
    the worker is a static member of its consumer groups (Kafka's ``group.instance.id``):
    restarted, it takes its partitions back at once, without a rebalance; stopped for
    good, its partitions move after ``session_timeout_s``. Empty (the default): dynamic
    membership."""
    chain_max_steps: int = 100
    """Eager execution: most steps one dispatch runs before handing back."""
    chain_max_ms: int = 2000
    """Eager execution: no new step starts in a chain after this long."""
    chain_lease_ms: int = 10_000
    """Eager execution: a chain silent this long is presumed dead and re-dispatched from
    its last applied step (a killed worker's chain resumes one lease after its last
    sign of life). A running chain sends a heartbeat every third of it, so a chained
    step may take longer than this."""
    chain_takeover: bool = False
    """Eager execution: a worker assigned a runs partition re-dispatches at once the
    chains it finds under a lease, instead of one lease after their last sign of life,
    and a worker cancels the steps of a partition it hands over. Safe where the broker's
    ``InitProducerId`` ends the previous owner's open transaction (Kafka): the new owner
    initialises the partition's producer before it restores the table. Off by default:
    on the dev broker (Tansu 0.6) runs were left behind a transaction it left open."""
    security_protocol: str = "PLAINTEXT"
    """Kafka ``security.protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = "PLAIN"
    """SASL mechanism when the protocol is SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""
    sasl_username: str = ""
    """SASL user name."""
    sasl_password: str = field(default="", repr=False)
    """SASL password (``STEPSTREAM_SASL_PASSWORD``); never shown in ``repr``."""
    ssl_cafile: str = ""
    """PEM file of the CA that signed the brokers' certificates; empty: system CAs."""
    ssl_certfile: str = ""
    """PEM client certificate, for brokers that require mutual TLS."""
    ssl_keyfile: str = ""
    """PEM private key of ``ssl_certfile``."""
    http_token: str = field(default="", repr=False)
    """Bearer token the HTTP API requires (except health and metrics); empty: no auth. The
    dashboard's login page exchanges it for a session cookie."""
    http_allowed_hosts: str = ""
    """Host names the HTTP API answers to, comma-separated (``.example.com`` also matches its
    subdomains; ``*``: any): a browser page on another name that resolves to the worker (DNS
    rebinding) is refused. Loopback names always pass. Empty: loopback names only while
    ``http_host`` is loopback and there is no token; any IP address and the bound name too
    when bound beyond loopback without a token; any host with a token (the token already
    protects)."""
    http_session_s: float = 12 * 3600.0
    """How long a dashboard login (its session cookie) lasts."""
    http_max_streams: int = 100
    """Live run streams (``GET /v1/runs/{id}/stream``) a worker serves at once; more get
    503 with ``Retry-After``."""
    http_stream_heartbeat_s: float = 15.0
    """Seconds between heartbeats (comment lines) on a quiet live stream, so proxies keep
    it open."""
    monitor_interval_s: float = 10.0
    """How often a worker refreshes its heartbeat, consumer-lag and runs-in-flight gauges."""
    concurrency_lease_ms: int = 30_000
    """Flow control: a concurrency slot is a lease this long, renewed every third of it
    while its step runs; a killed worker's slots come back after at most this long."""
    flow_poll_ms: int = 1000
    """Flow control: how soon a step held back by a concurrency limit checks again (more,
    up to 8 times, the further back it is in the queue)."""
    readmodel_retention_s: float = 30 * 24 * 3600.0
    """How long a finished run stays in the read model (dashboard, API, CLI) after it
    ended: the history topic's retention, what a rebuild could bring back."""
    run_state_max_bytes: int = 4 * 1024 * 1024
    """How many bytes a run's saved results (every step's output or error) may take: the
    step whose result would pass it fails its run with ``RunStateTooLarge``. Each step's
    output is also limited by ``max_payload_bytes``."""
    finished_run_retention_s: float = 7 * 24 * 3600.0
    """How long the engine keeps a finished run's marker (its id, status, end and output;
    a failed or cancelled run's memo too, for replays) after it ended: duplicates of its
    event and late messages of the run find it and change nothing. The default is the
    events topic's retention (``topics.catalog``): no record that could start the run
    again is still in Kafka after it. A duplicate produced later starts the run again,
    under the same run id."""
    newer_schema_wait_s: float = 1800.0
    """Rolling upgrades: how long after a record was written a partition waits at it when
    its schema is unknown to this worker (a newer stepstream wrote it) for a worker of
    that version to read it; then it is quarantined like an undecodable record (it may
    be garbage that looks like a record). Longer than a rollout; 0: no wait."""
    schema_registry_url: str = ""
    """Confluent Schema Registry (``https://host:8081``) that decodes records of source
    topics (``TopicTrigger``) in the Confluent wire format; empty: such records are
    quarantined."""
    lifecycle_format: str = "none"
    """The public lifecycle topic (``{namespace}.lifecycle``: run started, step completed
    or failed, run finished; schema in ``schemas/public/``): ``none`` (the default: no
    such topic; the history topic is as it always was) or ``confluent`` (derived from
    the history topic in the Confluent wire format, its schema registered at
    ``schema_registry_url`` under ``{namespace}.lifecycle-value``)."""
    schema_registry_username: str = ""
    """Basic auth user of the Schema Registry (Confluent Cloud: the API key)."""
    schema_registry_password: str = field(default="", repr=False)
    """Basic auth password of the Schema Registry; never shown in ``repr``."""
    secret_fields: str = ",".join(DEFAULT_SECRET_FIELDS)
    """Event and output fields whose values the history shows as ``***``, comma-separated:
    a field is secret when its name contains one (any case, ``_``, ``-`` and spaces left
    out: ``api_key`` also hides ``apiKey``). Replaces the default list; empty: nothing is
    masked. The engine and the functions still see the real values (``stepstream.masking``)."""

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ConfigError(f"namespace {self.namespace!r} must match {_NAMESPACE.pattern}")
        if self.partitions < 1 or self.replication < 1:
            raise ConfigError("partitions and replication must be >= 1")
        if self.executor_concurrency < 1:
            raise ConfigError("executor_concurrency must be >= 1")
        if self.rocksdb_memory_mb < 8:
            raise ConfigError("rocksdb_memory_mb must be >= 8")
        if self.max_active_runs < 1:
            raise ConfigError("max_active_runs must be >= 1")
        if not self.brokers.strip():
            raise ConfigError("brokers must not be empty")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"security_protocol {self.security_protocol!r} must be one of "
                              f"{', '.join(SECURITY_PROTOCOLS)}")
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(f"sasl_mechanism {self.sasl_mechanism!r} must be one of "
                                  f"{', '.join(SASL_MECHANISMS)}")
            if not self.sasl_username or not self.sasl_password:
                raise ConfigError(f"security_protocol {self.security_protocol} needs "
                                  "sasl_username and sasl_password")
        if self.concurrency_lease_ms < 100 or self.flow_poll_ms < 10:
            raise ConfigError("concurrency_lease_ms must be >= 100 and flow_poll_ms >= 10")
        if self.monitor_interval_s <= 0:
            raise ConfigError("monitor_interval_s must be > 0")
        if self.readmodel_retention_s <= 0:
            raise ConfigError("readmodel_retention_s must be > 0")
        if self.run_state_max_bytes < self.max_payload_bytes:
            raise ConfigError("run_state_max_bytes must be >= max_payload_bytes")
        if self.finished_run_retention_s <= 0:
            raise ConfigError("finished_run_retention_s must be > 0")
        if self.newer_schema_wait_s < 0:
            raise ConfigError("newer_schema_wait_s must be >= 0")
        if self.http_session_s <= 0:
            raise ConfigError("http_session_s must be > 0")
        if self.http_max_streams < 0 or self.http_stream_heartbeat_s <= 0:
            raise ConfigError("http_max_streams must be >= 0 and http_stream_heartbeat_s > 0")
        if self.lifecycle_format not in LIFECYCLE_FORMATS:
            raise ConfigError(f"lifecycle_format {self.lifecycle_format!r} must be one of "
                              f"{', '.join(LIFECYCLE_FORMATS)}")
        if self.lifecycle_format == "confluent" and not self.schema_registry_url:
            raise ConfigError("lifecycle_format confluent needs schema_registry_url")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("ssl_certfile and ssl_keyfile go together")

    def __repr__(self) -> str:
        from stepstream.redact import redact_url

        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        shown = [f"redis_url={redact_url(self.redis_url)!r}" if item.startswith("redis_url=")
                 else item for item in shown]
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``STEPSTREAM_*`` variables; keyword arguments win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, spec in cls.__dataclass_fields__.items():
            raw = env.get(f"STEPSTREAM_{name.upper()}")
            if raw is None:
                continue
            kind: type[Any] = type(spec.default)
            try:
                values[name] = _flag(raw) if kind is bool else kind(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"STEPSTREAM_{name.upper()}={raw!r}: expected {kind.__name__}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def secrets(self) -> SecretFields:
        """``secret_fields`` as the masking needs them."""
        return SecretFields.parse(self.secret_fields)

    def topic(self, suffix: str) -> str:
        """The full name of one of this namespace's topics."""
        return f"{self.namespace}.{suffix}"


def _flag(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
