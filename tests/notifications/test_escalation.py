"""The SLA escalation: a failure still in PF at its business-hours deadline is escalated once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, func, select

from app.db import Database
from app.events.models import TOPIC_NOTIFICATION, Event
from app.graphql.ids import parse_global_id
from app.notifications import escalation, recipients
from app.notifications.models import Notification
from app.services import Services
from app.settings import Settings
from tests.notifications.helpers import (
    NOTIFICATION_FIELDS,
    fail_order,
    outbox_idle,
)
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.clock import FakeClock
from tests.support.polling import eventually
from tests.support.smtp import SmtpServer

RESELLER_EMAIL = "ops@northwind.example"
ORDER = (
    """query($id: ID!) { order(id: $id) { status failure { failedAt slaDeadline escalatedAt }
    notifications { %s } } }"""
    % NOTIFICATION_FIELDS
)
ACT = """mutation($input: PerformOrderActionInput!) { performOrderAction(input: $input) {
    order { status } userErrors { code message } } }"""
REPORT = """mutation($input: ReportProvisioningResultInput!) {
    reportProvisioningResult(input: $input) { order { status failure { slaDeadline } }
    userErrors { code message } } }"""


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    # The app's own escalation loop waits an hour between passes: the tests run the passes.
    return {
        "smtp_url": smtp_server.url,
        "outbox_poll_seconds": 3600,
        "escalation_poll_seconds": 3600,
    }


class Desk:
    def __init__(self, api: GraphQLClient, factory: Factory) -> None:
        self.api = api
        self.factory = factory

    async def setup(self) -> Desk:
        self.reseller = await self.factory.reseller(name="Northwind", email=RESELLER_EMAIL)
        self.customer = await self.factory.customer(self.reseller, name="Acme")
        await self.factory.notify(self.reseller)  # the reseller is told of failures too
        self.support = self.api.as_(await self.factory.token("SUPPORT"))
        self.system = self.api.as_(await self.factory.token("SYSTEM"))
        self.reseller_client = self.api.as_(
            await self.factory.token("RESELLER", reseller=self.reseller)
        )
        return self

    async def fail(self) -> dict[str, Any]:
        """A failed order, once its notifications were sent (so moving the clock is safe)."""
        order = await fail_order(self.support, self.system, gid("Customer", self.customer))
        await outbox_idle(self.factory.services)
        return order

    async def order(self, order_id: str) -> dict[str, Any]:
        data = await self.support.data(ORDER, {"id": order_id})
        result: dict[str, Any] = data["order"]
        return result

    async def unresolved(self, order_id: str) -> list[dict[str, Any]]:
        return [
            n
            for n in (await self.order(order_id))["notifications"]
            if n["kind"] == "FAILED_ORDER_UNRESOLVED"
        ]


@pytest.fixture
async def desk(api: GraphQLClient, factory: Factory) -> Desk:
    return await Desk(api, factory).setup()


async def escalate(services: Services) -> int:
    """One escalation pass with the values the worker gets from `services`."""
    return await escalation.escalate_overdue_failures(
        db=services.db, transaction=services.transaction, clock=services.clock
    )


async def seconds_until_next_deadline(services: Services) -> float | None:
    return await escalation.seconds_until_next_deadline(db=services.db, clock=services.clock)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class TestBusinessCalendar:
    """The deadline is counted in the configured calendar's business hours."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "timezone": "Europe/Amsterdam",
            "business_days": "mon-fri",
            "business_hours": "09:00-17:00",
            "holidays": "NL",
            "failure_sla_hours": 2,
            "escalation_poll_seconds": 3600,
        }

    @pytest.mark.parametrize(
        ("failed_at", "deadline"),
        [
            # Tuesday 10:00 CET: the same morning.
            ("2026-11-17T09:00:00+00:00", "2026-11-17T11:00:00+00:00"),
            # Friday 16:00 CEST, the weekend the clocks go back: 1 h Friday, 1 h Monday (CET).
            ("2026-10-23T14:00:00+00:00", "2026-10-26T09:00:00+00:00"),
            # Christmas Eve 16:30: 0.5 h, then a holiday, the weekend, 1.5 h on Monday.
            ("2026-12-24T15:30:00+00:00", "2026-12-28T09:30:00+00:00"),
            # Saturday: counting starts at Monday's opening.
            ("2026-11-21T12:00:00+00:00", "2026-11-23T10:00:00+00:00"),
        ],
    )
    async def test_deadline(
        self, desk: Desk, clock: FakeClock, failed_at: str, deadline: str
    ) -> None:
        clock.set(at(failed_at))
        order = await desk.fail()
        assert order["failure"]["failedAt"] == failed_at
        assert order["failure"]["slaDeadline"] == deadline
        assert order["failure"]["escalatedAt"] is None


async def test_an_unresolved_failure_is_escalated_once_at_its_deadline(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    # The reseller switched its own notifications off; the escalation reaches it anyway.
    settings = await desk.reseller_client.data(
        """mutation($r: ID!) { updateNotificationSettings(input: {resellerId: $r,
        notifyReseller: false}) { userErrors { code } } }""",
        {"r": gid("Reseller", desk.reseller)},
    )
    assert settings["updateNotificationSettings"]["userErrors"] == []
    order = await desk.fail()
    (support_mail,) = await smtp_server.wait_for(1)
    assert support_mail["To"] == "support@distributor.example"
    deadline = at(order["failure"]["slaDeadline"])
    assert deadline == clock.now() + timedelta(hours=2)
    assert await seconds_until_next_deadline(services) == 7200

    clock.set(deadline - timedelta(microseconds=1))
    assert await escalate(services) == 0
    assert await desk.unresolved(order["id"]) == []

    clock.set(deadline)
    assert await escalate(services) == 1
    assert await seconds_until_next_deadline(services) is None
    escalated = await desk.order(order["id"])
    assert escalated["status"] == "PF"
    assert escalated["failure"]["escalatedAt"] == deadline.isoformat()
    (notification,) = await desk.unresolved(order["id"])
    assert notification["recipientRole"] == "RESELLER"
    assert notification["email"] == RESELLER_EMAIL
    assert notification["subject"] == (
        f"Order {order['number']} is still failed past its SLA deadline"
    )
    assert f"past its SLA deadline of {deadline.isoformat()}" in notification["body"]

    # The commit woke the outbox: the mail goes out at once.
    mail = (await smtp_server.wait_for(2))[1]
    assert mail["To"] == RESELLER_EMAIL
    assert mail["Message-ID"] == notification["messageId"]
    assert mail["Subject"] == notification["subject"]

    # Published as a notification event, which the reseller may see.
    nid = notification["id"]
    async with services.db.read() as session:
        statuses = (
            await session.exec(
                select(Event.delivery_status, Event.recipient_role).where(
                    col(Event.topic) == TOPIC_NOTIFICATION,
                    col(Event.notification_id) == _pk(nid),
                )
            )
        ).all()
    assert statuses[0] == ("PENDING", "RESELLER")
    listed = await desk.reseller_client.data(
        """{ notifications(filter: {kind: FAILED_ORDER_UNRESOLVED}) {
        totalCount edges { node { id email } } } }"""
    )
    assert listed["notifications"]["totalCount"] == 1
    assert listed["notifications"]["edges"][0]["node"] == {"id": nid, "email": RESELLER_EMAIL}

    # A second pass, even much later, does nothing more.
    clock.advance(days=3)
    assert await escalate(services) == 0
    assert len(await desk.unresolved(order["id"])) == 1
    assert (await desk.order(order["id"]))["failure"]["escalatedAt"] == deadline.isoformat()
    await eventually(lambda: _sent_count(services, 2))
    assert len(smtp_server.messages) == 2


async def test_the_escalation_uses_its_builtin_template_whatever_the_reseller_chose(
    desk: Desk, services: Services, clock: FakeClock
) -> None:
    """The reseller's chosen template is for the failure mail only (`recipients.failure_mail`
    reads both; `rules.failure_unresolved` never takes the chosen one)."""
    created = await desk.support.data(
        """mutation { createNotificationTemplate(input: {name: "Mine",
        subject: "Mine {{ order.number }}", body: "mine\\n"}) {
        notificationTemplate { id } userErrors { code } } }"""
    )
    template = created["createNotificationTemplate"]["notificationTemplate"]
    chosen = await desk.reseller_client.data(
        """mutation($r: ID!, $t: ID) { updateNotificationSettings(input: {resellerId: $r,
        orderNotificationTemplateId: $t}) { userErrors { code } } }""",
        {"r": gid("Reseller", desk.reseller), "t": template["id"]},
    )
    assert chosen["updateNotificationSettings"]["userErrors"] == []
    order = await desk.fail()
    failed = (await desk.order(order["id"]))["notifications"]
    assert {(n["recipientRole"], n["subject"]) for n in failed} == {
        ("SUPPORT", f"Mine {order['number']}"),
        ("RESELLER", f"Mine {order['number']}"),
    }
    clock.set(at(order["failure"]["slaDeadline"]))
    assert await escalate(services) == 1
    (notification,) = await desk.unresolved(order["id"])
    assert notification["subject"] == (
        f"Order {order['number']} is still failed past its SLA deadline"
    )


async def test_leaving_pf_before_the_deadline_cancels_the_escalation(
    desk: Desk, services: Services, clock: FakeClock
) -> None:
    resubmitted = await desk.fail()
    cancelled = await desk.fail()
    clock.advance(minutes=30)
    for order, action in ((resubmitted, "RESUBMIT"), (cancelled, "CANCEL")):
        moved = await desk.support.data(ACT, {"input": {"orderId": order["id"], "action": action}})
        assert moved["performOrderAction"]["userErrors"] == []
    clock.advance(hours=3)
    assert await seconds_until_next_deadline(services) is None
    assert await escalate(services) == 0
    for order in (resubmitted, cancelled):
        assert await desk.unresolved(order["id"]) == []
        assert (await desk.order(order["id"]))["failure"]["escalatedAt"] is None

    # Failing again starts a new deadline, counted from the new failure.
    again = await desk.system.data(
        REPORT,
        {
            "input": {
                "orderId": resubmitted["id"],
                "outcome": "FAILED",
                "reason": "EXTERNAL_SYSTEM_ERROR",
            }
        },
    )
    assert again["reportProvisioningResult"]["userErrors"] == []
    new_deadline = at(again["reportProvisioningResult"]["order"]["failure"]["slaDeadline"])
    await outbox_idle(services)
    assert new_deadline == clock.now() + timedelta(hours=2)
    clock.set(new_deadline - timedelta(seconds=1))
    assert await escalate(services) == 0
    clock.set(new_deadline)
    assert await escalate(services) == 1
    assert len(await desk.unresolved(resubmitted["id"])) == 1
    assert await desk.unresolved(cancelled["id"]) == []


async def test_concurrent_passes_escalate_each_failure_exactly_once(
    settings: Settings, factory: Factory, services: Services, clock: FakeClock
) -> None:
    """Two processes (two engines on one SQLite file) escalate the same overdue failures."""
    orders = [await factory.order(status="PF") for _ in range(6)]
    clock.advance(hours=2)
    first = Services(settings=settings, db=Database(settings.database_url), clock=clock)
    second = Services(settings=settings, db=Database(settings.database_url), clock=clock)
    try:
        # Interleaved by hand: both see every overdue failure, then both try each one.
        async with first.db.read() as s1, second.db.read() as s2:
            seen_first = await recipients.overdue_failure_ids(s1, now=clock.now())
            seen_second = await recipients.overdue_failure_ids(s2, now=clock.now())
        assert sorted(seen_first) == sorted(seen_second) == [o.id for o in orders]
        wins = []
        for order_id in seen_first[:3]:
            for worker in (first, second):
                async with worker.transaction() as session:
                    wins.append(
                        await recipients.escalate_failure(
                            session, order_id=order_id, now=clock.now()
                        )
                    )
        assert wins == [True, False, True, False, True, False]
        # And truly at once, for the rest.
        counts = await asyncio.gather(escalate(first), escalate(second))
        assert sum(counts) == 3
    finally:
        await first.db.dispose()
        await second.db.dispose()
    async with services.db.read() as session:
        per_order = (
            await session.exec(
                select(Notification.order_id, func.count())
                .where(col(Notification.kind) == "FAILED_ORDER_UNRESOLVED")
                .group_by(col(Notification.order_id))
            )
        ).all()
    assert sorted(per_order) == sorted((o.id, 1) for o in orders)
    assert await escalate(services) == 0


class TestRunningServer:
    @pytest.fixture
    def settings_overrides(self, smtp_server: SmtpServer) -> dict[str, Any]:
        return {"smtp_url": smtp_server.url, "escalation_poll_seconds": 0.05}

    async def test_the_server_escalates_by_itself(
        self, desk: Desk, smtp_server: SmtpServer, clock: FakeClock
    ) -> None:
        order = await desk.fail()
        await smtp_server.wait_for(2)  # support and reseller
        clock.set(at(order["failure"]["slaDeadline"]))

        async def escalated() -> list[dict[str, Any]] | None:
            return await desk.unresolved(order["id"]) or None

        (notification,) = await eventually(escalated)
        messages = await smtp_server.wait_for(3)
        assert messages[2]["Message-ID"] == notification["messageId"]
        assert messages[2]["To"] == RESELLER_EMAIL


async def _sent_count(services: Services, count: int) -> bool:
    async with services.db.read() as session:
        statuses = (await session.exec(select(Notification.status))).all()
    return list(statuses) == ["SENT"] * count


def _pk(global_id: str) -> int:
    parsed = parse_global_id(global_id, "Notification")
    assert parsed is not None
    return parsed[1]
