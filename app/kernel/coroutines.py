"""ASGI sends stepped by hand: a send that completes without waiting costs no task.

A server's `send` on a socket whose buffer has room finishes at its first step. Stepping its
coroutine by hand (`coroutine.send(None)`, the coroutine protocol a task itself uses) sends the
message with no task per subscriber and per event; only a send that has to wait is driven to its
end by a task (`app.graphql.ws.sending.SendQueue`), which awaits what the coroutine waits on as a
task would (a future; anything else: the next loop turn). No private attribute is read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


def send_now(send: Send, message: dict[str, Any]) -> Callable[[], Awaitable[None]] | None:
    """Start an ASGI send; None if it finished at once, else what finishes it, to call and
    await (made only then: a writer cancelled before it starts leaves nothing never awaited)."""
    coroutine = send(message)
    try:
        waiting_on = coroutine.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return None
    return functools.partial(_finish_send, coroutine, waiting_on)


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
