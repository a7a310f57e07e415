"""Redis credentials in ``STEPSTREAM_REDIS_URL`` never reach what we print."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from stepstream.redact import redact_url
from stepstream.settings import Settings

SECRET = "r3dis-S3CRET"


@pytest.mark.parametrize("url, shown", [
    (f"redis://:{SECRET}@redis:6379/0", "redis://:***@redis:6379/0"),
    (f"rediss://app:{SECRET}@redis.example:6380/2", "rediss://app:***@redis.example:6380/2"),
    (f"redis://app:{SECRET}@[::1]:6379", "redis://app:***@[::1]:6379"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_credentials_stay_out_of_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rediss://stepstream:{SECRET}@redis.example:6380/0"
    settings = Settings.from_env({"STEPSTREAM_REDIS_URL": url})
    client = aioredis.Redis.from_url(settings.redis_url)  # what the worker builds
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("stepstream.test").warning("settings: %r, redis: %r", settings, client)
    printed = caplog.text + repr(settings) + repr(client) + repr(client.connection_pool)
    assert SECRET not in printed
    assert "redis.example" in printed
