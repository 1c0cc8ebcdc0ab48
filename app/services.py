"""What a running process holds: settings, database, clock, bus, and the unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.tokens import REVOKED_TOKENS
from app.access.viewer_cache import ViewerCache
from app.db import Clock, Database, NeedsTransaction, SystemClock
from app.events.bus import EventBus
from app.events.fanout import Fanout
from app.events.log import WROTE_EVENTS, WROTE_NOTIFICATIONS
from app.incidents.rules import IncidentConfig
from app.notifications.outbox import DeliveryPolicy, Outbox
from app.notifications.sla import BusinessCalendar, add_business_hours
from app.orders.service import OrderDeskConfig
from app.settings import Settings

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    bus: EventBus = field(default_factory=EventBus)
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    calendar: BusinessCalendar = field(init=False)
    desk: OrderDeskConfig = field(init=False)
    outbox: Outbox = field(init=False)
    fanout: Fanout = field(init=False)
    viewers: ViewerCache = field(init=False)

    def __post_init__(self) -> None:
        self.calendar = BusinessCalendar.from_settings(self.settings)
        hours = self.settings.failure_sla_hours
        self.desk = OrderDeskConfig(
            approval_threshold=self.settings.approval_threshold,
            blocked_email_domains=self.settings.blocked_email_domains,
            support_email=self.settings.support_email,
            sla_deadline=lambda failed_at: add_business_hours(self.calendar, failed_at, hours),
            incidents=IncidentConfig(
                threshold=self.settings.incident_threshold,
                window=timedelta(minutes=self.settings.incident_window_minutes),
                digest_every=timedelta(minutes=self.settings.incident_digest_minutes),
                support_email=self.settings.support_email,
            ),
        )
        self.outbox = Outbox(
            transaction=self.transaction,
            db=self.db,
            clock=self.clock,
            policy=DeliveryPolicy.from_settings(self.settings),
            events_committed=self.bus.announce,
        )
        self.viewers = ViewerCache(
            db=self.db, clock=self.clock, max_age_seconds=self.settings.token_check_seconds
        )
        self.fanout = Fanout(
            db=self.db,
            bus=self.bus,
            queue_size=self.settings.ws_queue_size,
            poll_seconds=self.settings.fanout_poll_seconds,
        )

    async def run_write(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, one_statement: bool = False
    ) -> T:
        """`work` in one `transaction`, and what it returns.

        `one_statement`: work whose write is usually one statement (an order's status change
        with its event, a failure with its notifications). On PostgreSQL it runs first on an
        autocommit connection (`Database.one_statement_write`: no BEGIN and COMMIT round trips);
        if it needs more than that statement, the guard stops it before it writes anything and
        it runs again in a transaction.
        """
        if one_statement and not self.db.is_sqlite:
            try:
                async with self.transaction(one_statement=True) as session:
                    return await work(session)
            except NeedsTransaction:
                pass
        async with self.transaction() as session:
            return await work(session)

    @asynccontextmanager
    async def transaction(self, *, one_statement: bool = False) -> AsyncIterator[AsyncSession]:
        """One write transaction; after it commits, wake the fan-out and the outbox.
        `one_statement`: PostgreSQL's `Database.one_statement_write` instead (see `run_write`).

        A transaction that began writing events and rolled back wakes the fan-out too: while it
        was open, the readers held back the events committed after its start (app/events/log.py).
        """
        wrote_events = False
        unit = self.db.one_statement_write() if one_statement else self.db.write()
        try:
            async with unit as session:
                try:
                    yield session
                finally:
                    wrote_events = bool(session.info.get(WROTE_EVENTS))
                wrote_notifications = bool(session.info.get(WROTE_NOTIFICATIONS))
                revoked = set(session.info.get(REVOKED_TOKENS, ()))
            if revoked:
                self.viewers.forget_hashes(revoked)
            if wrote_notifications:
                self.outbox_wake.set()
        finally:
            if wrote_events:
                await self.bus.announce()
