"""A local SMTP sink for development and tests.

:class:`MailSink` runs an aiosmtpd server in a background thread on loopback, accepts every
message, keeps it in memory and, optionally, appends it to an mbox file that any mail
reader can open::

    with MailSink(port=0) as sink:                  # 0 picks a free port
        send_something(smtp_port=sink.port)
        mail = sink.wait_for(lambda m: m.subject.startswith("Welcome"), timeout=5)

Run ``python -m stepstream.devsmtp --port 8025 --mbox mail.mbox`` to keep one running while
you try the examples by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["MailSink", "ReceivedMail"]



@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it."""

    mail_from: str
    """Envelope sender (``MAIL FROM``)."""
    rcpt_tos: list[str]
    """Envelope recipients (``RCPT TO``)."""
    subject: str
    """Decoded ``Subject`` header, ``""`` if absent."""
    body: str
    """The plain-text body (the first ``text/plain`` part), ``""`` if there is none."""
    message: EmailMessage = field(repr=False)
    """The whole parsed message, for headers and attachments."""


class _Handler:
    """aiosmtpd handler: hands every message to the sink and accepts it."""

    def __init__(self, sink: MailSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        message = message_from_bytes(raw, policy=policy.default)
        body_part = message.get_body(preferencelist=("plain",))
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            subject=str(message.get("Subject", "")),
            body=body_part.get_content() if body_part is not None else "",
            message=message,
        )
        self._sink._deliver(mail)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """A Controller that learns its real port when asked to bind port 0."""

    def _trigger_server(self) -> None:
        # The server is bound by now; aiosmtpd connects to self.port to finish starting,
        # so it must be the real one, not 0.
        if self.port == 0 and self.server is not None:
            self.port = cast(asyncio.Server, self.server).sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class MailSink:
    """An in-process SMTP server on loopback that records what it receives.

    Args:
        port: TCP port to listen on; 0 picks a free one (read it back from :attr:`port`).
        host: Address to bind; loopback by default so nothing outside the machine can send.
        mbox_path: If given, every message is also appended to this mbox file.
        on_message: Called with each message as it arrives, on the server's thread.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        mbox_path: str | Path | None = None,
        on_message: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self.host = host
        self.mbox_path = Path(mbox_path) if mbox_path is not None else None
        self._on_message = on_message
        self._requested_port = port
        self._messages: list[ReceivedMail] = []
        # A Condition, so wait_for wakes as soon as a message lands instead of sleeping.
        self._arrived = threading.Condition()
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (the real one, also when 0 was requested)."""
        if self._controller is None:
            return self._requested_port
        return int(self._controller.port)

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of every message received so far, oldest first."""
        with self._arrived:
            return list(self._messages)

    def start(self) -> MailSink:
        """Start listening; returns once the server accepts connections.

        Returns:
            The sink itself, for chaining.

        Raises:
            RuntimeError: If the sink is already running.
        """
        if self._controller is not None:
            raise RuntimeError("MailSink is already running")
        controller = _Controller(
            _Handler(self), hostname=self.host, port=self._requested_port, enable_SMTPUTF8=True
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop the server; received messages stay readable. Stopping twice is harmless."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        """Forget the messages received so far (the mbox file is left alone)."""
        with self._arrived:
            self._messages.clear()

    def wait_for(
        self, predicate: Callable[[ReceivedMail], bool] | None = None, timeout: float = 10.0
    ) -> ReceivedMail:
        """Block until a received message satisfies ``predicate``.

        Messages that arrived before the call count too.

        Args:
            predicate: Test applied to each message; ``None`` accepts any message.
            timeout: Seconds to wait at most.

        Returns:
            The first (oldest) matching message.

        Raises:
            TimeoutError: If no message matches within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = self._first_match(predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_message(timeout))
                self._arrived.wait(remaining)

    async def wait_for_async(
        self, predicate: Callable[[ReceivedMail], bool] | None = None, timeout: float = 10.0
    ) -> ReceivedMail:
        """Like :meth:`wait_for`, without blocking the running event loop.

        Use this from async tests where the code that sends the mail runs on the same loop.
        """
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _first_match(self, predicate: Callable[[ReceivedMail], bool] | None) -> ReceivedMail | None:
        return next((m for m in self._messages if predicate is None or predicate(m)), None)

    def _timeout_message(self, timeout: float) -> str:
        subjects = [m.subject for m in self._messages]
        return f"no matching mail within {timeout}s; received subjects: {subjects}"

    def _deliver(self, mail: ReceivedMail) -> None:
        """Record a message; called on the server thread."""
        if self.mbox_path is not None:
            self._append_to_mbox(self.mbox_path, mail)
        with self._arrived:
            self._messages.append(mail)
            self._arrived.notify_all()
        if self._on_message is not None:
            self._on_message(mail)

    def _append_to_mbox(self, path: Path, mail: ReceivedMail) -> None:
        box = mailbox.mbox(path)
        box.lock()  # another process (a mail reader, a second sink) may share the file
        try:
            entry = mailbox.mboxMessage(mail.message)
            entry.set_from(mail.mail_from or "MAILER-DAEMON", True)  # True: stamp the time
            box.add(entry)
            box.flush()
        finally:
            box.unlock()
            box.close()


def main(argv: list[str] | None = None) -> None:
    """Run a sink in the foreground until interrupted, printing each message's subject."""
    parser = argparse.ArgumentParser(description="Local SMTP sink for stepstream development.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--mbox", default=None, help="also append messages to this mbox file")
    args = parser.parse_args(argv)

    def show(mail: ReceivedMail) -> None:
        print(f"{mail.mail_from} -> {', '.join(mail.rcpt_tos)}: {mail.subject}", flush=True)

    stopping = threading.Event()
    # SIGTERM too, so a supervisor or `kill` shuts the server down cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    with MailSink(port=args.port, host=args.host, mbox_path=args.mbox, on_message=show) as sink:
        print(f"SMTP sink listening on {sink.host}:{sink.port}", flush=True)
        stopping.wait()


if __name__ == "__main__":
    main()
