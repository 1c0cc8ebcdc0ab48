"""Outages of the database and Redis through a real server (SPEC 8, issue 23): a request that
cannot be served gets 503 with Retry-After, never a bare 500; a websocket's connection_init is
closed with 1013, never dropped; a partition (packets dropped, no reset) fails requests within
ORDERPULSE_DATABASE_TIMEOUT_SECONDS instead of hanging; and the process is ready again within a
second of the dependency's return.

The shared PostgreSQL and Redis are never touched: each test starts a PostgreSQL cluster and a
Redis server of its own (tests/support/outages.py) and stops, restarts or cuts them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlmodel import select
from starlette.applications import Starlette

from app.asgi import create_app
from app.notifications.models import DeliveryStatus, Notification
from app.settings import Settings
from tests.scale.conftest import unavailable
from tests.support.api import Factory
from tests.support.outages import OwnPostgres, OwnRedis, PartitionProxy, own_servers_unavailable
from tests.support.server import LiveServer, serve
from tests.support.smtp import SmtpHandler, SmtpServer
from tests.support.ws import ws_client

VIEWER = "{ viewer { role } }"
UNAVAILABLE = {
    "errors": [
        {
            "message": "The service is temporarily unavailable: try again later",
            "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfter": 2},
        }
    ]
}
RECOVERY_SECONDS = 1.0
"""How soon after a dependency's return the process must be ready and serving (issue 23)."""


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    reason = own_servers_unavailable()
    if reason is not None:
        unavailable(reason)
    server = OwnPostgres.start()
    yield server
    server.close()


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[OwnRedis]:
    reason = own_servers_unavailable()
    if reason is not None:
        unavailable(reason)
    server = OwnRedis.start(tmp_path / "redis")
    yield server
    server.close()


@asynccontextmanager
async def running(
    database_url: str, **settings: Any
) -> AsyncIterator[tuple[Starlette, LiveServer]]:
    """The app, its workers started, on a real uvicorn socket."""
    config = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        support_email="support@distributor.example",
        **{"escalation_poll_seconds": 3600, **settings},
    )
    app = create_app(config)
    async with app.router.lifespan_context(app), serve(app) as server:
        yield app, server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until(check: Any, *, timeout: float, interval: float = 0.02) -> tuple[float, Any]:
    """Poll `await check()` until it returns a true value (bounded); (seconds taken, value)."""
    started = time.monotonic()
    while True:
        value = await check()
        if value:
            return time.monotonic() - started, value
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)


async def ready_and_serving(http: httpx.AsyncClient, token: str) -> bool:
    ready = (await http.get("/readyz")).status_code == 200
    served = await http.post("/graphql", json={"query": VIEWER}, headers=bearer(token))
    return ready and served.status_code == 200


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.json() == UNAVAILABLE


async def test_a_database_restart_is_503_then_ready_within_a_second(
    own_postgres: OwnPostgres,
) -> None:
    url = own_postgres.create_database()
    async with running(url) as (app, server):
        token = await Factory(app.state.services).token("SUPPORT")
        fresh = await Factory(app.state.services).token("SUPPORT")  # never used before the outage
        async with (
            httpx.AsyncClient(base_url=server.origin, timeout=20) as http,
            ws_client(server.ws_url) as open_before,
        ):
            await until(lambda: ready_and_serving(http, token), timeout=15)
            assert await open_before.init(token) == {"type": "connection_ack"}
            await asyncio.to_thread(own_postgres.stop)

            # HTTP: the token's look-up cannot be made
            assert_unavailable(await http.post("/graphql", json={"query": VIEWER},
                                               headers=bearer(token)))  # fmt: skip
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "the database does not answer" in ready.json()["problems"]
            # websockets: connection_init with a token that cannot be checked: 1013, a close frame
            async with ws_client(server.ws_url) as ws:
                await ws.send({"type": "connection_init", "payload": bearer(fresh)})
                assert await ws.closed_with() == (1013, "Try again later")
            # a socket opened before: a subscription that cannot start is refused, the socket stays
            after = "ZXZlbnQ6MQ"  # the cursor of event 1
            await open_before.subscribe(
                "1", "subscription($a: String) { orderStatusChanged(after: $a) { cursor } }",
                {"a": after},
            )  # fmt: skip
            assert await open_before.receive() == {
                "id": "1",
                "type": "error",
                "payload": [
                    {
                        **UNAVAILABLE["errors"][0],
                        "locations": [{"line": 1, "column": 28}],
                        "path": ["orderStatusChanged"],
                    }
                ],
            }
            assert await open_before.until_pong() == []

            await asyncio.to_thread(own_postgres.start_again)
            taken, _ = await until(lambda: ready_and_serving(http, token), timeout=10)
            print(f"ready and serving {taken:.3f} s after PostgreSQL accepted connections again")
            assert taken < RECOVERY_SECONDS
            async with ws_client(server.ws_url) as ws:
                assert await ws.init(fresh) == {"type": "connection_ack"}


async def test_a_statement_past_the_time_limit_is_503_over_http_and_an_error_over_websockets(
    own_postgres: OwnPostgres,
) -> None:
    """The token is read, then the operation's own statement waits on a lock past
    ORDERPULSE_DATABASE_TIMEOUT_SECONDS: the resolver's failure is the database's, not a bug."""
    url = own_postgres.create_database()
    async with running(url, database_timeout_seconds=1) as (app, server):
        token = await Factory(app.state.services).token("SUPPORT")
        query = "{ orders(first: 1) { totalCount } }"
        async with (
            httpx.AsyncClient(base_url=server.origin, timeout=20) as http,
            ws_client(server.ws_url) as ws,
        ):
            assert await ws.init(token) == {"type": "connection_ack"}
            locker = await asyncpg.connect(own_postgres.url("orderpulse"))
            try:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE sales_order IN ACCESS EXCLUSIVE MODE")
                    started = time.monotonic()
                    response = await http.post(
                        "/graphql", json={"query": query}, headers=bearer(token)
                    )
                    assert time.monotonic() - started < 3  # the limit, not a hang
                    assert_unavailable(response)
                    await ws.subscribe("1", query)
                    message = await ws.receive(timeout=5)
                    assert message["type"] == "next" and message["id"] == "1", message
                    assert message["payload"]["data"] is None
                    [error] = message["payload"]["errors"]
                    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfter": 2}
                    assert error["message"] == UNAVAILABLE["errors"][0]["message"]
                    assert (await ws.receive(timeout=5)) == {"id": "1", "type": "complete"}
            finally:
                await locker.close()
            response = await http.post("/graphql", json={"query": query}, headers=bearer(token))
            assert response.json() == {"data": {"orders": {"totalCount": 0}}}


async def test_a_partition_fails_requests_within_the_limit_and_heals(
    own_postgres: OwnPostgres,
) -> None:
    """A proxy between the server and PostgreSQL stops forwarding (no reset): requests get 503
    within the time limit instead of hanging, /readyz says so, and all is well once it heals."""
    own_postgres.create_database()
    proxy = await PartitionProxy.start(own_postgres.port)
    try:
        through_proxy = own_postgres.url("orderpulse", port=proxy.port)
        async with running(through_proxy, database_timeout_seconds=1) as (app, server):
            token = await Factory(app.state.services).token("SUPPORT")
            async with httpx.AsyncClient(base_url=server.origin, timeout=20) as http:
                await until(lambda: ready_and_serving(http, token), timeout=15)
                proxy.partition()
                for _ in range(3):  # pooled connections and new ones alike
                    started = time.monotonic()
                    response = await http.post(
                        "/graphql", json={"query": VIEWER}, headers=bearer(token)
                    )
                    taken = time.monotonic() - started
                    assert taken < 2.5, taken  # 1 s limit (connect or statement), plus slack
                    assert_unavailable(response)
                started = time.monotonic()
                assert (await http.get("/readyz")).status_code == 503
                assert time.monotonic() - started < 4  # the ping's own limit
                proxy.heal()
                taken, _ = await until(lambda: ready_and_serving(http, token), timeout=10)
                print(f"ready and serving {taken:.3f} s after the partition healed")
                assert taken < RECOVERY_SECONDS
    finally:
        await proxy.close()


async def test_redis_restart_ready_again_within_a_second(
    own_postgres: OwnPostgres, own_redis: OwnRedis
) -> None:
    url = own_postgres.create_database()
    async with running(url, redis_url=own_redis.url) as (app, server):
        token = await Factory(app.state.services).token("SUPPORT")
        async with httpx.AsyncClient(base_url=server.origin, timeout=20) as http:
            await until(lambda: ready_and_serving(http, token), timeout=15)
            own_redis.stop()

            async def unready() -> Any:
                response = await http.get("/readyz")
                return response.status_code == 503 and response.json()

            _, body = await until(unready, timeout=15)
            assert "the rate limit store (Redis) does not answer" in body["problems"], body
            # the API still answers meanwhile (rate limits fail open)
            response = await http.post("/graphql", json={"query": VIEWER}, headers=bearer(token))
            assert response.json() == {"data": {"viewer": {"role": "SUPPORT"}}}
            await asyncio.sleep(3)  # long enough for the transport's reconnection to back off
            own_redis.start_again()
            taken, _ = await until(lambda: ready_and_serving(http, token), timeout=15)
            print(f"ready {taken:.3f} s after Redis answered again")
            assert taken < RECOVERY_SECONDS


WORKER_LOGGERS = {
    "orderpulse.outbox",
    "orderpulse.escalation",
    "orderpulse.incidents",
    "orderpulse.fanout",
}
"""The background loops that poll the database (app/workers.py)."""


async def test_background_workers_log_a_database_outage_as_warnings_and_recover(
    own_postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """With the database stopped, each polling worker says so in one WARNING line per failed
    pass, naming the dependency, without a traceback (an outage is not a bug: no ERROR); once it
    is back the workers work again (the fan-out delivers a change made after the return)."""
    caplog.set_level(logging.INFO, logger="orderpulse")
    url = own_postgres.create_database()
    fast = {"escalation_poll_seconds": 0.1, "outbox_poll_seconds": 0.1, "fanout_poll_seconds": 0.1}
    async with running(url, **fast) as (app, server):
        rows = Factory(app.state.services)
        token = await rows.token("SUPPORT")
        async with (
            httpx.AsyncClient(base_url=server.origin, timeout=20) as http,
            ws_client(server.ws_url) as ws,
        ):
            await until(lambda: ready_and_serving(http, token), timeout=15)
            assert await ws.init(token) == {"type": "connection_ack"}
            # a live audience, so that the fan-out reads the log on every poll
            await ws.subscribe("1", "subscription { orderStatusChanged { to order { number } } }")
            await ws.until_pong()
            caplog.clear()
            await asyncio.to_thread(own_postgres.stop)

            def warned() -> set[str]:
                return {
                    r.name
                    for r in caplog.records
                    if r.levelno == logging.WARNING
                    and "the database is down or out of reach" in r.getMessage()
                }

            async def every_worker_warned() -> bool:
                return WORKER_LOGGERS <= warned()

            await until(every_worker_warned, timeout=15)
            await asyncio.to_thread(own_postgres.start_again)
            await until(lambda: ready_and_serving(http, token), timeout=15)
            order = await rows.order(status="PF")
            changes = [
                (await ws.next("1", timeout=15))["orderStatusChanged"] for _ in "PR PF".split()
            ]
            assert changes == [{"to": to, "order": {"number": order.number}} for to in ("PR", "PF")]

        from_workers = [r for r in caplog.records if r.name in WORKER_LOGGERS]
        assert [r for r in from_workers if r.levelno >= logging.ERROR] == []
        assert [r for r in from_workers if r.exc_info] == []


class StopsTheDatabaseOnFirstMail(SmtpHandler):
    """Accepts every mail; on the first, stops the database before answering 250, so the worker
    that sent it finds the database away when it records the mail SENT."""

    def __init__(self, server: SmtpServer, postgres: OwnPostgres) -> None:
        super().__init__(server)
        self.postgres = postgres
        self.stopped = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if not self.stopped.is_set():
            self.stopped.set()
            self.postgres.stop()
        return reply


async def test_a_mail_sent_just_before_a_database_outage_is_recorded_once_it_is_back(
    own_postgres: OwnPostgres,
) -> None:
    """The mail server accepted a notification, then the database went away before the worker
    recorded it SENT: the worker records it once the database is back (within its lease), and
    no other pass sends it again (at least once, but not twice without a crash)."""
    url = own_postgres.create_database()
    smtp = SmtpServer()
    handler = StopsTheDatabaseOnFirstMail(smtp, own_postgres)
    smtp.handler = lambda: handler  # type: ignore[method-assign]
    with smtp:
        settings = {
            "smtp_url": smtp.url,
            "outbox_poll_seconds": 0.1,
            "delivery_lease_seconds": 4,
            "delivery_retry_seconds": 1,
            "incident_threshold": 1_000_000,
        }
        async with running(url, **settings) as (app, _server):
            rows = Factory(app.state.services)
            order = await rows.order(status="PF")
            await until(lambda: asyncio.to_thread(handler.stopped.is_set), timeout=15)
            await asyncio.sleep(1.0)  # the outage: the worker's first tries to record fail
            await asyncio.to_thread(own_postgres.start_again)

            async def all_sent() -> bool:
                async with app.state.services.db.read() as session:
                    statuses = (
                        await session.exec(
                            select(Notification.status).where(Notification.order_id == order.id)
                        )
                    ).all()
                return bool(statuses) and all(s == DeliveryStatus.SENT.value for s in statuses)

            await until(all_sent, timeout=20)
            await asyncio.sleep(6)  # past the lease: a pass that had lost the record would resend
        ids = [m["Message-ID"] for m in smtp.messages]
        assert ids and len(ids) == len(set(ids)), ids
