"""Hostile clients against a real server (SPEC 8, "Hostile clients"): the rate limit holds whatever
the method, the headers or the transport, and slow or greedy connections are cut off while other
clients are served.

Every test attacks the live uvicorn server (`tests.support.server`) over real sockets: httpx for
HTTP, raw asyncio streams for slow clients, the websockets client for handshakes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlmodel import select
from websockets.exceptions import InvalidStatus

import app.asgi
from app.asgi import server_options
from app.orders.models import Reseller
from app.services import Services
from app.settings import Settings
from tests.observability.helpers import scrape, value
from tests.support.api import Factory
from tests.support.polling import eventually
from tests.support.server import LiveServer
from tests.support.ws import ws_client

LIMIT = 3
CREATE = (
    'mutation { createReseller(input: {name: "R%d", email: "r%d@r.example"}) { reseller { id } } }'
)
VIEWER = {"query": "{ viewer { role } }"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit": f"{LIMIT}/hour"}


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


@pytest.fixture
def token_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens HTTP requests look up in the database, in order."""
    reads: list[str] = []
    look_up = app.asgi.viewer_for_token

    async def counted(conn: Any, token: str, **options: Any) -> Any:
        reads.append(token)
        return await look_up(conn, token, **options)

    monkeypatch.setattr(app.asgi, "viewer_for_token", counted)
    return reads


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def random_token() -> str:
    return "op_" + secrets.token_urlsafe(32)


async def reseller_names(services: Services) -> list[str]:
    async with services.db.read() as session:
        return sorted(r.name for r in (await session.exec(select(Reseller))).all())


# --- the rate limit, whatever the method, header or transport ------------------------------------


async def test_every_method_on_graphql_is_refused_or_counted(
    http: httpx.AsyncClient, factory: Factory, services: Services
) -> None:
    token = await factory.token("SUPPORT")
    body = {"json": {"query": CREATE % (1, 1)}, "headers": bearer(token)}
    statuses = []
    for _ in range(5):  # HEAD ran mutations uncounted: it runs nothing now
        response = await http.request("HEAD", "/graphql", **body)  # type: ignore[arg-type]
        statuses.append(response.status_code)
        assert response.headers["allow"] == "GET, POST"
    statuses.append((await http.request("OPTIONS", "/graphql", **body)).status_code)  # type: ignore[arg-type]
    # the other methods are counted (token and, as it is not yet known live, address) and refused
    for method in ("PUT", "PATCH", "DELETE"):
        statuses.append((await http.request(method, "/graphql", **body)).status_code)  # type: ignore[arg-type]
    statuses.append((await http.post("/graphql", **body)).status_code)  # type: ignore[arg-type]
    assert statuses == [405] * 5 + [405] + [405] * 3 + [429]
    assert await reseller_names(services) == []  # nothing ran


async def test_two_authorization_headers_are_refused(
    http: httpx.AsyncClient, factory: Factory, services: Services, token_reads: list[str]
) -> None:
    token = await factory.token("SUPPORT")
    for n in range(LIMIT):
        response = await http.post(
            "/graphql", json={"query": CREATE % (n, n)}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
    assert (
        await http.post("/graphql", json={"query": CREATE % (7, 7)}, headers=bearer(token))
    ).status_code == 429
    reads_before = len(token_reads)
    # the limiter keyed on the last header, authentication used the first: 15/15 got through
    for pair in ([token, random_token()], [random_token(), token], [token, token]):
        headers = httpx.Headers([("Authorization", f"Bearer {value}") for value in pair])
        response = await http.post("/graphql", json={"query": CREATE % (8, 8)}, headers=headers)
        assert response.status_code == 400
        assert response.json() == {"errors": [{"message": "Send at most one Authorization header"}]}
    assert await reseller_names(services) == ["R0", "R1", "R2"]
    assert len(token_reads) == reads_before  # refused before any token was read


async def test_a_token_that_does_not_exist_is_charged_to_the_address(
    http: httpx.AsyncClient, factory: Factory, token_reads: list[str]
) -> None:
    live = await factory.token("SUPPORT")
    # a live token, once found live, spends its own budget (its first request, the address's too)
    assert (await http.post("/graphql", json=VIEWER, headers=bearer(live))).status_code == 200
    statuses = []
    for _ in range(20):  # a fresh random token per request escaped the per-address limit: 20/20
        response = await http.post("/graphql", json=VIEWER, headers=bearer(random_token()))
        statuses.append(response.status_code)
    assert statuses == [200] * (LIMIT - 1) + [429] * (20 - LIMIT + 1)
    refused = await http.post("/graphql", json=VIEWER, headers=bearer(random_token()))
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 3590 <= int(refused.headers["retry-after"]) <= 3600
    # the address's budget is spent, for requests without a token too
    assert (await http.post("/graphql", json=VIEWER)).status_code == 429
    # each refused bogus token cost no database read: one read per request let through
    assert len(token_reads) == 1 + (LIMIT - 1)
    # the live token still has its own budget
    response = await http.post("/graphql", json=VIEWER, headers=bearer(live))
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"role": "SUPPORT"}}}


async def test_a_flood_of_bogus_tokens_reads_nothing_once_its_address_is_spent(
    live_server: LiveServer, http: httpx.AsyncClient, token_reads: list[str]
) -> None:
    """200 requests at once, each with a new random token: LIMIT are let through (and read),
    the rest refused before any read, while a client at another address is served."""

    body = json.dumps(VIEWER).encode()

    async def bogus() -> int:  # raw: the test's own client must not be what slows the loop
        reader, writer = await connect(live_server)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {random_token()}\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        answer, _ = await until_closed(reader)
        writer.close()
        return int(answer.split(b" ", 2)[1])

    flood = asyncio.gather(*(bogus() for _ in range(200)))
    latency = await healthz_latency(live_server, address="127.0.0.2")
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, base_url=live_server.origin) as other:
        started = time.monotonic()
        response = await other.post("/graphql", json=VIEWER)
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text  # served (not rate limited)
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["UNAUTHENTICATED"]
    statuses = await flood
    print(
        f"\n200 bogus tokens at once: GET /healthz in {latency * 1000:.1f} ms, "
        f"an operation from 127.0.0.2 in {elapsed * 1000:.1f} ms"
    )
    assert sorted(statuses) == [200] * LIMIT + [429] * (200 - LIMIT)
    assert len(token_reads) == LIMIT


async def test_websocket_handshakes_and_inits_are_charged_to_the_address(
    live_server: LiveServer, http: httpx.AsyncClient, services: Services
) -> None:
    before = await scrape(http)
    reads = services.viewers.reads
    async with ws_client(live_server.ws_url) as ws:  # handshake: 1 of 3
        await ws.send({"type": "connection_init", "payload": bearer(random_token())})  # 2 of 3
        assert await ws.closed_with() == (4403, "Forbidden")
    assert services.viewers.reads == reads + 1  # the bogus token was read once
    async with ws_client(live_server.ws_url) as ws:  # handshake: 3 of 3
        await ws.send({"type": "connection_init", "payload": bearer(random_token())})
        code, reason = await ws.closed_with()
        assert code == 4429
        assert reason is not None and reason.startswith("Rate limit exceeded: try again in ")
    assert services.viewers.reads == reads + 1  # refused before its token was read
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(live_server.ws_url):
            pass
    response = refused.value.response
    assert response.status_code == 429
    assert 3590 <= int(response.headers["retry-after"]) <= 3600
    assert (await http.post("/graphql", json=VIEWER)).status_code == 429  # one budget for all
    after = await scrape(http)
    refusals = value(after, "orderpulse_rate_limited_total", transport="websocket") - value(
        before, "orderpulse_rate_limited_total", transport="websocket"
    )
    assert refusals == 2


async def test_two_authorization_keys_in_connection_init_are_refused(
    live_server: LiveServer, factory: Factory
) -> None:
    token = await factory.token("SUPPORT")
    async with ws_client(live_server.ws_url) as ws:
        payload = {"Authorization": f"Bearer {token}", "authorization": "Bearer op_x"}
        await ws.send({"type": "connection_init", "payload": payload})
        assert await ws.closed_with() == (4400, "Invalid connection init payload")


@pytest.mark.parametrize(
    ("settings_overrides", "separate_budgets"),
    [
        ({"rate_limit": f"{LIMIT}/hour"}, False),
        ({"rate_limit": f"{LIMIT}/hour", "forwarded_allow_ips": "127.0.0.1"}, True),
    ],
    ids=["no-trusted-proxy", "trusted-proxy"],
)
async def test_the_forwarded_address_counts_only_from_a_trusted_proxy(
    http: httpx.AsyncClient, separate_budgets: bool
) -> None:
    """Without ORDERPULSE_FORWARDED_ALLOW_IPS, X-Forwarded-For is the client's own invention
    (uvicorn's default would believe it from 127.0.0.1): a new one per request changes nothing."""
    statuses = []
    for n in range(LIMIT + 1):
        response = await http.post(
            "/graphql", json=VIEWER, headers={"X-Forwarded-For": f"10.0.0.{n + 1}"}
        )
        statuses.append(response.status_code)
    same_client = [
        (
            await http.post("/graphql", json=VIEWER, headers={"X-Forwarded-For": "10.0.0.1"})
        ).status_code
        for _ in range(LIMIT)
    ]
    if separate_budgets:  # each forwarded client has a budget of its own
        assert statuses == [200] * (LIMIT + 1)
        assert same_client == [200] * (LIMIT - 1) + [429]
    else:
        assert statuses == [200] * LIMIT + [429]
        assert same_client == [429] * LIMIT


# --- slow and greedy connections -----------------------------------------------------------------

READ_TIMEOUT = 1.0
SLOW = {"rate_limit": "100000/minute", "http_read_timeout_seconds": READ_TIMEOUT}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def open_connections(server: LiveServer) -> int:
    """The connections the server holds open: sockets of this process (the server runs in it)
    on the server's port, not listening (/proc/self/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    port = f"{server.port:04X}"
    count = 0
    with open("/proc/self/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and state != "0A" and local.endswith(":" + port):
                count += 1
    return count


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def connect(
    server: LiveServer, *, address: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(server.host, server.port, local_addr=(address, 0))


async def until_closed(reader: asyncio.StreamReader, *, within: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


async def healthz_latency(server: LiveServer, *, address: str = "127.0.0.1") -> float:
    """A normal client's round trip: a new connection, GET /healthz, its answer (200)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        started = time.monotonic()
        response = await client.get(f"{server.origin}/healthz")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    return elapsed


async def healthz_status(server: LiveServer) -> int | None:
    """GET /healthz on a new connection: 200, or None when the server refused it."""
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            response = await client.get(f"{server.origin}/healthz")
        except httpx.TransportError:
            return None
    return response.status_code if response.status_code == 200 else None


@pytest.mark.parametrize("settings_overrides", [SLOW])
async def test_slow_heads_bodies_and_idle_connections_are_closed(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def idle_new() -> tuple[bytes, float]:
        reader, writer = await connect(live_server)
        try:
            return await until_closed(reader)
        finally:
            writer.close()

    async def partial_head() -> tuple[bytes, float]:
        reader, writer = await connect(live_server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the 320 connections
        try:
            return await until_closed(reader)
        finally:
            writer.close()

    async def trickled_head() -> tuple[bytes, float]:
        """A byte every 0.2 s: each arrives in time, the head as a whole does not."""
        reader, writer = await connect(live_server)

        async def trickle() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        try:
            return await until_closed(reader)
        finally:
            trickling.cancel()
            writer.close()

    async def partial_body() -> tuple[bytes, float]:
        reader, writer = await connect(live_server)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"query": "'
        )
        try:
            return await until_closed(reader)
        finally:
            writer.close()

    async def kept_alive() -> tuple[bytes, float]:
        reader, writer = await connect(live_server)
        writer.write(HEALTHZ)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
            return await until_closed(reader)  # then idle
        finally:
            writer.close()

    caplog.set_level(logging.WARNING)
    baseline = open_connections(live_server)
    attacks = asyncio.gather(
        idle_new(), partial_head(), trickled_head(), partial_body(), kept_alive()
    )
    await asyncio.sleep(0.3)
    latency = await healthz_latency(live_server)  # a normal client meanwhile
    print(f"\nGET /healthz beside five slow connections: {latency * 1000:.1f} ms")
    (
        (idle, idle_s),
        (head, head_s),
        (trickled, trickled_s),
        (body, body_s),
        (kept, kept_s),
    ) = await attacks
    timed_out = b"HTTP/1.1 408 Request Timeout\r\n"
    assert idle == b"" and READ_TIMEOUT <= idle_s + 0.05 < READ_TIMEOUT + 2.5
    assert head.startswith(timed_out) and READ_TIMEOUT <= head_s + 0.05 < READ_TIMEOUT + 2.5
    assert trickled.startswith(timed_out) and trickled_s < READ_TIMEOUT + 2.5
    assert body == b"" and READ_TIMEOUT <= body_s + 0.05 < READ_TIMEOUT + 2.5
    assert kept == b"" and READ_TIMEOUT <= kept_s + 0.05 < READ_TIMEOUT + 2.5
    print(f"closed after {idle_s:.2f} {head_s:.2f} {trickled_s:.2f} {body_s:.2f} {kept_s:.2f} s")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    await eventually(
        lambda: open_connections(live_server) == baseline
    )  # the server let go of every one


@pytest.mark.parametrize("settings_overrides", [SLOW])
async def test_a_slowloris_flood_is_shed_while_others_are_served(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    """The issue's attack: hundreds of connections each sending part of a head. Each is closed
    at the read timeout; a normal client is served throughout, and the descriptors come back."""
    baseline, rss_before = open_connections(live_server), resident_kib()
    before = await scrape(http)  # (its kept-alive connection is closed when idle, as the rest)
    flood = []
    for _ in range(300):
        reader, writer = await connect(live_server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        flood.append((reader, writer))
    during = open_connections(live_server)
    latencies = [await healthz_latency(live_server) for _ in range(5)]
    print(
        f"\n300 slow connections ({during - baseline} connections): GET /healthz in "
        + ", ".join(f"{latency * 1000:.1f}" for latency in latencies)
        + " ms"
    )
    answers = await asyncio.gather(*(until_closed(reader) for reader, _ in flood))
    for _, writer in flood:
        writer.close()
    assert all(received.startswith(b"HTTP/1.1 408 ") for received, _ in answers)
    assert max(elapsed for _, elapsed in answers) < READ_TIMEOUT + 4
    # the server let go of every one (and of the idle scrape's connection)
    await eventually(lambda: open_connections(live_server) == baseline)
    ends, rss_after = open_connections(live_server), resident_kib()
    after = await scrape(http)
    closed = value(after, "orderpulse_connections_closed_total", kind="read_timeout") - value(
        before, "orderpulse_connections_closed_total", kind="read_timeout"
    )
    assert closed == 300  # (an idle kept-alive connection is closed by uvicorn, not counted)
    print(
        f"server connections {baseline} -> {during} -> {ends}; RSS {rss_before} -> {rss_after} KiB"
    )
    assert rss_after - rss_before < 32 * 1024  # 300 connections' buffers, not a leak


@pytest.mark.parametrize(
    "settings_overrides",
    [{**SLOW, "http_read_timeout_seconds": 30, "max_connections_per_address": 5}],
)
async def test_an_address_at_its_cap_is_refused_while_others_are_served(
    live_server: LiveServer,
) -> None:
    baseline = open_connections(live_server)
    async with AsyncExitStack() as stack:
        held = []
        for _ in range(4):
            held.append(await connect(live_server))
        # a websocket holds its place as long as it is open
        ws = await stack.enter_async_context(ws_client(live_server.ws_url))
        assert await ws.until_pong() == []
        reader, writer = await connect(live_server)  # the sixth from 127.0.0.1
        refused, _ = await until_closed(reader, within=2)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert refused.endswith(b"\r\n\r\nToo many connections from this address")
        latency = await healthz_latency(live_server, address="127.0.0.2")
        print(
            f"\n127.0.0.1 at its cap of 5: GET /healthz from 127.0.0.2 in {latency * 1000:.1f} ms"
        )
        await ws.connection.close()
        # its place is free again (once the server has seen the close): 127.0.0.1 is served
        assert await eventually(lambda: healthz_status(live_server)) == 200
        for _, held_writer in held:
            held_writer.close()
    # every place is given back: five at once again
    again = [await connect(live_server) for _ in range(5)]
    for reader, writer in again:
        writer.write(HEALTHZ)
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
    await eventually(
        lambda: open_connections(live_server) == baseline
    )  # the server let go of every one


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = Settings(_env_file=None, forwarded_allow_ips=" 10.0.0.0/8, 127.0.0.1 ,")  # type: ignore[call-arg]
    assert settings.forwarded_allow_ips == frozenset({"10.0.0.0/8", "127.0.0.1"})
    options = server_options(settings)
    assert (options["proxy_headers"], options["forwarded_allow_ips"]) == (
        True,
        ["10.0.0.0/8", "127.0.0.1"],
    )
    assert server_options(Settings(_env_file=None))["proxy_headers"] is False  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match=r"not 'proxy\.example'"):
        Settings(_env_file=None, forwarded_allow_ips="proxy.example")  # type: ignore[call-arg]
