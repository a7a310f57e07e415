"""Sends that are not lost: a record is sent again until the broker has it.

Every command the engine produces (step requests, results, timers, history, forwards
of the delay tiers) goes through ``Sender.send``. Its future resolves only once the
broker acknowledged the record, so the orchestrator's outbox never stores a state whose
commands were lost, and no agent dies of a broker outage: a failed send is retried with
backoff, and an outage is logged once, not once per record per retry. At shutdown the
future fails instead: the message that asked for the send is not acknowledged, so the
partition's next owner sends it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import faust

log = logging.getLogger("stepstream.sender")

_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.1, 5.0


class Sender:
    """Produces raw records to the app's topics, retrying each until acknowledged."""

    def __init__(self, app: faust.App, topics: Mapping[str, faust.TopicT]) -> None:
        """``topics``: the topics records may go to, by name."""
        self.app, self.topics = app, topics
        self._failed = 0  # attempts since the last successful send

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        """Queue a record; returns the future of its acknowledgement.

        Returns once the record is in the producer's buffer, so the caller's next step
        (and Faust's commit of its input) comes after the send, never before.
        """
        try:
            ack = await self._produce(topic, key, value)
        except Exception as exc:
            self._send_failed(topic, exc)
            return _quiet(asyncio.ensure_future(self._acknowledged(topic, key, value, None)))
        return self._guarded(topic, key, value, ack)

    async def _produce(self, topic: str, key: bytes, value: bytes) -> Awaitable[Any]:
        """Hand the record to the producer; returns the future of its acknowledgement.

        Straight to the producer once it runs: ``Topic.send`` wraps each record in
        Faust's channel, message future and sensor calls, a few percent of a worker's
        CPU, for nothing this engine uses (its values are bytes already).
        """
        producer = self.app.producer
        if not producer.started:
            return await self.topics[topic].send(key=key, value=value)  # starts it
        return await producer.send(topic, key, value, partition=None, timestamp=None,
                                   headers=None)

    def _guarded(self, topic: str, key: bytes, value: bytes,
                 ack: Awaitable[Any]) -> asyncio.Future[Any]:
        """``ack``'s result, or if it fails, that of sending the record again until the
        broker has it. A callback, not a task per record: nearly every send succeeds."""
        if not isinstance(ack, asyncio.Future):
            return _quiet(asyncio.ensure_future(self._acknowledged(topic, key, value, ack)))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(sent: asyncio.Future[Any]) -> None:
            if done.cancelled():
                return
            if sent.cancelled() or sent.exception() is not None:
                retry = asyncio.ensure_future(self._acknowledged(topic, key, value, sent))
                retry.add_done_callback(functools.partial(_pass_on, done))
                return
            self._sends_resumed()
            done.set_result(sent.result())

        ack.add_done_callback(settle)
        return done

    async def _acknowledged(self, topic: str, key: bytes, value: bytes,
                            ack: Awaitable[Any] | None) -> Any:
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                if ack is None:
                    ack = await self._produce(topic, key, value)
                result = await ack
            except Exception as exc:  # any producer error: send the record again
                if self.app.should_stop:
                    raise  # not acknowledged: the partition's next owner sends it again
                self._send_failed(topic, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                ack = None
                continue
            self._sends_resumed()
            return result

    def _sends_resumed(self) -> None:
        if self._failed:
            log.warning("sends go on after %d failed attempts", self._failed)
            self._failed = 0

    def _send_failed(self, topic: str, exc: Exception) -> None:
        """Log the first failed send of an outage, not each retry of each record."""
        if not self._failed:
            log.warning("send to %s failed, retrying until the broker takes it: %s",
                        topic, exc)
        self._failed += 1


def _quiet(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Mark a failure of ``future`` as seen. A send fails only when the worker stops, and
    many are not awaited (heartbeats, later links of a chain): asyncio would log each as
    an ERROR with a traceback on every shutdown. Whoever awaits it still gets the error."""
    if future.done():
        _seen(future)
    else:
        future.add_done_callback(_seen)
    return future


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _pass_on(to: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    """Settle ``to`` as ``source`` was settled (unless ``to`` was cancelled meanwhile)."""
    if to.done():
        return
    if source.cancelled():
        to.cancel()
    elif (exc := source.exception()) is not None:
        to.set_exception(exc)
        _quiet(to)
    else:
        to.set_result(source.result())
