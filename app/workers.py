"""The background work of a server process: fan-out, outbox delivery, escalations.

`start_workers` returns the running `Workers`: awaiting `stop()` (or the object itself) ends
them; `problems()` says what is wrong with them for `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.events.transport import EventTransport, transport_for
from app.incidents.upkeep import run_incident_upkeep
from app.notifications.escalation import run_escalations
from app.notifications.mailer import mailer_from_settings
from app.notifications.outbox import run_outbox
from app.services import Services

log = logging.getLogger("orderpulse.workers")

Stop = Callable[[], Awaitable[None]]
STOP_GRACE_SECONDS = 5.0


@dataclass
class Workers:
    """This process's background tasks and its cross-process transport (None on SQLite)."""

    tasks: list[asyncio.Task[None]]
    transport: EventTransport | None

    def problems(self) -> list[str]:
        """Why this process cannot serve properly right now (empty when all is well): a task
        that ended (they only end when stopped), or a transport connection that is down."""
        found = [f"the {task.get_name()} worker has stopped" for task in self.tasks if task.done()]
        if self.transport is not None and not self.transport.connected.is_set():
            found.append(f"the {type(self.transport).__name__} connection is down")
        return found

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Cancel the tasks and stop the transport, waiting at most `grace` seconds for each:
        a task stuck in a database call on a connection the server dropped must not hold the
        process's shutdown (or a test's) forever."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _done, stuck = await asyncio.wait(self.tasks, timeout=grace)
            for task in stuck:
                log.warning("the %s worker did not stop within %.0f s", task.get_name(), grace)
            for task in self.tasks:
                if task.done() and not task.cancelled():
                    with contextlib.suppress(Exception):
                        task.result()  # retrieved, so asyncio does not report it again
        if self.transport is not None:
            try:
                await asyncio.wait_for(self.transport.stop(), grace)
            except TimeoutError:
                log.warning("the event transport did not stop within %.0f s", grace)

    async def __call__(self) -> None:
        await self.stop()


async def start_workers(services: Services) -> Workers:
    """Start every background task of this process; `await workers.stop()` ends them."""
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
    upkeep = run_incident_upkeep(
        db=services.db,
        transaction=services.transaction,
        clock=services.clock,
        config=services.desk.incidents,
        poll_seconds=services.settings.escalation_poll_seconds,
    )
    tasks.append(asyncio.create_task(upkeep, name="incidents"))
    tasks.append(await services.fanout.start())  # live subscriptions read the log from here
    return Workers(tasks=tasks, transport=transport)
