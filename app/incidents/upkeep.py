"""The incident worker: support's digests of open incidents, and resolving quiet ones.

`tend_incidents` is one pass; `run_incident_upkeep` repeats it (started from app/workers.py like
the escalations). Each incident is handled in its own transaction, whose conditional UPDATE is
the claim, so several processes send one digest and resolve an incident once; the events are
published and the outbox woken after commit by the `transaction` it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Clock, Database
from app.incidents import rules
from app.incidents.rules import IncidentConfig
from app.outages import log_failure

log = logging.getLogger("orderpulse.incidents")

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@dataclass(frozen=True)
class UpkeepReport:
    digests: int
    resolved: int


async def tend_incidents(
    *, db: Database, transaction: Transaction, clock: Clock, config: IncidentConfig
) -> UpkeepReport:
    """One pass over the open incidents: a digest where one is due, resolve the quiet ones."""
    async with db.read() as session:
        ids = await rules.open_incident_ids(session)
    digests = resolved = 0
    for incident_id in ids:
        now = clock.now()
        async with transaction() as session:
            if await rules.resolve_if_quiet(
                session, incident_id=incident_id, config=config, now=now
            ):
                resolved += 1
                log.info("incident %s resolved by itself", incident_id)
                continue
        async with transaction() as session:
            if await rules.send_digest(session, incident_id=incident_id, config=config, now=now):
                digests += 1
    return UpkeepReport(digests=digests, resolved=resolved)


async def run_incident_upkeep(
    *,
    db: Database,
    transaction: Transaction,
    clock: Clock,
    config: IncidentConfig,
    poll_seconds: float,
) -> None:
    """`tend_incidents` every `poll_seconds` until cancelled."""
    while True:
        try:
            await tend_incidents(db=db, transaction=transaction, clock=clock, config=config)
        except Exception as error:
            log_failure(log, "incident upkeep failed; trying again in %ss", error, poll_seconds)
        await asyncio.sleep(poll_seconds)
