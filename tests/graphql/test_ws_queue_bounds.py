"""A websocket that does not read cannot grow the server's memory (SPEC 8, "Hostile clients").

Every kind of message a socket is sent waits in a bounded queue (app/graphql/ws/sending.py): a
client that sends pings, queries or bad documents and never reads its answers is closed with
4400, one too slow for its events with 1008, and its session is gone. Real uvicorn servers, real
websocket clients whose reading is paused over a tiny receive buffer (the server's send buffer is
tiny too), while a normal client is served meanwhile (its latency printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from app.graphql.ws import GraphQLWebSocket
from app.kernel.uvicorn import BatchingWebSocketProtocol
from app.observability.metrics import REGISTRY
from app.services import Services
from tests.observability.helpers import scrape, value
from tests.support.api import Factory
from tests.support.events import record_note
from tests.support.polling import eventually
from tests.support.processes import ServerProcess, run_cli, server_env
from tests.support.server import LiveServer, serve
from tests.support.world import World, make_world
from tests.support.ws import PROTOCOL, WSClient, connected

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


# --- a client that reads nothing at all, on a plain socket --------------------------------------


class RawClient:
    """A graphql-transport-ws client on a plain blocking socket that reads only when told to
    (websockets' sans-I/O `ClientProtocol` makes and parses the frames). Its kernel receive
    buffer is `receive_buffer` bytes, so a server it does not read from is blocked at once."""

    def __init__(self, url: str, *, receive_buffer: int = 4096) -> None:
        self.protocol = ClientProtocol(parse_uri(url), subprotocols=[Subprotocol(PROTOCOL)])
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.protocol.send_request(self.protocol.connect())
        self.flush()
        while not any(isinstance(e, Response) for e in self.receive()):
            pass
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc

    def flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def receive(self) -> list[Any]:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    def send_texts(self, texts: list[str]) -> None:
        for text in texts:
            self.protocol.send_text(text.encode())
        self.flush()

    def send_pings(self, count: int) -> None:
        """Websocket ping frames (not graphql-transport-ws pings)."""
        for i in range(count):
            self.protocol.send_ping(i.to_bytes(4, "big"))
        self.flush()

    def read_until_closed(self) -> tuple[list[str], int | None, str | None]:
        """Every text message until the server's close; its code and reason."""
        texts: list[str] = []
        while self.protocol.close_rcvd is None:
            events = self.receive()
            texts += [bytes(e.data).decode() for e in events if e.opcode is Opcode.TEXT]
            if not events and self.protocol.state is State.CLOSED:
                break
        with contextlib.suppress(OSError):
            self.flush()  # our answer to the close
        self.sock.close()
        close = self.protocol.close_rcvd
        return texts, (close.code if close else None), (close.reason if close else None)


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_ping_flood_never_read_is_closed_4400_and_the_servers_memory_stays_flat(
    tmp_path: Path,
) -> None:
    """`python -m app serve` as deployed; a raw socket that sends graphql-transport-ws pings and
    reads nothing (before the bounds, RSS grew ~15 MB a second); a normal client meanwhile."""
    env = server_env(f"sqlite:///{tmp_path / 'flood.db'}")
    token = run_cli(env, tmp_path, "token", "create", "--role", "SUPPORT")
    server = ServerProcess.launch(env, log_dir=tmp_path, name="flood")
    pid = server.process.pid
    try:
        await server.wait_ready()
        url = server.endpoint.ws_url
        async with (
            httpx.AsyncClient(base_url=server.endpoint.origin, timeout=10) as http,
            connected(url, token) as healthy,
        ):

            async def overflows() -> float:
                return value(
                    await scrape(http), "orderpulse_websockets_overflowed_total", reason="answers"
                )

            assert await healthy.until_pong() == []
            rss_before = rss_mb(pid)
            flooder = await asyncio.to_thread(RawClient, url)
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            await asyncio.to_thread(flooder.send_texts, [json.dumps(init)])
            pings = [json.dumps({"type": "ping"})] * 5000
            sent, rss_peak, latencies = 0, rss_before, []
            async with asyncio.timeout(120):
                while await overflows() == 0:
                    await asyncio.to_thread(flooder.send_texts, pings)
                    sent += len(pings)
                    rss_peak = max(rss_peak, rss_mb(pid))
                    started = time.perf_counter()
                    assert await healthy.until_pong() == []
                    latencies.append(time.perf_counter() - started)
            rss_closed = rss_mb(pid)
            received, code, reason = await asyncio.to_thread(flooder.read_until_closed)
            assert (code, reason) == (4400, "Too many messages not read")
            assert received[0] == '{"type":"connection_ack"}'
            pongs = received[1:]
            assert set(pongs) == {'{"type": "pong"}'}
            assert 0 < len(pongs) < sent
            assert await healthy.until_pong() == []
            samples = await scrape(http)
            assert value(samples, "orderpulse_websockets_open") == 1  # the healthy one
            rss_after = rss_mb(pid)
    finally:
        server.stop()
    print_latencies(f"ping flood of a real server ({sent} pings sent)", latencies)
    print(
        f"server RSS: {rss_before:.1f} MB before, {rss_peak:.1f} MB at most during the flood, "
        f"{rss_closed:.1f} MB when it was closed, {rss_after:.1f} MB after; "
        f"{len(pongs)} pongs delivered"
    )
    assert rss_peak - rss_before < 40  # bounded: the unbounded queue took hundreds of MB


async def test_a_flood_of_websocket_ping_frames_never_read_is_closed_4400(
    app: Starlette, live_server: LiveServer, tenants: World
) -> None:
    """Ping frames (answered by the server protocol itself, outside the app's queue) are
    bounded too: with over MAX_UNREAD_BYTES unread, a ping closes the socket."""
    async with (
        serve(app, send_buffer=4096) as small_buffers,
        connected(live_server.ws_url, tenants.tokens["support"]) as healthy,
    ):
        flooder = await asyncio.to_thread(RawClient, small_buffers.ws_url)
        before = overflowed("answers")
        sent, latencies = 0, []
        async with asyncio.timeout(60):
            while overflowed("answers") == before:
                await asyncio.to_thread(flooder.send_pings, 10_000)
                sent += 10_000
                started = time.perf_counter()
                assert await healthy.until_pong() == []
                latencies.append(time.perf_counter() - started)
        received, code, reason = await asyncio.to_thread(flooder.read_until_closed)
        assert (code, reason) == (4400, "Too many pings not read")
        assert received == []
        assert await healthy.until_pong() == []
    print_latencies(f"ping frame flood ({sent} ping frames sent)", latencies)


class QuickCloseProtocol(BatchingWebSocketProtocol):
    """serve's websocket protocol with uvicorn's close timeout (10 s) cut to 0.2 s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = 0.2


@pytest.mark.parametrize("settings_overrides", [{"ws_queue_size": QUEUE_SIZE}])
async def test_a_client_that_never_reads_even_its_close_is_cut_off(
    app: Starlette, tenants: World
) -> None:
    """The close frame waits behind what the client never read; when the close timeout passes
    unanswered, the server aborts the connection and drops those bytes (a plain close would
    keep them, and the connection, for as long as the client does not read)."""
    options = {"ws": f"{__name__}:QuickCloseProtocol"}
    async with serve(app, send_buffer=4096, uvicorn_options=options) as server:
        flooder = await asyncio.to_thread(RawClient, server.ws_url)
        init = {
            "type": "connection_init",
            "payload": {"Authorization": f"Bearer {tenants.tokens['support']}"},
        }
        await asyncio.to_thread(flooder.send_texts, [json.dumps(init)])
        before = overflowed("answers")
        async with asyncio.timeout(60):
            while overflowed("answers") == before:
                await asyncio.to_thread(flooder.send_texts, [json.dumps({"type": "ping"})] * 1000)

        def read_everything() -> bytes:
            """Wait until the abort has surely happened, then read to the end."""
            time.sleep(1)  # 5 times the close timeout: the abort comes from the server
            chunks = []
            while chunk := flooder.sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

        data = await asyncio.to_thread(read_everything)
        flooder.sock.close()
    # what the kernel held was delivered, then the end: the rest, the close frame included,
    # was dropped with the connection
    flooder.protocol.receive_data(data)
    flooder.protocol.receive_eof()
    texts = [bytes(e.data).decode() for e in flooder.protocol.events_received()]
    assert texts[0] == '{"type":"connection_ack"}'
    assert set(texts[1:]) == {'{"type": "pong"}'}
    assert flooder.protocol.close_rcvd is None
    print(f"\nread {len(data)} bytes ({len(texts) - 1} pongs), then the connection ended")
