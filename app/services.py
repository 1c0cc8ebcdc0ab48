"""What a running process holds: settings, database, clock, bus, and the unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.viewer_cache import ViewerCache
from app.db import Clock, Database, SystemClock
from app.events.bus import EventBus
from app.events.fanout import Fanout
from app.incidents.rules import IncidentConfig
from app.notifications.outbox import DeliveryPolicy, Outbox
from app.notifications.sla import BusinessCalendar, add_business_hours
from app.orders.service import OrderDeskConfig
from app.orders.store import OrderStore
from app.settings import Settings
from app.transactions import Transactions

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
    transactions: Transactions = field(init=False)
    orders: OrderStore = field(init=False)

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
        self.transactions = Transactions(
            db=self.db, bus=self.bus, outbox_wake=self.outbox_wake, viewers=self.viewers
        )
        self.orders = OrderStore(db=self.db, transactions=self.transactions)
        self.fanout = Fanout(
            db=self.db,
            bus=self.bus,
            queue_size=self.settings.ws_queue_size,
            poll_seconds=self.settings.fanout_poll_seconds,
        )

    async def run_write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in one `transaction`, and what it returns."""
        async with self.transaction() as session:
            return await work(session)

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One write transaction (`Transactions.transaction`)."""
        return self.transactions.transaction()
