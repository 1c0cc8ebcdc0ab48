"""Each socket's send queue: messages go out in order, mostly with no task at all.

A server's `send` on a socket whose buffer has room completes without waiting, so stepping its
coroutine by hand (`app.kernel.coroutines.send_now`) sends the message with no task per subscriber
and per event (a task each would be created, scheduled and then collected by the garbage collector,
for every subscriber of every event). Only a send that must wait starts the queue's writer task, and
what is queued meanwhile waits behind it. Each message may name an owner (`Pending`) that counts its
messages not yet handed to the socket, which is how a subscription's queue is bounded.

What waits is bounded for every kind of message: at most `max_answers` messages of the
socket's own (pongs, acks, results, errors: no owner) and at most `max_bytes` in all, events
included (each subscription's events are also bounded in number by its `Pending` owner, which ends
it as too slow first). A message that does not fit drops the queue and calls `overflowed`, which
closes the socket: `events` tells whether an event overflowed it (a consumer too slow for its
events) or one of the socket's own answers (a client that sends and never reads, e.g. a ping
flood).

Where the server takes several messages in one send (`SEND_TEXTS`,
app/kernel/uvicorn.py), a burst (a replay's events for one socket, or what piled up
behind a send that had to wait) is handed over in one send, so one write and one system call;
elsewhere its messages go one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.kernel.coroutines import Send, send_now
from app.kernel.uvicorn import SEND_TEXTS

log = logging.getLogger("orderpulse.websocket")


class Pending(Protocol):
    """Whoever owns queued messages and counts them."""

    pending: int


Overflowed = Callable[[bool], None]
"""Called once when a message does not fit; the argument: whether it was an event."""


class SendQueue:
    """The messages of one socket, in order, bounded (see the module's docstring).

    `batches`: the server takes `SEND_TEXTS` (several messages in one send).
    """

    __slots__ = (
        "answers",
        "batches",
        "closed",
        "max_answers",
        "max_bytes",
        "overflowed",
        "queued",
        "queued_bytes",
        "send",
        "writer",
    )

    def __init__(
        self,
        send: Send,
        *,
        batches: bool = False,
        max_answers: int,
        max_bytes: int,
        overflowed: Overflowed,
    ) -> None:
        self.send = send
        self.batches = batches
        self.max_answers = max_answers
        self.max_bytes = max_bytes
        self.overflowed = overflowed
        self.queued: list[tuple[str, Pending | None]] = []
        self.queued_bytes = 0
        """Characters of the messages waiting (the same as bytes: the JSON we send is ASCII)."""
        self.answers = 0
        """Messages waiting that have no owner (pongs, acks, results, errors)."""
        self.writer: asyncio.Task[None] | None = None
        self.closed = False

    def put(self, text: str, owner: Pending | None) -> None:
        """Send `text` after everything queued before it.

        When nothing is queued and the socket takes it at once (the usual case), it is sent right
        here, with nothing left behind for the garbage collector. Otherwise it waits, counted in
        its owner's `pending`, for the writer task; if it does not fit, nothing more is sent.
        """
        if self.closed:
            return
        if self.writer is None:
            self._send_now({"type": "websocket.send", "text": text}, owner, 1)
        elif self._fits(len(text), 1, owner):
            self.queued.append((text, owner))
            if owner is not None:
                owner.pending += 1

    def put_many(self, texts: list[str], owner: Pending | None) -> None:
        """`put` each of `texts`, in order: in one send when the server takes several."""
        if not self.batches or len(texts) < 2:
            for text in texts:
                self.put(text, owner)
            return
        if self.closed:
            return
        if self.writer is None:
            self._send_now({"type": SEND_TEXTS, "texts": texts}, owner, len(texts))
        elif self._fits(sum(map(len, texts)), len(texts), owner):
            self.queued.extend((text, owner) for text in texts)
            if owner is not None:
                owner.pending += len(texts)

    def _fits(self, size: int, count: int, owner: Pending | None) -> bool:
        """Count `count` messages of `size` characters in, or overflow: drop everything queued,
        send nothing more, and say so."""
        answers = self.answers + (count if owner is None else 0)
        if self.queued_bytes + size > self.max_bytes or answers > self.max_answers:
            self.close()
            self.overflowed(owner is not None)
            return False
        self.queued_bytes += size
        self.answers = answers
        return True

    def _send_now(self, message: dict[str, Any], owner: Pending | None, count: int) -> None:
        """Start sending `message` (`count` messages of `owner`); if the socket cannot take it at
        once, the writer task finishes it, and what is put meanwhile waits behind it."""
        try:
            rest = send_now(self.send, message)
        except Exception:  # the socket went away; the receive loop ends with it
            return
        if rest is None:
            return
        if owner is not None:
            owner.pending += count
        self.writer = asyncio.get_running_loop().create_task(self._drain(rest, owner, count))

    async def _drain(
        self, first: Callable[[], Awaitable[None]], owner: Pending | None, count: int
    ) -> None:
        send = self.send
        try:
            await first()
            if owner is not None:
                owner.pending -= count
            while self.queued:
                sending, self.queued = self.queued, []
                if self.batches and len(sending) > 1:
                    await send({"type": SEND_TEXTS, "texts": [text for text, _ in sending]})
                    for message in sending:
                        self._sent(message)
                    continue
                for message in sending:
                    await send({"type": "websocket.send", "text": message[0]})
                    self._sent(message)
        except Exception:  # the socket went away; the receive loop ends with it
            self.queued = []
        finally:
            self.writer = None

    def _sent(self, message: tuple[str, Pending | None]) -> None:
        """`message` was handed to the socket: it no longer counts."""
        text, owner = message
        self.queued_bytes -= len(text)
        if owner is None:
            self.answers -= 1
        else:
            owner.pending -= 1

    async def drained(self) -> None:
        """Until everything queued so far has been handed to the socket."""
        while self.writer is not None and not self.closed:
            await asyncio.shield(self.writer)

    def close(self) -> None:
        """Drop what is queued; send nothing more."""
        self.closed = True
        if self.writer is not None:
            self.writer.cancel()
        self.queued = []
        self.queued_bytes = self.answers = 0
