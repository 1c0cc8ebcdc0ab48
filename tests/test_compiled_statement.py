"""The write path's statements run as `CompiledStatement`s (on PostgreSQL, compiled once and run
on asyncpg's connection inside SQLAlchemy's transaction): they must read and write exactly what
SQLAlchemy's own execution of the same statements does."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

import app.db
from app.access.viewer import Viewer
from app.events.models import Event
from app.notifications.models import Notification
from app.notifications.recipients import _COMPILED_FAILURE_MAIL, _FAILURE_MAIL, failure_mail
from app.notifications.templates import ORDER_FAILED_TEMPLATE_NAME
from app.orders import service
from app.orders.flow import Action, FailureReason, ProvisioningOutcome, Role
from app.orders.models import SalesOrder
from app.orders.service import perform_order_action, report_provisioning_result
from app.services import Services
from tests.support.api import Factory
from tests.support.world import World, make_world

SUPPORT = Viewer(role=Role.SUPPORT)


@pytest.fixture
async def tenants(factory: Factory) -> World:
    world = await make_world(factory)
    await factory.notify(world.reseller_a, reseller_mail=True, customer_mail=True)
    return world


async def test_the_failure_mail_read_answers_as_sqlalchemy_does(
    services: Services, tenants: World
) -> None:
    customers = [tenants.customer_a1, tenants.customer_a2, tenants.customer_b1]
    async with services.db.read() as session:
        connection = await session.connection()
        for customer in customers:
            for reseller_template in (True, False):
                params = {
                    "customer_id": customer.id,
                    "builtin_name": "Order Provisioning Failed",
                    "reseller_template": reseller_template,
                }
                compiled = await _COMPILED_FAILURE_MAIL.all(connection, params)
                reference = [tuple(r) for r in (await connection.execute(_FAILURE_MAIL, params))]
                assert compiled == reference and len(compiled) == 1


async def _fail_and_resubmit(services: Services, order: SalesOrder) -> None:
    assert order.id is not None
    async with services.transaction() as session:
        await report_provisioning_result(
            session,
            viewer=SUPPORT,
            order_id=order.id,
            outcome=ProvisioningOutcome.FAILED,
            reason=FailureReason.OTHER,
            details="disk full",
            config=services.desk,
            now=services.clock.now(),
        )
    async with services.transaction() as session:
        await perform_order_action(
            session,
            viewer=SUPPORT,
            order_id=order.id,
            action=Action.RESUBMIT,
            comment="again",
            config=services.desk,
            now=services.clock.now(),
        )


async def _written(services: Services, order: SalesOrder) -> dict[str, Any]:
    """What the writes left for `order`, without ids and Message-IDs (which always differ), and
    without what the outbox (running meanwhile) changes: the delivery columns and their events."""
    async with services.db.read() as session:
        row = await session.get(SalesOrder, order.id, populate_existing=True)
        notes = (
            await session.exec(
                select(Notification)
                .where(col(Notification.order_id) == order.id)
                .order_by(col(Notification.id))
            )
        ).all()
        events = (
            await session.exec(
                select(Event)
                .where(
                    col(Event.order_id) == order.id,
                    col(Event.delivery_status).is_distinct_from("SENT"),
                )
                .order_by(col(Event.id))
            )
        ).all()
    assert row is not None
    skip = {"id", "number", "message_id", "order_id", "notification_id"}
    delivery = {"status", "attempts", "last_error", "next_attempt_at", "lease_until", "sent_at"}
    return {
        "order": {k: v for k, v in row.model_dump().items() if k not in skip},
        "notifications": [
            {
                k: v.replace(row.number, "<number>") if isinstance(v, str) else v
                for k, v in n.model_dump().items()
                if k not in skip | delivery
            }
            for n in notes
        ],
        "events": [{k: v for k, v in e.model_dump().items() if k not in skip} for e in events],
        "event_notifications": [
            [n.id for n in notes].index(e.notification_id) if e.notification_id else None
            for e in events
        ],
    }


async def test_writes_through_the_driver_equal_those_through_sqlalchemy(
    services: Services, factory: Factory, tenants: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled_runs: list[bool] = []
    in_transaction = app.db._in_transaction_or_autocommit

    def spy(adapter: Any) -> bool:
        compiled_runs.append(in_transaction(adapter))
        return compiled_runs[-1]

    monkeypatch.setattr(app.db, "_in_transaction_or_autocommit", spy)
    fast = await factory.order(tenants.customer_a1, status="PR")
    await _fail_and_resubmit(services, fast)
    if not services.db.is_sqlite:
        assert compiled_runs and all(compiled_runs)  # the driver path really ran

    monkeypatch.setattr(app.db, "_in_transaction_or_autocommit", lambda adapter: False)
    reference = await factory.order(tenants.customer_a1, status="PR")
    await _fail_and_resubmit(services, reference)

    fast_rows, reference_rows = await _written(services, fast), await _written(services, reference)
    assert fast_rows == reference_rows
    assert [n["recipient_role"] for n in fast_rows["notifications"]] == [
        "SUPPORT",
        "RESELLER",
        "CUSTOMER",
    ]
    assert [e["to_status"] for e in fast_rows["events"]] == ["PR", "PF", None, None, None, "PR"]
    assert fast_rows["event_notifications"] == [None, None, 0, 1, 2, None]


async def test_the_order_read_with_its_failure_mail_answers_as_the_two_reads_do(
    services: Services, factory: Factory, tenants: World
) -> None:
    """PostgreSQL reads a failure's order and its mail's facts in one statement
    (`with_failure_mail`): the same order, and the same mail as `failure_mail` reads alone, for
    customers whose reseller has settings (and chose no template) and whose reseller has none."""
    if services.db.is_sqlite:
        pytest.skip("SQLite reads the mail on its own")
    customers = [tenants.customer_a1, tenants.customer_a2, tenants.customer_b1]
    orders = [await factory.order(customer, status="PR") for customer in customers]
    mails = []
    for order in orders:
        assert order.id is not None
        async with services.db.read() as session:
            merged, mail = await service._visible_order(
                session, SUPPORT, order.id, failure_mail=True
            )
            alone = await service.get_visible_order(session, SUPPORT, order.id)
            reference = await failure_mail(
                session,
                customer_id=order.customer_id,
                template_name=ORDER_FAILED_TEMPLATE_NAME,
                reseller_template=True,
            )
        assert merged.model_dump() == alone.model_dump()
        assert mail == reference
        mails.append(mail)
    # reseller a's settings tell the reseller and the customer; reseller b has the defaults
    assert [(m.notify_reseller, m.notify_customer) for m in mails if m] == [
        (True, True),
        (True, True),
        (False, False),
    ]
