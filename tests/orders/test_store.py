"""The order store writes a failure that opens or joins an incident itself, in a transaction after
its one statement wrote nothing (PostgreSQL): the use case behind the API runs once, and the
failure, its incident, its events and notifications are written once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, func, select

from app.events.models import TOPIC_INCIDENT, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification
from app.services import Services
from tests.incidents.helpers import report_failed
from tests.support.api import Factory, GraphQLClient
from tests.support.world import make_world
from tests.support.writes import counting_order_reads


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"incident_threshold": 3, "escalation_poll_seconds": 3600}


async def test_a_failure_that_opens_or_joins_an_incident_runs_its_use_case_once(
    api: GraphQLClient, factory: Factory, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world(factory, with_tokens=True)
    system = api.as_(world.tokens["system"])
    orders = [await factory.order(world.customer_a1, status="PR") for _ in range(4)]
    reads = counting_order_reads(monkeypatch)
    failed = [await report_failed(system, order) for order in orders]
    # each request read its order once: no second run of the use case
    assert reads == [order.id for order in orders]
    assert [f["status"] for f in failed] == ["PF"] * 4
    assert [f["incident"] is not None for f in failed] == [False, False, True, True]
    assert failed[2]["incident"]["id"] == failed[3]["incident"]["id"]
    assert failed[3]["incident"]["orderCount"] == 4
    async with services.db.read() as session:
        moves = (
            await session.exec(
                select(col(Event.order_id), func.count())
                .where(col(Event.topic) == TOPIC_ORDER_STATUS, col(Event.to_status) == "PF")
                .group_by(col(Event.order_id))
            )
        ).all()
        changes = (
            await session.exec(
                select(col(Event.action))
                .where(col(Event.topic) == TOPIC_INCIDENT)
                .order_by(col(Event.id))
            )
        ).all()
        notified = (
            await session.exec(
                select(col(Notification.order_id), func.count())
                .where(col(Notification.kind) == "ORDER_PROVISIONING_FAILED")
                .group_by(col(Notification.order_id))
            )
        ).all()
    assert sorted(moves) == sorted((order.id, 1) for order in orders)
    assert changes == ["OPENED", "JOINED"]
    # the same recipients for each failure, each told once (support's notice of the two that
    # opened and joined the incident is recorded suppressed)
    assert len({n for _, n in notified}) == 1
    assert sorted(order_id for order_id, _ in notified) == sorted(o.id for o in orders)
