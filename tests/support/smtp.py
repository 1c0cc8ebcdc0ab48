"""A real SMTP server (aiosmtpd) for tests, with scripted failures.

    server.fail_next(1, "451 4.3.0 try later")            # the next DATA is answered 451
    server.fail_next(2, "550 5.1.1 no such user", stage="RCPT")
    await server.wait_for(1)                               # the messages received so far

aiosmtpd's Controller runs its own event loop in a thread; everything shared with the test's
loop is guarded by a lock, and `wait_for` polls it from the test's loop.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal, Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

Stage = Literal["RCPT", "DATA"]
_REPLY = re.compile(r"^[45]\d\d[ -]")


@dataclass(frozen=True)
class ReceivedMail:
    """A message the server accepted, with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpHandler:
    """Accepts mail into its `SmtpServer`, answering its scripted failures first."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.server._next_failure("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.server._next_failure("DATA")
        if reply is not None:
            return reply
        message = parse_data(envelope)
        self.server._receive(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=message,
            )
        )
        return "250 Message accepted for delivery"


def parse_data(envelope: Envelope) -> EmailMessage:
    """The message of a DATA command, parsed as a mail store would (CRLF become newlines)."""
    content = envelope.original_content or envelope.content
    assert isinstance(content, bytes)
    message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def start_controller(handler: object) -> tuple[Controller, int]:
    """Start aiosmtpd with `handler` on 127.0.0.1 and a free port; return it and the port."""
    for _attempt in range(5):  # another process may take the free port before we bind it
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=5.0)
        try:
            controller.start()
        except (OSError, RuntimeError):
            continue
        return controller, port
    raise RuntimeError("could not start the test SMTP server")


class ControlledSmtpServer:
    """aiosmtpd on 127.0.0.1 and a free port, answering with the handler `handler()` makes."""

    def __init__(self) -> None:
        self._controller: Controller | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def handler(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        self._controller, self.port = start_controller(self.handler())

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SmtpServer(ControlledSmtpServer):
    """A controllable aiosmtpd server: it can be told to refuse the next RCPT or DATA."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._received: list[ReceivedMail] = []
        self._failures: dict[Stage, deque[str]] = {"RCPT": deque(), "DATA": deque()}

    def handler(self) -> object:
        return SmtpHandler(self)

    def fail_next(self, count: int, reply: str, *, stage: Stage = "DATA") -> None:
        """Answer the next `count` RCPT or DATA commands with `reply` (e.g. "451 4.3.0 later")."""
        if not _REPLY.match(reply):
            raise ValueError(f"not a 4xx/5xx SMTP reply: {reply!r}")
        with self._lock:
            self._failures[stage].extend([reply] * count)

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of the accepted messages with their envelopes, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        """A snapshot of the accepted messages, parsed, oldest first."""
        return [mail.message for mail in self.received]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """Wait until at least `count` messages arrived; return them (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(messages)} of {count} messages arrived in {timeout}s")
            await asyncio.sleep(0.01)

    def _next_failure(self, stage: Stage) -> str | None:
        with self._lock:
            failures = self._failures[stage]
            return failures.popleft() if failures else None

    def _receive(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._received.append(mail)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server for one test."""
    with SmtpServer() as server:
        yield server
