"""The background work of a server process: fan-out, outbox delivery, escalations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.events.transport import transport_for
from app.notifications.escalation import run_escalations
from app.notifications.mailer import mailer_from_settings
from app.notifications.outbox import run_outbox
from app.services import Services

log = logging.getLogger("orderpulse.workers")

Stop = Callable[[], Awaitable[None]]


async def start_workers(services: Services) -> Stop:
    """Start every background task of this process; return the function that stops them."""
    tasks: list[asyncio.Task[None]] = []
    # Wake-ups from other processes (PostgreSQL LISTEN/NOTIFY or Redis); none on SQLite.
    transport = transport_for(settings=services.settings, db=services.db, bus=services.bus)
    if transport is not None:
        await transport.start()
    mailer = mailer_from_settings(services.settings)
    delivering = run_outbox(services.outbox, mailer=mailer, wake=services.outbox_wake)
    tasks.append(asyncio.create_task(delivering, name="outbox"))
    escalations = run_escalations(
        db=services.db,
        transaction=services.transaction,
        clock=services.clock,
        poll_seconds=services.settings.escalation_poll_seconds,
    )
    tasks.append(asyncio.create_task(escalations, name="escalations"))
    tasks.append(await services.fanout.start())  # live subscriptions read the log from here

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if transport is not None:
            await transport.stop()

    return stop
