"""Telling every process that new events committed.

The message carries no rows, only a wake-up: each process's fan-out reads the event log from
where it stopped, so a lost or duplicated wake-up loses or doubles nothing. Within one process
the bus wakes local listeners; `app/events/transport.py` carries the wake-up across processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.outages import log_failure

log = logging.getLogger(__name__)

Announcer = Callable[[], Awaitable[None]]


class EventBus:
    """Local wake-ups plus an optional cross-process announcer."""

    def __init__(self) -> None:
        self._listeners: list[asyncio.Event] = []
        self._remote: Announcer | None = None

    def listen(self) -> asyncio.Event:
        """An asyncio.Event that is set whenever new events may be in the log."""
        flag = asyncio.Event()
        self._listeners.append(flag)
        return flag

    def unlisten(self, flag: asyncio.Event) -> None:
        if flag in self._listeners:
            self._listeners.remove(flag)

    def set_remote(self, announcer: Announcer | None) -> None:
        self._remote = announcer

    def wake_local(self) -> None:
        for flag in self._listeners:
            flag.set()

    async def announce(self) -> None:
        """Called after a transaction that wrote events commits."""
        self.wake_local()
        if self._remote is not None:
            try:
                await self._remote()
            except Exception as error:  # the log is durable; other processes catch up on their poll
                log_failure(log, "could not announce events", error)
