"""Incident mail through a real SMTP server (SPEC 10): 200 failures with one reason give support
one opening mail and bounded digests, not 200 mails; every per-order notice is still recorded;
resellers still get theirs; the SLA escalation is one mail per reseller and incident."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from app.notifications.models import Notification
from app.services import Services
from tests.incidents.helpers import (
    escalate,
    notification_counts,
    report_failed,
    tend,
)
from tests.support.api import Factory, GraphQLClient
from tests.support.clock import FakeClock
from tests.support.polling import eventually
from tests.support.smtp import SmtpServer

SUPPORT = "support@distributor.example"
FAILURES = 200


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {
        "smtp_url": smtp_server.url,
        "incident_threshold": 5,
        "incident_window_minutes": 10,
        "incident_digest_minutes": 30,
        "escalation_poll_seconds": 3600,  # the tests run the passes
        "outbox_poll_seconds": 3600,  # the outbox is woken by each commit
    }


async def all_sent(services: Services) -> None:
    """Wait until no notification is PENDING (each one mailed)."""

    async def check() -> bool:
        async with services.db.read() as session:
            rows = await session.exec(
                select(Notification.id).where(col(Notification.status) == "PENDING")
            )
            return rows.first() is None

    await eventually(check, timeout=60)


def by_recipient(smtp_server: SmtpServer) -> Counter[str]:
    return Counter(str(message["To"]) for message in smtp_server.messages)


async def test_two_hundred_failures_mail_support_once_and_each_reseller_once_at_the_deadline(
    api: GraphQLClient,
    factory: Factory,
    services: Services,
    clock: FakeClock,
    smtp_server: SmtpServer,
) -> None:
    telling = await factory.reseller(name="Northwind", email="ops@northwind.example")
    await factory.notify(telling)  # Northwind gets its per-order mail; Contoso has it off
    quiet = await factory.reseller(name="Contoso", email="ops@contoso.example")
    customers = [await factory.customer(telling), await factory.customer(quiet)]
    orders = [await factory.order(customers[i % 2], status="PR") for i in range(FAILURES)]
    system = api.as_(await factory.token("SYSTEM"))
    for order in orders:
        await report_failed(system, order)
    await all_sent(services)

    counts = await notification_counts(services)
    assert counts == {
        ("ORDER_PROVISIONING_FAILED", "SUPPORT", "SENT"): 4,  # before the incident opened
        ("ORDER_PROVISIONING_FAILED", "SUPPORT", "SUPPRESSED"): FAILURES - 4,
        ("ORDER_PROVISIONING_FAILED", "RESELLER", "SENT"): FAILURES // 2,
        ("PROVISIONING_INCIDENT_OPENED", "SUPPORT", "SENT"): 1,
    }
    assert by_recipient(smtp_server) == {SUPPORT: 5, "ops@northwind.example": FAILURES // 2}
    async with services.db.read() as session:
        suppressed = (
            await session.exec(
                select(Notification.incident_id).where(col(Notification.status) == "SUPPRESSED")
            )
        ).all()
    assert set(suppressed) == {1}
    opening = next(m for m in smtp_server.messages if "Incident INC-000001" in str(m["Subject"]))
    assert str(opening["Subject"]).strip() == (
        "Incident INC-000001: 5 orders failed: Communication error with an external system"
    )
    body = opening.get_content()
    assert "Resubmit once the external system is reachable" in body
    assert all(order.number in body for order in orders[:5])

    # Digests: at most one every 30 minutes, and only when orders joined since the last mail.
    start = clock.now()
    clock.set(start + timedelta(minutes=29, seconds=59))
    assert (await tend(services)).digests == 0
    clock.set(start + timedelta(minutes=30))
    assert (await tend(services)).digests == 1
    clock.set(start + timedelta(minutes=60))
    assert (await tend(services)).digests == 0  # nothing new
    await all_sent(services)
    assert by_recipient(smtp_server)[SUPPORT] == 6
    digest = smtp_server.messages[-1]
    assert str(digest["Subject"]).strip() == "Incident INC-000001: 200 orders, 195 new"
    assert "Still failed:  200" in digest.get_content()

    # The SLA deadline (2 business hours): one mail per reseller, listing its orders.
    before = len(smtp_server.messages)
    clock.set(start + timedelta(hours=2))
    assert await escalate(services) == FAILURES
    assert await escalate(services) == 0
    await all_sent(services)
    escalations = smtp_server.messages[before:]
    assert Counter(str(m["To"]) for m in escalations) == {
        "ops@northwind.example": 1,
        "ops@contoso.example": 1,
    }
    for message in escalations:
        assert str(message["Subject"]).strip() == (  # a long subject is folded
            "100 orders are still failed past their SLA deadline (EXTERNAL_SYSTEM_ERROR)"
        )
    northwind = next(m for m in escalations if str(m["To"]) == "ops@northwind.example")
    text = northwind.get_content()
    assert all((o.number in text) == (o.customer_id == customers[0].id) for o in orders)
    counts = await notification_counts(services)
    assert counts[("FAILED_ORDERS_UNRESOLVED", "RESELLER", "SENT")] == 2
    assert ("FAILED_ORDER_UNRESOLVED", "RESELLER", "SENT") not in counts
