"""Carrying "new events committed" wake-ups between server processes.

Every process keeps one transport connection. After a transaction that wrote events commits, the
bus calls `announce()`, which only marks a wake-up as pending; the transport's task sends it as
one message carrying the newest event id (never rows), so a burst of commits costs one message.
On receipt, a process wakes its local listeners (`EventBus.wake_local`); its fan-out then reads
the durable log from where it stopped, so a lost, late or doubled message loses or doubles
nothing.

- PostgreSQL (default): a dedicated asyncpg connection that LISTENs on `orderpulse_events` and
  sends `pg_notify` on the same connection. Channels are per database, so deployments on
  different databases of one server do not hear each other.
- Redis pub/sub when `ORDERPULSE_REDIS_URL` is set: channel `orderpulse_events:<database>`; the
  message is "<newest event id> <sender>", the sender so a process ignores its own messages.
- SQLite: none (the embedded mode is one process).

When the connection drops (the database or Redis restarted, the backend was terminated), the
transport reconnects by itself with exponential backoff capped at half a second (the process is
not ready while it is down, and must be ready within a second of the server's return: a refused
connection costs next to nothing, so retrying twice a second is cheap), wakes local listeners once
connected (events committed meanwhile are in the log), and sends any announcement still pending.
The first failure of an outage is logged at WARNING, the retries that follow at DEBUG, and the
reconnection says how long the outage lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

from app.db import Database
from app.events.bus import EventBus
from app.events.models import Event
from app.settings import Settings

log = logging.getLogger("orderpulse.events.transport")

CHANNEL = "orderpulse_events"
CLIENT_NAME = "orderpulse-events"
CONNECT_TIMEOUT_SECONDS = 5.0
# A connection that stayed up this long resets the reconnection backoff.
STABLE_SECONDS = 30.0

LatestEventId = Callable[[], Awaitable[int]]


class ConnectionLost(ConnectionError):
    """The transport connection closed under us."""


def asyncpg_dsn(database_url: str) -> str:
    """The libpq-style DSN asyncpg takes, from a postgresql:// or postgresql+asyncpg:// URL."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise ValueError(f"not a PostgreSQL URL: {database_url!r}")
    return "postgresql://" + rest


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/") or "default"


class EventTransport(ABC):
    """The reconnecting loop shared by both transports; subclasses supply the connection."""

    def __init__(
        self,
        *,
        bus: EventBus,
        backoff_first_seconds: float = 0.05,
        backoff_max_seconds: float = 0.5,
        health_check_seconds: float = 10.0,
        timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.bus = bus
        self.timeout_seconds = timeout_seconds
        """The longest a connection attempt or a command may take (a partition answers nothing)."""
        self.backoff_first_seconds = backoff_first_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.health_check_seconds = health_check_seconds
        self.connected = asyncio.Event()
        self.connects = 0
        """How many times the transport has connected (1 + reconnections)."""
        self.received = 0
        """Wake-ups received from other processes."""
        self.latest_event_id = 0
        """The newest event id another process announced."""
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the connection loop and route the bus's announcements through this transport."""
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__}")
        self.bus.set_remote(self.announce)

    async def stop(self) -> None:
        self.bus.set_remote(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def announce(self) -> None:
        """New events committed in this process: tell the others (sent by the transport's task)."""
        self._pending.set()

    def _received(self, payload: str) -> None:
        try:
            self.latest_event_id = max(self.latest_event_id, int(payload))
        except ValueError:
            log.warning("ignoring a malformed wake-up %r", payload[:100])
            return
        self.received += 1
        self.bus.wake_local()

    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max_seconds, self.backoff_first_seconds * 2.0 ** (failures - 1))
        return float(delay) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not cryptography)

    async def _run(self) -> None:
        failures = 0
        lost_at: float | None = None
        while True:
            connected_at: float | None = None
            try:
                await self._connect()
                connected_at = time.monotonic()
                self.connects += 1
                self.connected.set()
                if self.connects > 1 and lost_at is not None:
                    log.warning(
                        "%s reconnected after %.1f s",
                        type(self).__name__,
                        connected_at - lost_at,
                    )
                lost_at = None
                # Events may have committed while we were away: let the fan-out read the log.
                self.bus.wake_local()
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if connected_at is not None and time.monotonic() - connected_at > STABLE_SECONDS:
                    failures = 0  # it was up for a while: start the backoff over
                failures += 1
                first = lost_at is None
                if first:
                    lost_at = time.monotonic()
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "%s connection lost or refused (%s: %s); retrying",
                    type(self).__name__,
                    type(exc).__name__,
                    exc,
                )
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await self._close()
            await asyncio.sleep(self._backoff(failures))

    async def _serve(self) -> None:
        """Send pending announcements and check the connection until it fails."""
        receiving = asyncio.create_task(self._receive())
        try:
            while True:
                pending = asyncio.create_task(self._pending.wait())
                done, _ = await asyncio.wait(
                    {pending, receiving},
                    timeout=self.health_check_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if receiving in done:
                    pending.cancel()
                    receiving.result()  # raises why the connection ended
                    raise ConnectionLost("the transport connection closed")
                if pending in done:
                    self._pending.clear()
                    try:
                        await self._publish()
                    except BaseException:
                        self._pending.set()  # send it after reconnecting
                        raise
                else:
                    pending.cancel()
                    await self._check_health()
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiving

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _receive(self) -> None:
        """Deliver incoming wake-ups to `_received`; return or raise when the connection ends."""

    @abstractmethod
    async def _publish(self) -> None: ...

    @abstractmethod
    async def _check_health(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...


class PostgresTransport(EventTransport):
    """LISTEN/NOTIFY on one dedicated asyncpg connection (it both listens and notifies)."""

    def __init__(self, *, database_url: str, bus: EventBus, channel: str = CHANNEL, **options: Any):
        super().__init__(bus=bus, **options)
        self.dsn = asyncpg_dsn(database_url)
        self.channel = channel
        self._conn: Any = None
        self._lost = asyncio.Event()

    async def _connect(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        self._lost.clear()
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.timeout_seconds,
            server_settings={"application_name": CLIENT_NAME},
        )
        self._conn = conn
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(self.channel, self._on_notify)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if pid == conn.get_server_pid():
            return  # our own announcement: this process's listeners were woken already
        self._received(payload)

    async def _receive(self) -> None:
        await self._lost.wait()

    async def _publish(self) -> None:
        # The newest id is read in the same statement; NOTIFY is delivered when it commits.
        await self._conn.execute(
            "SELECT pg_notify($1, (SELECT coalesce(max(id), 0) FROM event)::text)",
            self.channel,
            timeout=self.timeout_seconds,
        )

    async def _check_health(self) -> None:
        await self._conn.fetchval("SELECT 1", timeout=self.timeout_seconds)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                conn.terminate()


class RedisTransport(EventTransport):
    """Redis pub/sub: one subscriber connection, publishes from the client's pool."""

    def __init__(
        self,
        *,
        redis_url: str,
        bus: EventBus,
        latest_event_id: LatestEventId,
        channel: str,
        client_name: str = CLIENT_NAME,
        **options: Any,
    ):
        super().__init__(bus=bus, **options)
        self.redis_url = redis_url
        self.channel = channel
        self.client_name = client_name
        self._latest_event_id = latest_event_id
        self._client: Any = None
        self._pubsub: Any = None
        # Redis delivers our own messages back to us; this tells them apart.
        self.origin = uuid.uuid4().hex[:16]

    async def _connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No silent retries inside redis-py: a dropped connection must surface here, so that
        # we reconnect and wake the local listeners for whatever was missed meanwhile.
        client = Redis.from_url(
            self.redis_url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.timeout_seconds,
            socket_timeout=None,
            client_name=self.client_name,
        )
        self._client = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)

    async def _receive(self) -> None:
        while True:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self.health_check_seconds
            )
            if message is None:
                await self._pubsub.ping()
            elif message.get("type") == "message":
                data = message["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                newest, _, origin = text.partition(" ")
                if origin != self.origin:
                    self._received(newest)

    async def _publish(self) -> None:
        newest = await self._latest_event_id()
        await asyncio.wait_for(
            self._client.publish(self.channel, f"{newest} {self.origin}"), self.timeout_seconds
        )

    async def _check_health(self) -> None:
        await asyncio.wait_for(self._client.ping(), self.timeout_seconds)

    async def _close(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 2.0)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2.0)


def newest_event_id(db: Database) -> LatestEventId:
    """Reads the newest event id (0 for an empty log)."""

    async def read() -> int:
        async with db.read() as session:
            newest = await session.scalar(select(func.max(Event.id)))
            return int(newest or 0)

    return read


def transport_for(*, settings: Settings, db: Database, bus: EventBus) -> EventTransport | None:
    """The transport this configuration needs: Redis pub/sub if `redis_url` is set, else
    LISTEN/NOTIFY; none on SQLite (one process)."""
    if not settings.is_postgres:
        if settings.redis_url:
            log.warning("ORDERPULSE_REDIS_URL is ignored on SQLite (a single process)")
        return None
    if settings.redis_url:
        name = database_name(settings.database_url)
        return RedisTransport(
            redis_url=settings.redis_url,
            bus=bus,
            latest_event_id=newest_event_id(db),
            channel=f"{CHANNEL}:{name}",
            client_name=f"{CLIENT_NAME}-{name}",
            timeout_seconds=settings.redis_timeout_seconds,
        )
    return PostgresTransport(
        database_url=settings.database_url,
        bus=bus,
        timeout_seconds=settings.database_timeout_seconds,
    )
