"""`incidentChanged` over a real websocket: support gets OPENED, JOINED, RESUBMITTED and RESOLVED
in commit order, resumes after a cursor without loss, and nobody else may subscribe."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlmodel import col, select

from app.events.models import Event
from app.services import Services
from tests.incidents.helpers import RESOLVE, RESUBMIT, incidents, report_failed
from tests.support.api import Factory, GraphQLClient
from tests.support.server import LiveServer
from tests.support.world import World, make_world
from tests.support.ws import WSClient, connected

CHANGES = """subscription($after: String) { incidentChanged(after: $after) {
    cursor change actor incident { number status orderCount pendingCount reason { reason } } } }"""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"incident_threshold": 3, "escalation_poll_seconds": 3600}


@pytest.fixture
async def world(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


async def settled(services: Services) -> None:
    """Until the fan-out has dispatched every event now in the log."""
    async with services.db.read() as session:
        last = (await session.exec(select(col(Event.id)).order_by(col(Event.id).desc()))).first()
    async with asyncio.timeout(5):
        while services.fanout.position < (last or 0):
            await asyncio.sleep(0.01)


async def received(ws: WSClient) -> list[dict[str, Any]]:
    """Every change delivered so far (the server answers the ping after them)."""
    messages = await ws.until_pong()
    assert all(m["type"] == "next" and "errors" not in m["payload"] for m in messages), messages
    return [m["payload"]["data"]["incidentChanged"] for m in messages]


def summary(changes: list[dict[str, Any]]) -> list[tuple[str, int, int, str]]:
    return [
        (
            c["change"],
            c["incident"]["orderCount"],
            c["incident"]["pendingCount"],
            c["incident"]["status"],
        )
        for c in changes
    ]


async def test_support_follows_an_incident_live_and_resumes_after_a_cursor(
    api: GraphQLClient,
    factory: Factory,
    services: Services,
    world: World,
    live_server: LiveServer,
) -> None:
    support, system = api.as_(world.tokens["support"]), api.as_(world.tokens["system"])
    orders = [await factory.order(world.customer_a1, status="PR") for _ in range(4)]
    async with connected(live_server.ws_url, world.tokens["support"]) as ws:
        await ws.subscribe("1", CHANGES)
        assert await ws.until_pong() == []
        for order in orders[:3]:
            await report_failed(system, order)
        await settled(services)
        opened = await received(ws)
        # Each change carries the incident as it is when the change is read.
        assert [c["change"] for c in opened] == ["OPENED"]
        assert opened[0]["incident"]["reason"] == {"reason": "EXTERNAL_SYSTEM_ERROR"}
        await report_failed(system, orders[3])
        await settled(services)
        later = await received(ws)
        (incident,) = await incidents(support)
        done = await support.data(RESUBMIT, {"input": {"incidentId": incident["id"]}})
        assert done["resubmitIncidentOrders"]["resubmitted"] == 4
        await settled(services)
        later += await received(ws)
        resolved = await support.data(RESOLVE, {"input": {"incidentId": incident["id"]}})
        assert resolved["resolveIncident"]["userErrors"] == []
        await settled(services)
        later += await received(ws)
        assert summary(later) == [
            ("JOINED", 4, 4, "OPEN"),
            ("RESUBMITTED", 4, 0, "OPEN"),
            ("RESOLVED", 4, 0, "RESOLVED"),
        ]
        assert re.fullmatch(r"Support \(SUPPORT token:\d+\)", later[1]["actor"])
    # A client that saw only the opening resumes after it and misses nothing.
    async with connected(live_server.ws_url, world.tokens["support"]) as ws:
        await ws.subscribe("2", CHANGES, {"after": opened[0]["cursor"]})
        replayed = [(await ws.next("2"))["incidentChanged"] for _ in range(3)]
        assert await received(ws) == []
        assert summary(replayed) == [  # as the incident is now
            ("JOINED", 4, 0, "RESOLVED"),
            ("RESUBMITTED", 4, 0, "RESOLVED"),
            ("RESOLVED", 4, 0, "RESOLVED"),
        ]
        assert [c["cursor"] for c in replayed] == [c["cursor"] for c in later]


@pytest.mark.parametrize("name", ["reseller a", "customer a1", "system"])
async def test_only_support_may_follow_incidents(
    world: World, live_server: LiveServer, name: str
) -> None:
    async with connected(live_server.ws_url, world.tokens[name]) as ws:
        await ws.subscribe("1", CHANGES)
        message = await ws.receive()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"
