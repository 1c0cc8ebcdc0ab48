"""A websocket that does not read cannot grow the server's memory (SPEC 8, "Hostile clients").

Every kind of message a socket is sent waits in a bounded queue (app/graphql/ws/sending.py): a
client that sends pings, queries or bad documents and never reads its answers is closed with
4400, one too slow for its events with 1008, and its session is gone. Real uvicorn servers, real
websocket clients whose reading is paused over a tiny receive buffer (the server's send buffer is
tiny too), while a normal client is served meanwhile (its latency printed).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from app.graphql.ws import GraphQLWebSocket
from app.observability.metrics import REGISTRY
from app.services import Services
from tests.support.api import Factory
from tests.support.events import record_note
from tests.support.polling import eventually
from tests.support.server import LiveServer, serve
from tests.support.world import World, make_world
from tests.support.ws import WSClient, connected

QUEUE_SIZE = 64
"""`ws_queue_size` here: at most this many answers wait on a socket."""
UVICORN_PROTOCOL = {"ws": "websockets-sansio", "http": "httptools"}
BOTH_PROTOCOLS = pytest.mark.parametrize(
    "uvicorn_overrides", [{}, UVICORN_PROTOCOL], ids=["batching", "uvicorn"]
)


@pytest.fixture
async def tenants(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


def overflowed(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("orderpulse_websockets_overflowed_total", {"reason": reason})
        or 0.0
    )


def open_sockets() -> float:
    return REGISTRY.get_sample_value("orderpulse_websockets_open") or 0.0


def endpoint(app: Starlette) -> GraphQLWebSocket:
    found: GraphQLWebSocket = app.websocket_endpoint  # type: ignore[attr-defined]
    return found


async def everything_until_closed(ws: WSClient) -> tuple[list[str], int | None, str | None]:
    """Resume reading: every message the server sent, then its close code and reason."""
    ws.connection.transport.resume_reading()
    messages = []
    try:
        async with asyncio.timeout(10):
            while True:
                messages.append(str(await ws.connection.recv()))
    except ConnectionClosed as closed:
        frame = closed.rcvd
        return messages, (frame.code if frame else None), (frame.reason if frame else None)


async def flood_until_closed(
    flooder: WSClient, message: dict[str, Any], healthy: WSClient, reason: str
) -> tuple[int, list[float]]:
    """Send `message` over and over, never reading, until the server closes the socket for it
    (`reason` counted); every 200 messages, time the healthy client's ping. How many were sent,
    and the healthy client's latencies."""
    before = overflowed(reason)
    text = json.dumps(message)
    latencies: list[float] = []
    sent = 0
    async with asyncio.timeout(60):
        while overflowed(reason) == before:
            for _ in range(200):
                await flooder.connection.send(text)
            sent += 200
            started = time.perf_counter()
            assert await healthy.until_pong() == []
            latencies.append(time.perf_counter() - started)
    return sent, latencies


def print_latencies(what: str, latencies: list[float]) -> None:
    print(
        f"\n{what}: healthy client's ping during the flood: {len(latencies)} pings, median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


FLOODS = {
    "pings": ({"type": "ping"}, {"type": "pong"}),
    "results": (
        {"id": "q", "type": "subscribe", "payload": {"query": "{ viewer { role } }"}},
        None,
    ),
    "errors": (
        {"id": "e", "type": "subscribe", "payload": {"query": "{ nothingHere }"}},
        None,
    ),
}


@BOTH_PROTOCOLS
@pytest.mark.parametrize(
    "settings_overrides", [{"ws_queue_size": QUEUE_SIZE, "rate_limit": "1000000/minute"}]
)
@pytest.mark.parametrize("kind", sorted(FLOODS))
async def test_a_client_that_sends_and_never_reads_is_closed_4400(
    app: Starlette,
    live_server: LiveServer,
    tenants: World,
    uvicorn_overrides: dict[str, Any],
    kind: str,
) -> None:
    message, _ = FLOODS[kind]
    async with (
        serve(app, send_buffer=4096, uvicorn_options=uvicorn_overrides) as small_buffers,
        connected(live_server.ws_url, tenants.tokens["support"]) as healthy,
        connected(small_buffers.ws_url, tenants.tokens["support"], receive_buffer=4096) as flooder,
    ):
        flooder.connection.transport.pause_reading()  # reads nothing from here on
        sent, latencies = await flood_until_closed(flooder, message, healthy, "answers")
        print_latencies(f"{kind} flood ({sent} messages sent)", latencies)
        sessions = endpoint(app).sessions_by_token  # its session is gone
        await eventually(lambda: sum(map(len, sessions.values())) == 1)

        received, code, reason = await everything_until_closed(flooder)
        assert (code, reason) == (4400, "Too many messages not read")
        answers = [json.loads(text) for text in received]
        if kind == "pings":
            assert answers == [{"type": "pong"}] * len(answers)
        else:
            assert {(a["id"], a["type"]) for a in answers} <= {
                (message["id"], "next"),
                (message["id"], "complete"),
                (message["id"], "error"),
            }
        # answered until the buffers and the queue were full, then nothing more
        answered = [a for a in answers if a["type"] in ("pong", "complete", "error")]
        assert 0 < len(answered) < sent
        assert await healthy.until_pong() == []  # the normal client is still served
        await eventually(lambda: open_sockets() == 1)
    print(f"{kind}: {sent} sent, {len(answered)} answered before the close")


@BOTH_PROTOCOLS
@pytest.mark.parametrize(
    "settings_overrides", [{"ws_queue_size": 1000, "ws_queue_bytes": 16 * 1024}]
)
async def test_a_consumer_too_slow_for_its_events_is_closed_1008(
    app: Starlette,
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    tenants: World,
    uvicorn_overrides: dict[str, Any],
) -> None:
    order = await factory.order(tenants.customer_a1, status="PR")
    query = "subscription { orderStatusChanged { cursor comment } }"
    count = 80  # ~160 KB: far more than the stuck socket's buffers and its 16 KB queue
    async with (
        serve(app, send_buffer=4096, uvicorn_options=uvicorn_overrides) as small_buffers,
        connected(live_server.ws_url, tenants.tokens["support"]) as healthy,
        connected(small_buffers.ws_url, tenants.tokens["support"], receive_buffer=4096) as stuck,
    ):
        for ws in (healthy, stuck):
            await ws.subscribe("1", query)
            assert await ws.until_pong() == []
        stuck.connection.transport.pause_reading()  # reads nothing from here on
        before = overflowed("events")
        async with services.transaction() as session:  # ~2 KB a message, 80 in one batch
            for i in range(count):
                comment = f"{i:04d}" + "x" * 1996
                await record_note(session, order, comment=comment, at=services.clock.now())
        healthy_got = [(await healthy.next("1"))["orderStatusChanged"] for _ in range(count)]
        assert [c["comment"][:4] for c in healthy_got] == [f"{i:04d}" for i in range(count)]
        await eventually(lambda: overflowed("events") == before + 1)
        assert services.fanout.audience_count == 1  # the stuck one left its group
        sessions = endpoint(app).sessions_by_token  # its session is gone
        await eventually(lambda: sum(map(len, sessions.values())) == 1)

        received, code, reason = await everything_until_closed(stuck)
        assert (code, reason) == (1008, "Too slow to read its events")
        delivered = [json.loads(text)["payload"]["data"]["orderStatusChanged"] for text in received]
        assert 0 < len(delivered) < count
        assert delivered == healthy_got[: len(delivered)]  # in order, nothing skipped
        assert await healthy.until_pong() == []
        await eventually(lambda: open_sockets() == 1)
