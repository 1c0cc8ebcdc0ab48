"""Each socket's send queue: messages go out in order, mostly with no task at all.

A server's `send` on a socket whose buffer has room completes without waiting, so stepping its
coroutine by hand sends the message with no task per subscriber and per event: at ten thousand
subscribers, those tasks were most of the fan-out's time and most of what made the garbage
collector run full passes. Only a send that must wait starts the queue's writer task, and what
is queued meanwhile waits behind it. Each message may name an owner (`Pending`) that counts its
messages not yet handed to the socket, which is how a subscription's queue is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger("orderpulse.websocket")

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Pending(Protocol):
    """Whoever owns queued messages and counts them."""

    pending: int


def send_now(send: Send, message: dict[str, Any]) -> Awaitable[None] | None:
    """Start an ASGI send; None if it finished at once, else what is left of it, to await."""
    coroutine = send(message)
    try:
        waiting_on = coroutine.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return None
    return _finish_send(coroutine, waiting_on)


async def _finish_send(coroutine: Any, waiting_on: Any) -> None:
    """Drive a hand-stepped coroutine to its end, as a task would."""
    try:
        while True:
            if isinstance(waiting_on, asyncio.Future):
                await asyncio.wait((waiting_on,))  # its outcome is read by the coroutine itself
            else:
                await asyncio.sleep(0)
            waiting_on = coroutine.send(None)
    except StopIteration:
        return
    finally:
        coroutine.close()


class SendQueue:
    """The messages of one socket, in order."""

    __slots__ = ("closed", "queued", "send", "writer")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.queued: list[tuple[str, Pending | None]] = []
        self.writer: asyncio.Task[None] | None = None
        self.closed = False

    def put(self, text: str, owner: Pending | None) -> None:
        """Send `text` after everything queued before it.

        When nothing is queued and the socket takes it at once (the usual case), it is sent right
        here, with nothing left behind for the garbage collector. Otherwise it waits, counted in
        its owner's `pending`, for the writer task.
        """
        if self.closed:
            return
        if self.writer is None:
            try:
                rest = send_now(self.send, {"type": "websocket.send", "text": text})
            except Exception:  # the socket went away; the receive loop ends with it
                return
            if rest is None:
                return
            self.writer = asyncio.get_running_loop().create_task(self._drain(rest, owner))
        else:
            self.queued.append((text, owner))
        if owner is not None:
            owner.pending += 1

    async def _drain(self, first: Awaitable[None], owner: Pending | None) -> None:
        send = self.send
        try:
            await first
            if owner is not None:
                owner.pending -= 1
            while self.queued:
                sending, self.queued = self.queued, []
                for text, each in sending:
                    await send({"type": "websocket.send", "text": text})
                    if each is not None:
                        each.pending -= 1
        except Exception:  # the socket went away; the receive loop ends with it
            self.queued = []
        finally:
            self.writer = None

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
