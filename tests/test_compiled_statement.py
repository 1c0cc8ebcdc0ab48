"""The write path's statements run as `CompiledStatement`s (on PostgreSQL, compiled once and run
on asyncpg's connection inside SQLAlchemy's transaction): they must read and write exactly what
SQLAlchemy's own execution of the same statements does."""

from __future__ import annotations

from typing import Any

import pytest

import app.db
from app.access.viewer import Viewer
from app.notifications.models import NotificationKind
from app.notifications.recipients import (
    _COMPILED_FAILURE_MAIL,
    _FAILURE_MAIL,
    failure_mail,
    failure_mail_params,
)
from app.notifications.rules import BUILTIN_TEMPLATE_NAMES, MailTemplate
from app.notifications.service import create_template, update_settings
from app.orders import service
from app.orders.flow import Role
from app.services import Services
from tests.support.api import Factory
from tests.support.world import World, make_world
from tests.support.writes import fail_and_resubmit, written

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
            for kind in BUILTIN_TEMPLATE_NAMES:
                params = {"customer_id": customer.id, **failure_mail_params(kind)}
                compiled = await _COMPILED_FAILURE_MAIL.all(connection, params)
                reference = [tuple(r) for r in (await connection.execute(_FAILURE_MAIL, params))]
                assert compiled == reference and len(compiled) == 1


async def test_the_failure_mail_read_gives_the_chosen_template_and_the_kinds_builtin_one(
    services: Services, tenants: World
) -> None:
    """With a template chosen by the reseller: the same row both ways, and the mail holds that
    template and the built-in one of each kind (`rules` picks; tests/notifications/test_rules.py)."""
    reseller_id = tenants.reseller_a.id
    assert reseller_id is not None
    async with services.transaction() as session:
        now = services.clock.now()
        mine = await create_template(
            session,
            viewer=SUPPORT,
            name="Mine",
            subject="Mine {{ order.number }}",
            body="mine\n",
            now=now,
        )
        await update_settings(
            session,
            viewer=SUPPORT,
            reseller_id=reseller_id,
            notify_reseller=None,
            notify_customer=None,
            template_id=mine.id,
            template_given=True,
            now=now,
        )
    customer_id = tenants.customer_a1.id
    assert customer_id is not None
    async with services.db.read() as session:
        connection = await session.connection()
        for kind, builtin_name in BUILTIN_TEMPLATE_NAMES.items():
            params = {"customer_id": customer_id, **failure_mail_params(kind)}
            compiled = await _COMPILED_FAILURE_MAIL.all(connection, params)
            reference = [tuple(r) for r in (await connection.execute(_FAILURE_MAIL, params))]
            assert compiled == reference and len(compiled) == 1
            mail = await failure_mail(session, customer_id=customer_id, kind=kind)
            assert mail.chosen_template == MailTemplate("Mine", "Mine {{ order.number }}", "mine\n")
            assert mail.builtin_template.name == builtin_name
            assert (mail.notify_reseller, mail.notify_customer) == (True, True)


async def test_writes_through_the_driver_equal_those_through_sqlalchemy(
    services: Services, factory: Factory, tenants: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled_runs: list[bool] = []
    in_transaction = app.db.asyncpg_in_transaction_or_autocommit

    def spy(adapter: Any) -> bool:
        compiled_runs.append(in_transaction(adapter))
        return compiled_runs[-1]

    monkeypatch.setattr(app.db, "asyncpg_in_transaction_or_autocommit", spy)
    fast = await factory.order(tenants.customer_a1, status="PR")
    await fail_and_resubmit(services, fast)
    if not services.db.is_sqlite:
        assert compiled_runs and all(compiled_runs)  # the driver path really ran

    monkeypatch.setattr(app.db, "asyncpg_in_transaction_or_autocommit", lambda adapter: False)
    reference = await factory.order(tenants.customer_a1, status="PR")
    await fail_and_resubmit(services, reference)

    fast_rows, reference_rows = await written(services, fast), await written(services, reference)
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
                kind=NotificationKind.ORDER_PROVISIONING_FAILED,
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
