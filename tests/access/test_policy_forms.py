"""The SQL and the in-memory form of every visibility rule give the same answer.

Each rule in app/access/policy.py is written once and produces both forms. This runs every rule,
every event topic (and one no rule knows), every role (with and without its tenant ids) and rows
that vary each rule field on its own through both: SQL against the test's real database, and the
in-memory check over the same rows read back, requiring the same set of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import ColumnElement
from sqlmodel import SQLModel, col, select

from app.access import policy
from app.access.viewer import Viewer
from app.events import models as event_models
from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification, NotificationKind, RecipientRole
from app.orders.flow import Role
from app.orders.models import Customer, Reseller, SalesOrder
from app.services import Services
from tests.support.api import Factory
from tests.support.world import World, make_world

UNKNOWN_TOPIC = "topic_without_a_rule"
KNOWN_TOPICS = sorted(
    value for name, value in vars(event_models).items() if name.startswith("TOPIC_")
)


def every_viewer(world: World) -> dict[str, Viewer]:
    """The world's viewers, plus each tenant role missing the id its rule compares."""
    viewers = world.viewers()
    viewers["reseller without id"] = Viewer(role=Role.RESELLER)
    viewers["customer without id"] = Viewer(role=Role.CUSTOMER, reseller_id=world.reseller_a.id)
    return viewers


@pytest.fixture
async def world(factory: Factory, services: Services) -> World:
    """The world with one order per customer, and notification and event rows that cross every
    reseller with every customer and every recipient role (each rule field varies on its own)."""
    world = await make_world(factory)
    order = await factory.order(world.customer_a1, status="PR")
    for customer in world.customers.values():
        await factory.order(customer, status="PR")
    now = services.clock.now()
    async with services.transaction() as session:
        for reseller in world.resellers.values():
            for customer in world.customers.values():
                for role in [*RecipientRole, None]:
                    assert order.id is not None and reseller.id and customer.id
                    tenant = {
                        "order_id": order.id,
                        "reseller_id": reseller.id,
                        "customer_id": customer.id,
                    }
                    for topic in [*KNOWN_TOPICS, UNKNOWN_TOPIC]:
                        session.add(
                            Event(topic=topic, recipient_role=role, occurred_at=now, **tenant)
                        )
                    if role is None:
                        continue
                    session.add(
                        Notification(
                            kind=NotificationKind.ORDER_PROVISIONING_FAILED.value,
                            recipient_role=role.value,
                            email="someone@example.com",
                            subject="s",
                            body="b",
                            message_id=f"<{reseller.id}.{customer.id}.{role}@test>",
                            created_at=now,
                            **tenant,
                        )
                    )
    return world


async def both_forms(
    services: Services,
    model: type[SQLModel],
    sql: ColumnElement[bool],
    in_memory: Callable[[Any], bool],
    narrowing: Sequence[ColumnElement[bool]] = (),
) -> tuple[set[int], set[int]]:
    """The ids `sql` selects from the database, and those `in_memory` accepts of the same rows."""
    pk = col(model.id)  # type: ignore[attr-defined]
    async with services.db.read() as session:
        selected = set((await session.exec(select(pk).where(sql, *narrowing))).all())
        rows = (await session.exec(select(model).where(*narrowing))).all()
    return selected, {row.id for row in rows if in_memory(row)}  # type: ignore[attr-defined]


async def test_every_rule_gives_the_same_rows_in_sql_and_in_memory(
    services: Services, world: World
) -> None:
    forms: dict[str, tuple[type[SQLModel], Any, Any]] = {
        "orders": (
            SalesOrder,
            policy.order_scope,
            lambda v, r: policy.may_see_order(
                v, reseller_id=r.reseller_id, customer_id=r.customer_id
            ),
        ),
        "customers": (Customer, policy.customer_scope, policy.may_see_customer),
        "resellers": (
            Reseller,
            policy.reseller_scope,
            lambda v, r: policy.may_see_reseller(v, r.id),
        ),
        "reseller contacts": (
            Reseller,
            policy.RESELLER_CONTACTS.sql,
            lambda v, r: policy.may_see_reseller_contact(v, r.id),
        ),
        "managed resellers": (
            Reseller,
            policy.MANAGED_RESELLERS.sql,
            lambda v, r: policy.may_manage_reseller(v, r.id),
        ),
        "notifications": (
            Notification,
            policy.notification_scope,
            lambda v, r: policy.may_see_notification(
                v,
                reseller_id=r.reseller_id,
                customer_id=r.customer_id,
                recipient_role=r.recipient_role,
            ),
        ),
    }
    some_but_not_all = 0
    for rule, (model, sql_form, memory_form) in forms.items():
        async with services.db.read() as session:
            everything = set((await session.exec(select(col(model.id)))).all())  # type: ignore[attr-defined]
        for name, viewer in every_viewer(world).items():
            in_sql, in_memory = await both_forms(
                services,
                model,
                sql_form(viewer),
                lambda row, v=viewer, form=memory_form: form(v, row),
            )
            assert in_sql == in_memory, (rule, name)
            some_but_not_all += 0 < len(in_sql) < len(everything)
    assert some_but_not_all >= 15  # the rules were exercised, not only with all-or-nothing answers


@pytest.mark.parametrize("topic", [*KNOWN_TOPICS, UNKNOWN_TOPIC])
async def test_every_topic_gives_the_same_events_in_sql_and_in_memory(
    services: Services, world: World, topic: str
) -> None:
    seen_by_someone = False
    for name, viewer in every_viewer(world).items():
        in_sql, in_memory = await both_forms(
            services,
            Event,
            policy.event_scope(viewer, topic),
            lambda event, v=viewer: policy.may_see_event(v, event),
            narrowing=[col(Event.topic) == topic],
        )
        assert in_sql == in_memory, (topic, name)
        if topic == UNKNOWN_TOPIC:  # refused by both forms, for every role (support too)
            assert in_sql == set(), name
        seen_by_someone = seen_by_someone or bool(in_sql)
    assert seen_by_someone is (topic != UNKNOWN_TOPIC)


def test_every_topic_of_the_event_log_has_a_rule() -> None:
    """A new TOPIC_* in app/events/models.py needs its rule here, or nobody would see it."""
    assert {TOPIC_ORDER_STATUS, TOPIC_NOTIFICATION} <= set(KNOWN_TOPICS)
    assert set(policy.EVENT_RULES) == set(KNOWN_TOPICS)


async def test_the_event_rules_are_the_order_and_notification_rules(
    services: Services, world: World
) -> None:
    """An event of a topic is replayed exactly when its order (or notification) would be seen."""
    for name, viewer in every_viewer(world).items():
        for event_topic, row_scope in (
            (TOPIC_ORDER_STATUS, policy.ORDERS),
            (TOPIC_NOTIFICATION, policy.NOTIFICATIONS),
        ):
            of_topic = select(Event).where(col(Event.topic) == event_topic)
            async with services.db.read() as session:
                events = (await session.exec(of_topic)).all()
                replayed = (
                    await session.exec(of_topic.where(policy.event_scope(viewer, event_topic)))
                ).all()
            rule_fields = ("reseller_id", "customer_id", "recipient_role")
            expected = {
                e.id
                for e in events
                if row_scope.allows(viewer, {field: getattr(e, field) for field in rule_fields})
            }
            assert {e.id for e in replayed} == expected, (event_topic, name)
