"""Write units of work, and what wakes after each commits.

A transaction (`Database.write`) or, on PostgreSQL, a session for one self-committing statement
(`Database.one_statement_write`). After it ends: the fan-out is woken if it wrote events, the
outbox if it wrote notifications, and the viewer cache forgets the tokens it revoked. Held by
`Services` and handed to the code that opens units of its own (the order store, the outbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.tokens import REVOKED_TOKENS
from app.access.viewer_cache import ViewerCache
from app.db import Database
from app.events.bus import EventBus
from app.events.log import WROTE_EVENTS, WROTE_NOTIFICATIONS


@dataclass
class Transactions:
    db: Database
    bus: EventBus
    outbox_wake: asyncio.Event
    viewers: ViewerCache

    @asynccontextmanager
    async def transaction(self, *, one_statement: bool = False) -> AsyncIterator[AsyncSession]:
        """One write transaction; after it commits, wake the fan-out and the outbox.
        `one_statement`: PostgreSQL's `Database.one_statement_write` instead, for work whose
        only write is one statement (the order store chooses it: `OrderStore.unit`).

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
