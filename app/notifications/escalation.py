"""Escalating failures still unresolved at their SLA deadline.

`escalate_overdue_failures` is one pass; `run_escalations` repeats it. Each overdue order is
escalated in its own transaction by `recipients.escalate_failure`, whose conditional UPDATE of
`escalated_at` is the claim: with several passes or processes at once, exactly one writes the
"Failed Order Unresolved" notification. Its event is published after commit by
the `transaction` it is given (the process's unit of work, `Services.transaction`), which also
wakes the outbox to send the mail. Each function takes only the values it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Clock, Database
from app.incidents import rules as incidents
from app.notifications import recipients
from app.observability import metrics
from app.orders import flow
from app.orders.models import SalesOrder
from app.outages import log_failure

log = logging.getLogger("orderpulse.escalation")

BATCH_SIZE = 100
# The loop never waits less than this between passes (a guard against a hot loop).
MIN_WAIT_SECONDS = 0.01

Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Opens one write transaction that publishes its events and wakes the outbox after commit."""


async def escalate_overdue_failures(*, db: Database, transaction: Transaction, clock: Clock) -> int:
    """Escalate every order still in PF past its deadline; return how many this pass did.
    An incident's orders are escalated together: one mail per reseller and incident."""
    escalated = await escalate_incident_failures(db=db, transaction=transaction, clock=clock)
    while True:
        now = clock.now()
        async with db.read() as session:
            ids = await recipients.overdue_failure_ids(session, now=now, limit=BATCH_SIZE)
        for order_id in ids:
            async with transaction() as session:
                done = await recipients.escalate_failure(session, order_id=order_id, now=now)
            if done:  # committed
                escalated += 1
                metrics.escalation_recorded()
                log.info("order %s escalated: still failed at its SLA deadline", order_id)
        if len(ids) < BATCH_SIZE:
            return escalated


async def escalate_incident_failures(
    *, db: Database, transaction: Transaction, clock: Clock
) -> int:
    """The overdue orders of incidents, one "Failed Orders Unresolved" mail per reseller and
    incident (`incidents.escalate_incident_group`); how many orders this pass escalated."""
    escalated = 0
    while True:
        now = clock.now()
        async with db.read() as session:
            groups = await incidents.overdue_incident_groups(session, now=now, limit=BATCH_SIZE)
        for incident_id, reseller_id in groups:
            async with transaction() as session:
                done = await incidents.escalate_incident_group(
                    session, incident_id=incident_id, reseller_id=reseller_id, now=now
                )
            if done:
                escalated += done
                metrics.escalation_recorded()
                log.info(
                    "%s orders of incident %s escalated to reseller %s in one mail",
                    done,
                    incident_id,
                    reseller_id,
                )
        if len(groups) < BATCH_SIZE:
            return escalated


async def seconds_until_next_deadline(*, db: Database, clock: Clock) -> float | None:
    """How long until the earliest unescalated failure is due (0 if overdue); None if none."""
    now = clock.now()
    async with db.read() as session:
        deadline = (
            await session.exec(
                select(func.min(SalesOrder.sla_deadline)).where(
                    col(SalesOrder.status) == flow.Status.PF.value,
                    col(SalesOrder.escalated_at).is_(None),
                )
            )
        ).one()
    if deadline is None:
        return None
    return max((deadline - now).total_seconds(), 0.0)


async def run_escalations(
    *, db: Database, transaction: Transaction, clock: Clock, poll_seconds: float
) -> None:
    """Escalate overdue failures until cancelled.

    Looks every `poll_seconds` (ORDERPULSE_ESCALATION_POLL_SECONDS), or sooner when the earliest
    deadline it knows of comes first (a failure made since by another process is seen at the next
    poll).
    """
    poll = poll_seconds
    while True:
        wait = poll
        try:
            await escalate_overdue_failures(db=db, transaction=transaction, clock=clock)
            due_in = await seconds_until_next_deadline(db=db, clock=clock)
            if due_in is not None:
                wait = max(min(poll, due_in), MIN_WAIT_SECONDS)
        except Exception as error:
            log_failure(log, "escalation pass failed; trying again in %ss", error, poll)
        await asyncio.sleep(wait)
