"""One Redis pub/sub channel, listened to once per process, waking local watchers by key.

A watcher registers a key first and reads the read model next: a change made before is
in what it reads, one made after wakes it. When the subscription is lost (Redis
restarted), every watcher is woken once it is back, to read again: an announcement made
meanwhile is not lost to it. The listener starts with the first watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from streams.readmodel import RunStore
from streams.redis_client import STORE_ERRORS

log = logging.getLogger("stepstream.waits")

_RESUBSCRIBE_S = (0.1, 2.0)

KeysOf = Callable[[bytes | str], Iterable[str]]
"""The watcher keys an announcement concerns (none for one it cannot read)."""


class Announcements:
    """Wakes the watchers of the keys each announcement on ``channel`` names.

    Args:
        store: the read model (its Redis client and namespace; touched only once a
            watcher comes).
        channel: the channel, under the namespace prefix.
        keys_of: the keys an announcement wakes.
    """

    def __init__(self, store: RunStore, channel: str, keys_of: KeysOf) -> None:
        self.store, self.channel, self.keys_of = store, channel, keys_of
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.closing = False

    async def subscribed(self, timeout_s: float) -> None:
        """Start listening if nobody does yet, and wait (at most ``timeout_s``) until the
        subscription stands; Redis away: return anyway (the read after fails or is old,
        and the watcher is woken once the subscription is back)."""
        if self._listener is None and not self.closing:
            self._listener = asyncio.create_task(self._listen(),
                                                 name=f"stepstream-listen-{self.channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), max(0.0, timeout_s))

    @contextlib.contextmanager
    def watching(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by each announcement for ``key`` (clear it before each read)."""
        wake = asyncio.Event()
        self._watchers.setdefault(key, set()).add(wake)
        try:
            yield wake
        finally:
            watching = self._watchers[key]
            watching.discard(wake)
            if not watching:
                del self._watchers[key]

    async def close(self) -> None:
        """Wake every watcher (``closing`` tells it to answer now) and stop listening."""
        self.closing = True
        self._wake_all()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self) -> None:
        delay = _RESUBSCRIBE_S[0]
        while True:
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.key(self.channel))
                self._subscribed.set()
                self._wake_all()  # what was announced while the subscription was away
                delay = _RESUBSCRIBE_S[0]
                async for message in pubsub.listen():
                    for key in self.keys_of(message["data"]):
                        for wake in self._watchers.get(key, ()):
                            wake.set()
            except STORE_ERRORS as exc:
                log.warning("%s: subscription lost (%s); subscribing again", self.channel, exc)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESUBSCRIBE_S[1])

    def _wake_all(self) -> None:
        for watching in self._watchers.values():
            for wake in watching:
                wake.set()
