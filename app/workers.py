"""The background work of a server process: fan-out, outbox delivery, escalations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.services import Services

log = logging.getLogger("orderpulse.workers")

Stop = Callable[[], Awaitable[None]]


async def start_workers(services: Services) -> Stop:
    """Start every background task of this process; return the function that stops them."""
    tasks: list[asyncio.Task[None]] = []

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return stop
