"""Live subscriptions over real websockets (graphql-transport-ws) against a real uvicorn server.

Every check of what a viewer received is exact: after the events, the test waits until the
process's fan-out has dispatched the last one, then pings; the server answers in order, so the
messages before the pong are everything the viewer will ever get for those events.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.applications import Starlette
from websockets.exceptions import InvalidStatus

from app.access.tokens import revoke_token
from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.graphql.context import Context
from app.graphql.ids import to_cursor, to_global_id
from app.graphql.loaders import Loaders
from app.graphql.schema import build_schema
from app.graphql.subscriptions import INVALID_CURSOR_MESSAGE, SLOW_CONSUMER_CODE
from app.graphql.ws import groups
from app.kernel.uvicorn import SEND_TEXTS, BatchingWebSocketProtocol
from app.notifications.models import Notification
from app.services import Services
from tests.support.api import SUPPORT, Factory, GraphQLClient, gid
from tests.support.events import record_note
from tests.support.polling import eventually
from tests.support.server import LiveServer, serve
from tests.support.world import World, make_world
from tests.support.ws import WSClient, connected, ws_client

ORDER_CHANGES = """
subscription Changes($filter: OrderStatusChangeFilter, $after: String) {
  orderStatusChanged(filter: $filter, after: $after) {
    cursor from to action reason
    order { id number status version customer { name contactEmail } }
  }
}
"""
NOTIFICATION_CHANGES = """
subscription Notes($after: String) {
  notificationChanged(after: $after) {
    cursor notification { id kind recipientRole email order { number } }
  }
}
"""
REPORT = """
mutation($id: ID!, $outcome: ProvisioningOutcome!, $reason: FailureReason) {
  reportProvisioningResult(input: {orderId: $id, outcome: $outcome, reason: $reason}) {
    order { status } userErrors { message }
  }
}
"""
ACT = """
mutation($id: ID!, $action: OrderAction!) {
  performOrderAction(input: {orderId: $id, action: $action}) {
    order { status } userErrors { message }
  }
}
"""
TIMEOUT = 5.0


def invalid_cursor(id: str) -> dict[str, Any]:
    """The `error` message for a subscription of ORDER_CHANGES whose `after` the viewer may not
    use (the same for a cursor of another tenant's event and for one that is not a cursor)."""
    return {
        "id": id,
        "type": "error",
        "payload": [
            {
                "message": INVALID_CURSOR_MESSAGE,
                "locations": [{"line": 3, "column": 3}],
                "path": ["orderStatusChanged"],
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
async def tenants(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


async def subscribe(
    ws: WSClient, id: str, query: str, variables: dict[str, Any] | None = None
) -> None:
    """Subscribe and wait until the server has registered it (it handles messages in order)."""
    await ws.subscribe(id, query, variables)
    assert await ws.until_pong() == []


async def error_for(ws: WSClient, id: str, query: str) -> list[dict[str, Any]]:
    """Subscribe as `id`; the payload of the `error` message that must answer it."""
    await ws.subscribe(id, query)
    message = await ws.receive()
    assert (message["id"], message["type"]) == (id, "error"), message
    errors: list[dict[str, Any]] = message["payload"]
    return errors


async def subscribed_sockets(
    stack: AsyncExitStack, server: LiveServer, tenants: World, viewers: list[str], query: str
) -> dict[str, WSClient]:
    """One socket per viewer name, each subscribed to `query` as "1"; closed with `stack`."""
    sockets = {}
    for name in viewers:
        sockets[name] = await stack.enter_async_context(
            connected(server.ws_url, tenants.tokens[name])
        )
        await subscribe(sockets[name], "1", query)
    return sockets


async def last_event_id(services: Services) -> int:
    async with services.db.read() as session:
        query = select(col(Event.id)).order_by(col(Event.id).desc())
        return (await session.exec(query)).first() or 0


async def settled(services: Services) -> None:
    """Until the fan-out has dispatched every event now in the log."""
    target = await last_event_id(services)
    async with asyncio.timeout(TIMEOUT):
        while services.fanout.position < target:
            await asyncio.sleep(0.01)


def changes(messages: list[dict[str, Any]], id: str = "1") -> list[tuple[str, str | None, str]]:
    """(order number, from, to) of each `next` for subscription `id`; no other message allowed."""
    found = []
    for message in messages:
        assert message["type"] == "next" and "errors" not in message["payload"], message
        if message["id"] == id:
            change = message["payload"]["data"]["orderStatusChanged"]
            found.append((change["order"]["number"], change["from"], change["to"]))
    return found


# --- tenancy ------------------------------------------------------------------------------------


async def test_each_viewer_gets_exactly_the_status_changes_it_may_see(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    viewers = ["support", "system", "reseller a", "reseller b", "customer a1", "customer a2"]
    async with AsyncExitStack() as stack:
        sockets = await subscribed_sockets(stack, live_server, tenants, viewers, ORDER_CHANGES)
        a1 = await factory.order(tenants.customer_a1, status="PF")
        a2 = await factory.order(tenants.customer_a2, status="PR")
        b1 = await factory.order(tenants.customer_b1, status="CP")
        await settled(services)
        got = {name: changes(await ws.until_pong()) for name, ws in sockets.items()}

    a1_changes = [(a1.number, None, "PR"), (a1.number, "PR", "PF")]
    a2_changes = [(a2.number, None, "PR")]
    b1_changes = [(b1.number, None, "PR"), (b1.number, "PR", "CP")]
    everything = a1_changes + a2_changes + b1_changes
    assert got == {
        "support": everything,
        "system": everything,
        "reseller a": a1_changes + a2_changes,
        "reseller b": b1_changes,
        "customer a1": a1_changes,
        "customer a2": a2_changes,
    }


async def test_each_viewer_gets_exactly_the_notifications_addressed_to_it(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    api: GraphQLClient,
) -> None:
    body = await api.as_(tenants.tokens["support"]).data(
        """mutation($id: ID!) { updateNotificationSettings(input: {resellerId: $id,
           notifyReseller: true, notifyCustomer: true}) { userErrors { message } } }""",
        {"id": gid("Reseller", tenants.reseller_a)},
    )
    assert body["updateNotificationSettings"]["userErrors"] == []
    await factory.notify(tenants.reseller_b, reseller_mail=True)
    viewers = ["support", "system", "reseller a", "reseller b", "customer a1", "customer a2"]
    async with AsyncExitStack() as stack:
        sockets = await subscribed_sockets(
            stack, live_server, tenants, viewers, NOTIFICATION_CHANGES
        )
        a1 = await factory.order(tenants.customer_a1, status="PF")  # support, reseller, customer
        b1 = await factory.order(tenants.customer_b1, status="PF")  # support, reseller

        async def all_sent() -> bool:
            async with services.db.read() as session:
                rows = (await session.exec(select(Notification))).all()
            return len(rows) == 5 and all(row.status == "SENT" for row in rows)

        await eventually(all_sent)
        await settled(services)
        got = {}
        for name, ws in sockets.items():
            got[name] = [
                m["payload"]["data"]["notificationChanged"]["notification"]
                for m in await ws.until_pong()
            ]
    async with services.db.read() as session:
        rows = (await session.exec(select(Notification).order_by(col(Notification.id)))).all()
    by_key = {
        (r.order_id, r.recipient_role): str(to_global_id("Notification", r.id or 0)) for r in rows
    }
    expected_roles = {
        "support": [(a1.id, "SUPPORT"), (a1.id, "RESELLER"), (a1.id, "CUSTOMER"),
                    (b1.id, "SUPPORT"), (b1.id, "RESELLER")],
        "system": [],
        "reseller a": [(a1.id, "RESELLER"), (a1.id, "CUSTOMER")],
        "reseller b": [(b1.id, "RESELLER")],
        "customer a1": [(a1.id, "CUSTOMER")],
        "customer a2": [],
    }  # fmt: skip
    for name, keys in expected_roles.items():
        expected_ids = [by_key[k] for k in keys]
        received_ids = [n["id"] for n in got[name]]
        # each notification twice, created (in commit order) and sent (as the outbox goes)
        assert sorted(received_ids) == sorted(expected_ids * 2), name
        assert list(dict.fromkeys(received_ids)) == expected_ids, name
        roles = {n["id"]: n["recipientRole"] for n in got[name]}
        assert [roles[i] for i in expected_ids] == [role for _, role in keys], name
    customer_note = got["customer a1"][0]
    assert customer_note["email"] == tenants.customer_a1.contact_email
    assert customer_note["order"]["number"] == a1.number
    assert customer_note["kind"] == "ORDER_PROVISIONING_FAILED"


async def test_filters_narrow_and_never_widen(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    a = gid("Reseller", tenants.reseller_a)
    async with (
        connected(live_server.ws_url, tenants.tokens["reseller a"]) as reseller,
        connected(live_server.ws_url, tenants.tokens["support"]) as support,
    ):
        filters = {
            "failed": {"status": ["PF"]},
            "a1": {"customerId": gid("Customer", tenants.customer_a1)},
            "other reseller": {"resellerId": gid("Reseller", tenants.reseller_b)},
            "other customer": {"customerId": gid("Customer", tenants.customer_b1)},
            "malformed": {"customerId": "not-an-id"},
            "wrong type": {"customerId": a},
            "no status": {"status": []},
        }
        for id, value in filters.items():
            await subscribe(reseller, id, ORDER_CHANGES, {"filter": value})
        await subscribe(
            support, "a", ORDER_CHANGES, {"filter": {"resellerId": a, "status": ["PF", "CP"]}}
        )
        a1 = await factory.order(tenants.customer_a1, status="PF")
        a2 = await factory.order(tenants.customer_a2, status="CP")
        b1 = await factory.order(tenants.customer_b1, status="PF")
        await settled(services)
        on_reseller = await reseller.until_pong()
        on_support = await support.until_pong()

    assert b1.number
    assert {id: changes(on_reseller, id) for id in filters} == {
        "failed": [(a1.number, "PR", "PF")],
        "a1": [(a1.number, None, "PR"), (a1.number, "PR", "PF")],
        "other reseller": [],
        "other customer": [],
        "malformed": [],
        "wrong type": [],
        "no status": [],
    }
    assert changes(on_support, "a") == [(a1.number, "PR", "PF"), (a2.number, "PR", "CP")]


# --- committed state ----------------------------------------------------------------------------


async def test_a_subscriber_sees_the_committed_state_of_each_change(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    api: GraphQLClient,
) -> None:
    order = await factory.order(tenants.customer_a1, status="PR")
    order_id = gid("Order", order)
    async with connected(live_server.ws_url, tenants.tokens["reseller a"]) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        system = api.as_(tenants.tokens["system"])
        failed = await system.data(
            REPORT, {"id": order_id, "outcome": "FAILED", "reason": "NO_IP_ADDRESSES"}
        )
        assert failed["reportProvisioningResult"]["userErrors"] == []
        first = (await ws.next("1"))["orderStatusChanged"]
        moved = await api.as_(tenants.tokens["support"]).data(
            """mutation($id: ID!) { updateCustomerContact(input: {customerId: $id,
               email: "new@customers.example"}) { userErrors { message } } }""",
            {"id": gid("Customer", tenants.customer_a1)},
        )
        assert moved["updateCustomerContact"]["userErrors"] == []
        resubmitted = await api.as_(tenants.tokens["reseller a"]).data(
            ACT, {"id": order_id, "action": "RESUBMIT"}
        )
        assert resubmitted["performOrderAction"]["userErrors"] == []
        second = (await ws.next("1"))["orderStatusChanged"]
        await settled(services)
        assert await ws.until_pong() == []

    assert first["from"] == "PR" and first["to"] == "PF" and first["reason"] == "NO_IP_ADDRESSES"
    assert first["order"] == {
        "id": order_id,
        "number": order.number,
        "status": "PF",
        "version": order.version + 1,
        "customer": {"name": "Customer A1", "contactEmail": tenants.customer_a1.contact_email},
    }
    assert (second["from"], second["to"], second["action"]) == ("PF", "PR", "RESUBMIT")
    assert second["order"]["status"] == "PR"
    assert second["order"]["version"] == order.version + 2
    assert second["order"]["customer"]["contactEmail"] == "new@customers.example"  # not cached


UVICORN_PROTOCOL = {"ws": "websockets-sansio"}
"""uvicorn's own websocket protocol (one message per send), against which the one `python -m app
serve` runs (several messages in one write) is checked."""
BOTH_PROTOCOLS = pytest.mark.parametrize(
    "uvicorn_overrides", [{}, UVICORN_PROTOCOL], ids=["batching", "uvicorn"]
)


# --- resuming -----------------------------------------------------------------------------------


async def test_a_reconnecting_panel_resumes_after_its_cursor_with_no_gap_or_duplicate(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    token = tenants.tokens["reseller a"]
    async with connected(live_server.ws_url, token) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        first = await factory.order(tenants.customer_a1, status="PR")
        seen = (await ws.next("1"))["orderStatusChanged"]
        assert seen["order"]["number"] == first.number
    # while the panel is away
    missed_a = await factory.order(tenants.customer_a1, status="PF")
    await factory.order(tenants.customer_b1, status="PF")  # another tenant's
    missed_b = await factory.order(tenants.customer_a2, status="PR")
    async with connected(live_server.ws_url, token) as ws:
        await ws.subscribe("1", ORDER_CHANGES, {"after": seen["cursor"]})
        replayed = [(await ws.next("1"))["orderStatusChanged"] for _ in range(3)]
        live = await factory.order(tenants.customer_a2, status="PR")
        after_replay = (await ws.next("1"))["orderStatusChanged"]
        await settled(services)
        assert await ws.until_pong() == []

    assert [(c["order"]["number"], c["from"], c["to"]) for c in replayed] == [
        (missed_a.number, None, "PR"),
        (missed_a.number, "PR", "PF"),
        (missed_b.number, None, "PR"),
    ]
    assert after_replay["order"]["number"] == live.number
    cursors = [seen["cursor"], *(c["cursor"] for c in replayed), after_replay["cursor"]]
    assert len(set(cursors)) == 5


async def test_live_events_during_a_long_replay_arrive_once_in_order(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    services.fanout.replay_page_size = 2  # many pages, so live events land mid-replay
    start = await last_event_id(services)
    for _ in range(6):
        await factory.order(tenants.customer_a1, status="PR")
    async with connected(live_server.ws_url, tenants.tokens["customer a1"]) as ws:
        orders = [factory.order(tenants.customer_a1, status="PF") for _ in range(3)]
        writing = asyncio.gather(*orders)
        await ws.subscribe("1", ORDER_CHANGES, {"after": to_cursor("event", start + 1)})
        await writing
        await settled(services)
        async with services.db.read() as session:
            query = select(Event).where(
                col(Event.id) > start + 1,
                col(Event.customer_id) == tenants.customer_a1.id,
                col(Event.topic) == "order_status",
            )
            expected = [to_cursor("event", e.id or 0) for e in (await session.exec(query)).all()]
        received = [(await ws.next("1"))["orderStatusChanged"]["cursor"] for _ in expected]
        assert await ws.until_pong() == []
    assert len(expected) == 5 + 3 * 2
    assert received == expected


async def test_an_unusable_cursor_is_one_error_that_reveals_nothing(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    own = await factory.order(tenants.customer_a1, status="PR")
    foreign = await factory.order(tenants.customer_b1, status="PF")
    async with services.db.read() as session:
        rows = (await session.exec(select(Event).order_by(col(Event.id)))).all()
    own_event = next(e for e in rows if e.order_id == own.id)
    foreign_event = next(e for e in rows if e.order_id == foreign.id)
    notification_event = next(e for e in rows if e.topic == TOPIC_NOTIFICATION)
    cursors = {
        "malformed": "not a cursor",
        "unknown": to_cursor("event", 10_000_000),
        "another tenant's": to_cursor("event", foreign_event.id or 0),
        "another stream's": to_cursor("event", notification_event.id or 0),
        "another kind's": to_cursor("order", own_event.id or 0),
    }
    async with connected(live_server.ws_url, tenants.tokens["reseller a"]) as ws:
        for id, cursor in cursors.items():
            await ws.subscribe(id, ORDER_CHANGES, {"after": cursor})
            message = await ws.receive()
            assert message == invalid_cursor(id)
        await ws.subscribe("good", ORDER_CHANGES, {"after": to_cursor("event", own_event.id or 0)})
        later = await factory.order(tenants.customer_a2, status="PR")
        change = (await ws.next("good"))["orderStatusChanged"]
    assert change["order"]["number"] == later.number


async def test_a_cursor_checked_for_one_tenant_is_still_refused_to_another(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    """Cursor checks keep each event's tenancy in memory; the rule still applies per viewer."""
    order = await factory.order(tenants.customer_b1, status="PR")
    async with services.db.read() as session:
        query = select(col(Event.id)).where(col(Event.order_id) == order.id)
        cursor = to_cursor("event", (await session.exec(query)).one())
    reads_before = services.fanout.cursors.reads
    refused = []
    async with (
        connected(live_server.ws_url, tenants.tokens["reseller b"]) as owner,
        connected(live_server.ws_url, tenants.tokens["reseller a"]) as other,
    ):
        for id in ("1", "2"):
            await subscribe(owner, id, ORDER_CHANGES, {"after": cursor})
            await other.subscribe(id, ORDER_CHANGES, {"after": cursor})
            refused.append(await other.until_pong())
    assert refused == [[invalid_cursor(id)] for id in ("1", "2")]
    assert services.fanout.cursors.reads - reads_before == 1  # one read for all four checks


# --- a slow consumer ----------------------------------------------------------------------------


@BOTH_PROTOCOLS
@pytest.mark.parametrize("settings_overrides", [{"ws_queue_size": 8}])
async def test_a_stuck_subscriber_is_ended_with_its_resume_cursor_and_holds_up_no_one(
    app: Starlette,
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    uvicorn_overrides: dict[str, Any],
) -> None:
    order = await factory.order(tenants.customer_a1, status="PR")
    query = "subscription($after: String) { orderStatusChanged(after: $after) { cursor comment } }"
    count = 80  # ~160 KB in one batch: far more than the stuck socket's ~80 KB of buffers
    async with (
        serve(app, send_buffer=4096, uvicorn_options=uvicorn_overrides) as small_buffers,
        connected(live_server.ws_url, tenants.tokens["support"]) as healthy,
        connected(small_buffers.ws_url, tenants.tokens["support"], receive_buffer=4096) as stuck,
    ):
        await subscribe(healthy, "1", query)
        await subscribe(stuck, "1", query)
        stuck.connection.transport.pause_reading()  # reads nothing from here on
        async with services.transaction() as session:  # ~2 KB a message, 80 in one batch
            for i in range(count):
                comment = f"{i:04d}" + "x" * 1996
                await record_note(session, order, comment=comment, at=services.clock.now())
        healthy_got = [(await healthy.next("1"))["orderStatusChanged"] for _ in range(count)]
        await settled(services)
        assert services.fanout.audience_count == 1  # the stuck one left its group

        stuck.connection.transport.resume_reading()
        delivered = []
        while (message := await stuck.receive())["type"] == "next":
            delivered.append(message["payload"]["data"]["orderStatusChanged"])
        assert message["id"] == "1" and message["type"] == "error"
        (error,) = message["payload"]
        assert error["extensions"] == {"code": SLOW_CONSUMER_CODE, "after": delivered[-1]["cursor"]}
        assert "after" in error["message"]

        await stuck.subscribe("1", query, {"after": error["extensions"]["after"]})
        resumed = [
            (await stuck.next("1"))["orderStatusChanged"] for _ in range(count - len(delivered))
        ]
        assert await stuck.until_pong() == []

    assert 8 < len(delivered) < count
    assert [c["comment"][:4] for c in healthy_got] == [f"{i:04d}" for i in range(count)]
    assert delivered + resumed == healthy_got


# --- protocol -----------------------------------------------------------------------------------


async def test_the_token_key_is_matched_without_regard_to_case(
    live_server: LiveServer, tenants: World
) -> None:
    for key in ("authorization", "AUTHORIZATION", "Authorization"):
        async with ws_client(live_server.ws_url) as ws:
            assert await ws.init(tenants.tokens["customer a1"], key=key) == {
                "type": "connection_ack"
            }


async def test_ping_is_answered_with_pong(live_server: LiveServer, tenants: World) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await ws.send({"type": "ping", "payload": {"at": 1}})
        assert await ws.receive() == {"type": "pong"}
        await ws.send({"type": "pong"})  # unsolicited pongs are allowed and ignored
        assert await ws.until_pong() == []


async def test_subscribe_before_the_ack_closes_4401(live_server: LiveServer) -> None:
    async with ws_client(live_server.ws_url) as ws:
        await ws.subscribe("1", ORDER_CHANGES)
        assert await ws.closed_with() == (4401, "Unauthorized")


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": "Bearer op_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"token": "op_x"},
        {},
        None,
    ],
)
async def test_a_bad_or_missing_token_closes_4403(
    live_server: LiveServer, payload: dict[str, str] | None
) -> None:
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": payload})
        assert await ws.closed_with() == (4403, "Forbidden")


async def test_a_revoked_token_is_refused_and_starts_nothing_more(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    token = await factory.token("RESELLER", reseller=tenants.reseller_a)
    async with connected(live_server.ws_url, token) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        async with services.transaction() as session:
            assert await revoke_token(session, token=token, now=services.clock.now())
        await ws.subscribe("2", ORDER_CHANGES)
        assert await ws.closed_with() == (4403, "Forbidden")
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert await ws.closed_with() == (4403, "Forbidden")
    await eventually(lambda: _no_audience(services))


async def _no_audience(services: Services) -> bool:
    return services.fanout.audience_count == 0


@pytest.mark.parametrize("settings_overrides", [{"ws_init_timeout_seconds": 0.2}])
async def test_no_connection_init_in_time_closes_4408(live_server: LiveServer) -> None:
    async with ws_client(live_server.ws_url) as ws:
        assert await ws.closed_with() == (4408, "Connection initialisation timeout")


async def test_a_running_id_subscribed_again_closes_4409(
    live_server: LiveServer, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await subscribe(ws, "same", ORDER_CHANGES)
        await ws.subscribe("same", ORDER_CHANGES)
        assert await ws.closed_with() == (4409, "Subscriber for same already exists")


async def test_an_id_is_free_again_once_completed(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        await ws.send({"id": "1", "type": "complete"})
        await subscribe(ws, "1", ORDER_CHANGES, {"filter": {"status": ["PF"]}})
        order = await factory.order(tenants.customer_a1, status="PF")
        await settled(services)
        assert changes(await ws.until_pong()) == [(order.number, "PR", "PF")]


async def test_a_second_connection_init_closes_4429(
    live_server: LiveServer, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await ws.send({"type": "connection_init", "payload": {}})
        assert await ws.closed_with() == (4429, "Too many initialisation requests")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "WebSocket message must be valid JSON"),
        (b"\x00binary", "WebSocket message type must be text"),
        ("[]", "Failed to parse message"),
        ('{"type": "shout"}', "Unknown message type: shout"),
        ('{"id": "1", "type": "subscribe"}', "Failed to parse message"),
        ('{"id": 1, "type": "subscribe", "payload": {"query": "{ viewer { role } }"}}', "Failed to parse message"),
        ('{"id": "1", "type": "subscribe", "payload": {"query": "subscription {"}}', "Syntax Error: Expected Name, found <EOF>."),
        ('{"type": "complete"}', "Failed to parse message"),
    ],
)  # fmt: skip
async def test_a_malformed_message_closes_4400(
    live_server: LiveServer, tenants: World, message: str | bytes, reason: str
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await ws.connection.send(message)
        assert await ws.closed_with() == (4400, reason)


async def test_an_invalid_init_payload_closes_4400(live_server: LiveServer) -> None:
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": "Bearer x"})
        assert await ws.closed_with() == (4400, "Invalid connection init payload")


async def test_only_graphql_transport_ws_is_spoken(live_server: LiveServer) -> None:
    async with ws_client(live_server.ws_url, subprotocols=["graphql-ws"]) as ws:
        assert ws.connection.subprotocol is None
        assert await ws.closed_with() == (4406, "Subprotocol not acceptable")


@pytest.mark.parametrize("settings_overrides", [{"ws_max_subscriptions": 2}])
async def test_subscriptions_per_connection_are_bounded(
    live_server: LiveServer, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        await subscribe(ws, "2", NOTIFICATION_CHANGES)
        refusal = await error_for(ws, "3", ORDER_CHANGES)
        assert refusal == [{"message": "Subscription limit reached"}]
        await ws.send({"id": "1", "type": "complete"})
        await subscribe(ws, "3", ORDER_CHANGES)


async def test_an_invalid_document_is_an_error_for_that_id_only(
    live_server: LiveServer, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        errors = await error_for(ws, "1", "subscription { orderStatusChanged { nope } }")
        assert [e["message"] for e in errors] == [
            "Cannot query field 'nope' on type 'OrderStatusChange'."
        ]
        await subscribe(ws, "2", ORDER_CHANGES)


async def test_a_query_over_the_socket_is_one_result_then_complete(
    live_server: LiveServer, tenants: World
) -> None:
    async with connected(live_server.ws_url, tenants.tokens["reseller a"]) as ws:
        await ws.subscribe("q", "{ viewer { role reseller { name } } }")
        assert await ws.receive() == {
            "id": "q",
            "type": "next",
            "payload": {
                "data": {"viewer": {"role": "RESELLER", "reseller": {"name": "Reseller A"}}}
            },
        }
        assert await ws.receive() == {"id": "q", "type": "complete"}


async def test_a_dead_socket_is_found_and_its_subscriptions_dropped(
    app: Starlette, services: Services, tenants: World
) -> None:
    async with serve(app, ws_ping_interval=0.1) as server:
        async with connected(server.ws_url, tenants.tokens["support"]) as ws:
            await subscribe(ws, "1", ORDER_CHANGES)
            assert services.fanout.audience_count == 1
            ws.connection.transport.pause_reading()  # gone quiet: no pong will come
            await eventually(lambda: _no_audience(services))


# --- origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"allowed_origins": "https://panel.example"}])
async def test_browsers_may_connect_only_from_allowed_origins(
    live_server: LiveServer, tenants: World
) -> None:
    for origin in (None, live_server.origin, "https://panel.example", "https://PANEL.example:443"):
        async with ws_client(live_server.ws_url, origin=origin) as ws:
            assert await ws.init(tenants.tokens["support"]) == {"type": "connection_ack"}
    for origin in ("https://evil.example", "http://panel.example", "null"):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_client(live_server.ws_url, origin=origin):
                pass
        assert refused.value.response.status_code == 403


async def test_by_default_only_the_servers_own_origin_is_allowed(
    live_server: LiveServer, tenants: World
) -> None:
    async with ws_client(live_server.ws_url, origin=live_server.origin) as ws:
        assert await ws.init(tenants.tokens["support"]) == {"type": "connection_ack"}
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(live_server.ws_url, origin="http://localhost:1"):
            pass
    assert refused.value.response.status_code == 403


# --- grouping -----------------------------------------------------------------------------------


async def test_subscribers_who_see_alike_share_one_execution_and_leave_nothing_behind(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connected(live_server.ws_url, tenants.tokens[name]))
            for name in ("reseller a", "reseller a", "reseller a", "reseller b")
        ]
        await subscribe(sockets[0], "x", ORDER_CHANGES)
        await subscribe(sockets[1], "y", ORDER_CHANGES)
        await subscribe(sockets[2], "z", ORDER_CHANGES, {"after": None})
        await subscribe(sockets[3], "x", ORDER_CHANGES)
        assert services.fanout.audience_count == 2  # reseller A's three, reseller B's one
        order = await factory.order(tenants.customer_a1, status="PR")
        payloads = [await ws.receive() for ws in sockets[:3]]
        await settled(services)
        assert await sockets[3].until_pong() == []
    assert [p["id"] for p in payloads] == ["x", "y", "z"]
    assert payloads[0]["payload"] == payloads[1]["payload"] == payloads[2]["payload"]
    assert payloads[0]["payload"]["data"]["orderStatusChanged"]["order"]["number"] == order.number
    await eventually(lambda: _no_audience(services))


async def test_the_stream_iterated_in_process_gives_the_same_payloads(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    schema = build_schema(services.settings)
    viewer = SUPPORT
    context = Context(services=services, viewer=viewer, loaders=Loaders(services.db))
    stream = await schema.subscribe(ORDER_CHANGES, context_value=context)
    assert not isinstance(stream, dict)
    async with connected(live_server.ws_url, tenants.tokens["support"]) as ws:
        await subscribe(ws, "1", ORDER_CHANGES)
        first = asyncio.ensure_future(anext(stream))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # let it register with the fan-out
        await factory.order(tenants.customer_a1, status="PR")
        over_socket = await ws.next("1")
        in_process = await asyncio.wait_for(first, TIMEOUT)
        await stream.aclose()  # type: ignore[union-attr]
    assert in_process.errors is None
    assert in_process.data == over_socket
    assert json.dumps(over_socket)  # plain JSON values


async def test_an_order_can_be_followed_from_its_history_cursor(
    live_server: LiveServer, factory: Factory, tenants: World, api: GraphQLClient
) -> None:
    order = await factory.order(tenants.customer_a1, status="PF")
    history = await api.as_(tenants.tokens["customer a1"]).data(
        "query($id: ID!) { order(id: $id) { history { cursor to } } }", {"id": gid("Order", order)}
    )
    first = history["order"]["history"][0]
    async with connected(live_server.ws_url, tenants.tokens["customer a1"]) as ws:
        await ws.subscribe("1", ORDER_CHANGES, {"after": first["cursor"]})
        change = (await ws.next("1"))["orderStatusChanged"]
    assert (change["cursor"], change["to"]) == (history["order"]["history"][1]["cursor"], "PF")


@BOTH_PROTOCOLS
@pytest.mark.parametrize("slice_seconds", [groups.REPLAY_SLICE_SECONDS, 0.0])
async def test_panels_resuming_together_share_one_replay_and_each_gets_exactly_its_events(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    monkeypatch: pytest.MonkeyPatch,
    slice_seconds: float,
) -> None:
    """Also with the replay letting the loop run between every two riders (slice 0)."""
    monkeypatch.setattr(groups, "REPLAY_SLICE_SECONDS", slice_seconds)
    services.fanout.replay_page_size = 2  # many pages: separate replays would read many more
    orders = [await factory.order(tenants.customer_a1, status="PR") for _ in range(9)]
    async with services.db.read() as session:
        query = select(col(Event.id)).where(col(Event.order_id).in_([o.id for o in orders]))
        cursors = [to_cursor("event", i) for i in sorted((await session.exec(query)).all())]
    assert len(cursors) == 9
    panels = 12
    reads_before = services.fanout.replay_reads
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(
                connected(live_server.ws_url, tenants.tokens["reseller a"])
            )
            for _ in range(panels)
        ]
        starts = [i % len(cursors) for i in range(panels)]
        await asyncio.gather(
            *(
                ws.subscribe("1", ORDER_CHANGES, {"after": cursors[start]})
                for ws, start in zip(sockets, starts, strict=True)
            )
        )
        received = [
            [(await ws.next("1"))["orderStatusChanged"]["cursor"] for _ in cursors[start + 1 :]]
            for ws, start in zip(sockets, starts, strict=True)
        ]
        reads = services.fanout.replay_reads - reads_before
        live = await factory.order(tenants.customer_a1, status="PR")
        after = [(await ws.next("1"))["orderStatusChanged"] for ws in sockets]
        await settled(services)
        leftovers = [await ws.until_pong() for ws in sockets]
    assert received == [cursors[start + 1 :] for start in starts]
    assert {a["order"]["number"] for a in after} == {live.number}
    assert leftovers == [[]] * panels
    await eventually(lambda: _no_audience(services))
    # One replay of its own per panel reads ceil((events after its cursor + 1) / 2) pages each.
    separate = sum(-(-(len(cursors) - start) // 2) for start in starts)
    assert reads <= separate // 2, (reads, separate)


async def test_a_replay_is_written_to_its_socket_in_one_send(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The events a resuming panel missed go out as one `SEND_TEXTS` (one write), in order."""
    seen, *orders = [await factory.order(tenants.customer_a1, status="PR") for _ in range(6)]
    async with services.db.read() as session:
        start = (await session.exec(select(col(Event.id)).where(Event.order_id == seen.id))).one()
    sent: list[Any] = []
    send = BatchingWebSocketProtocol.send

    async def recording(protocol: BatchingWebSocketProtocol, message: Any) -> None:
        sent.append(message)
        await send(protocol, message)

    monkeypatch.setattr(BatchingWebSocketProtocol, "send", recording)
    async with connected(live_server.ws_url, tenants.tokens["reseller a"]) as ws:
        await ws.subscribe("1", ORDER_CHANGES, {"after": to_cursor("event", start)})
        replayed = [(await ws.next("1"))["orderStatusChanged"] for _ in orders]
        assert await ws.until_pong() == []
    bursts = [m for m in sent if m["type"] == SEND_TEXTS]
    assert [len(m["texts"]) for m in bursts] == [5]
    assert [json.loads(t)["payload"]["data"] for t in bursts[0]["texts"]] == [
        {"orderStatusChanged": c} for c in replayed
    ]
    assert [c["order"]["number"] for c in replayed] == [o.number for o in orders]


@pytest.mark.parametrize(
    "settings_overrides", [{"ws_admission_concurrency": 1, "ws_init_timeout_seconds": 2.0}]
)
async def test_a_storm_waits_its_turn_at_admission_and_every_socket_gets_in(
    live_server: LiveServer, factory: Factory, services: Services, tenants: World
) -> None:
    """One socket at a time is admitted; the others queue without timing out or being refused."""
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(ws_client(live_server.ws_url)) for _ in range(15)
        ]
        token = tenants.tokens["reseller a"]
        acks = await asyncio.gather(*(ws.init(token) for ws in sockets))
        await asyncio.gather(*(subscribe(ws, "1", ORDER_CHANGES) for ws in sockets))
        order = await factory.order(tenants.customer_a1, status="PR")
        numbers = [(await ws.next("1"))["orderStatusChanged"]["order"]["number"] for ws in sockets]
    assert acks == [{"type": "connection_ack"}] * 15
    assert numbers == [order.number] * 15


async def _subscribe_all(
    ws: WSClient, query: str, variables: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Subscribe as each id of `variables`; once the server has handled them all, what it sent."""
    for id, values in variables.items():
        await ws.subscribe(id, query, values)
    return await ws.until_pong()


async def _until_each_done(
    ws: WSClient, ids: list[str], last_number: str, sent: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Every message for each of `ids` (those already `sent` first) until it has its `error` or
    the change of order `last_number`, by id, with the id left out. What an id receives after
    that is left out too: a later change may reach it while other ids still wait (the fan-out
    sends a socket's batch subscriber by subscriber), and when it does depends on timing."""
    found: dict[str, list[dict[str, Any]]] = {id: [] for id in ids}
    waiting = set(ids)
    pending = list(sent)
    async with asyncio.timeout(TIMEOUT):
        while waiting:
            message = pending.pop(0) if pending else await ws.receive()
            id = message.pop("id")
            if id not in waiting:
                continue
            found[id].append(message)
            payload = message.get("payload")
            if message["type"] == "error" or (
                message["type"] == "next"
                and payload["data"]["orderStatusChanged"]["order"]["number"] == last_number
            ):
                waiting.discard(id)
    return found


@pytest.mark.parametrize("shared", [{}, {"filter": {"status": ["PF"]}}])
async def test_subscribers_resuming_into_one_group_each_get_the_events_after_their_cursor(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    shared: dict[str, Any],
) -> None:
    """Subscribers of one document resuming from different cursors share one group (one
    audience of the fan-out) while each gets exactly the events after its own cursor, then the
    live one; a cursor that is not theirs (malformed, unknown, another tenant's, stream's or
    kind's) gets the one invalid-cursor error and joins nothing."""
    own = [await factory.order(tenants.customer_a1, status=status) for status in ("PR", "PF", "PF")]
    foreign = await factory.order(tenants.customer_b1, status="PF")
    async with services.db.read() as session:
        rows = (await session.exec(select(Event).order_by(col(Event.id)))).all()
    statuses = set(shared.get("filter", {}).get("status", ())) or None
    own_events = [
        e
        for e in rows
        if e.order_id in {o.id for o in own}
        and e.topic == TOPIC_ORDER_STATUS
        and (statuses is None or e.to_status in statuses)
    ]
    cursors = {
        **{f"own {i}": to_cursor("event", e.id or 0) for i, e in enumerate(own_events)},
        "malformed": "not a cursor",
        "unknown": to_cursor("event", 10_000_000),
        "another tenant's": to_cursor(
            "event", next(e.id or 0 for e in rows if e.order_id == foreign.id)
        ),
        "another stream's": to_cursor(
            "event", next(e.id or 0 for e in rows if e.topic == TOPIC_NOTIFICATION)
        ),
        "another kind's": to_cursor("order", own_events[0].id or 0),
    }
    token = tenants.tokens["reseller a"]
    async with (
        connected(live_server.ws_url, token) as anchor,
        connected(live_server.ws_url, token) as joining,
    ):
        await subscribe(anchor, "anchor", ORDER_CHANGES, shared or None)  # the group exists
        variables = {name: {**shared, "after": cursor} for name, cursor in cursors.items()}
        sent = await _subscribe_all(joining, ORDER_CHANGES, variables)
        assert services.fanout.audience_count == 1  # every usable cursor joined the one group
        live = await factory.order(tenants.customer_a2, status="PF")
        got = await _until_each_done(joining, list(cursors), live.number, sent)
    for name, messages in got.items():
        if not name.startswith("own"):
            refused = invalid_cursor(name)
            del refused["id"]  # (_until_each_done leaves the id out)
            assert messages == [refused], name
            continue
        i = int(name.split()[1])
        assert all(m["type"] == "next" for m in messages), name
        changes = [m["payload"]["data"]["orderStatusChanged"] for m in messages]
        assert [c["cursor"] for c in changes[:-1]] == [
            to_cursor("event", e.id or 0) for e in own_events[i + 1 :]
        ], name
        assert changes[-1]["order"]["number"] == live.number


ORDER_CHANGES_IN_FRAGMENTS = """
subscription Changes($filter: OrderStatusChangeFilter, $after: String) {
  orderStatusChanged(filter: $filter, after: $after) { ...Change }
}
fragment Change on OrderStatusChange {
  cursor from to action reason
  order { ... on Order { id number status version } ...Buyer }
}
fragment Buyer on Order { customer { name contactEmail } }
"""


async def test_a_subscription_in_fragments_renders_each_event_as_the_same_fields_inline(
    live_server: LiveServer, factory: Factory, tenants: World
) -> None:
    """The group executes again, for each event, the document the pipeline ran, fragments and
    all (named and inline); the answer equals that of the same fields written inline."""
    token = tenants.tokens["reseller a"]
    async with (
        connected(live_server.ws_url, token) as inline,
        connected(live_server.ws_url, token) as fragments,
    ):
        await subscribe(inline, "1", ORDER_CHANGES)
        await subscribe(fragments, "1", ORDER_CHANGES_IN_FRAGMENTS)
        await factory.order(tenants.customer_a1, status="PF")
        first = await inline.next("1")
        assert first["orderStatusChanged"]["order"]["customer"]["name"]
        assert await fragments.next("1") == first
