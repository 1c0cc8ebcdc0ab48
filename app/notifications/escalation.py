"""Escalating failures still unresolved at their SLA deadline.

`escalate_overdue_failures` is one pass; `run_escalations` repeats it. Each overdue order is
escalated in its own transaction by `policy.escalate_failure`, whose conditional UPDATE of
`escalated_at` is the claim: with several passes or processes at once, exactly one writes the
"Failed Order Unresolved" notification. Its event is published after commit by
`services.transaction()`, and the outbox is woken to send the mail.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func
from sqlmodel import col, select

from app.notifications import policy
from app.observability import metrics
from app.orders import flow
from app.orders.models import SalesOrder
from app.services import Services

log = logging.getLogger("orderpulse.escalation")

BATCH_SIZE = 100
# The loop never waits less than this between passes (a guard against a hot loop).
MIN_WAIT_SECONDS = 0.01


async def escalate_overdue_failures(services: Services) -> int:
    """Escalate every order still in PF past its deadline; return how many this pass did."""
    escalated = 0
    while True:
        now = services.clock.now()
        async with services.db.read() as session:
            ids = await policy.overdue_failure_ids(session, now=now, limit=BATCH_SIZE)
        for order_id in ids:
            async with services.transaction() as session:
                done = await policy.escalate_failure(session, order_id=order_id, now=now)
            if done:  # committed
                escalated += 1
                metrics.escalation_recorded()
                log.info("order %s escalated: still failed at its SLA deadline", order_id)
        if len(ids) < BATCH_SIZE:
            return escalated


async def seconds_until_next_deadline(services: Services) -> float | None:
    """How long until the earliest unescalated failure is due (0 if overdue); None if none."""
    now = services.clock.now()
    async with services.db.read() as session:
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


async def run_escalations(services: Services) -> None:
    """Escalate overdue failures until cancelled.

    Looks every ORDERPULSE_ESCALATION_POLL_SECONDS, or sooner when the earliest deadline it knows
    of comes first (a failure made since by another process is seen at the next poll).
    """
    poll = services.settings.escalation_poll_seconds
    while True:
        wait = poll
        try:
            await escalate_overdue_failures(services)
            due_in = await seconds_until_next_deadline(services)
            if due_in is not None:
                wait = max(min(poll, due_in), MIN_WAIT_SECONDS)
        except Exception:
            log.exception("escalation pass failed; trying again in %ss", poll)
        await asyncio.sleep(wait)
