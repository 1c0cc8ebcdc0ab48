"""Every Prometheus metric of OrderPulse, defined once, with the small functions that record them.

Callers never touch prometheus-client objects: they call `graphql_request(...)`,
`websocket_opened()`, and so on, so the names, labels and buckets live here only. No label ever
carries a tenant, a token or an e-mail address: the label values are small fixed sets.

With `serve --workers N` every worker is its own process. `python -m app serve` then points
`PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the workers start, prometheus-client keeps each
worker's values in files there, and `/metrics` (answered by any one worker) adds them all up.
Gauges of open websockets and active subscriptions are summed over the live workers.

The outbox gauges are not kept in any process: `OutboxCollector` reads them from the database at
scrape time, so they are right however many processes deliver mail. `OutboxGauges` keeps that read
for `OUTBOX_READ_SECONDS` (by the injected clock): scrapes, however many and however often, read
the database at most once per window and process; the oldest mail's age is still computed at each
scrape, from the time the read found.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.notifications.models import Notification
from app.observability.multiprocess import multiprocess_dir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What `generate_latest` writes: the classic text format, which every Prometheus reads."""

# The operation types and outcomes a request is counted under (fixed sets: no free text).
OPERATION_TYPES = ("query", "mutation", "subscription", "unknown")
OUTCOMES = ("success", "error", "rejected", "rate_limited")
"""success: no errors; error: executed, with errors (unauthenticated, forbidden, masked...);
rejected: never executed (did not parse, failed validation or a guard); rate_limited: refused
before parsing."""

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's own metrics (a registry of our own, so nothing else ends up in /metrics)."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRAPHQL_REQUESTS = Counter(
    "orderpulse_graphql_requests",
    "GraphQL operations answered, by operation type and outcome.",
    ["operation_type", "outcome"],
    registry=REGISTRY,
)
GRAPHQL_DURATION = Histogram(
    "orderpulse_graphql_request_duration_seconds",
    "Time to answer one GraphQL operation (parse, validate, execute), by operation type.",
    ["operation_type"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
WEBSOCKETS_OPEN = Gauge(
    "orderpulse_websockets_open",
    "Websockets open on /graphql.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
SUBSCRIPTIONS_ACTIVE = Gauge(
    "orderpulse_subscriptions_active",
    "Subscriptions running on open websockets.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "orderpulse_events_delivered",
    "Subscription events written to websockets (one per subscriber and event).",
    registry=REGISTRY,
)
EVENT_DELIVERY_LAG = Histogram(
    "orderpulse_event_delivery_lag_seconds",
    "From an event's write in its (committing) transaction to its send on subscribers' sockets.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "orderpulse_notifications",
    "Mail delivery attempts of notifications, by kind and the status they left the "
    "notification in (PENDING: failed for now, will be retried).",
    ["kind", "status"],
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "orderpulse_escalations",
    "Failed orders escalated at their SLA deadline (a Failed Order Unresolved notification).",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "orderpulse_rate_limited",
    "Operations refused because their token (or address) went over ORDERPULSE_RATE_LIMIT.",
    ["transport"],
    registry=REGISTRY,
)
CONNECTION_CLOSE_KINDS = ("read_timeout", "address_cap")
"""read_timeout: a request's head or body not sent in time, or an idle connection;
address_cap: the peer address already held ORDERPULSE_MAX_CONNECTIONS_PER_ADDRESS connections."""
CONNECTIONS_CLOSED = Counter(
    "orderpulse_connections_closed",
    "HTTP connections the server closed on a client: too slow, or one too many from its address.",
    ["kind"],
    registry=REGISTRY,
)

WEBSOCKETS_OVERFLOWED = Counter(
    "orderpulse_websockets_overflowed",
    "Websockets closed because they did not read what was sent to them, by what overflowed "
    "their send queue: events (1008) or answers such as pongs, results and errors (4400).",
    ["reason"],
    registry=REGISTRY,
)

PLANNER_FALLBACKS = Counter(
    "orderpulse_planner_fallbacks",
    "Queries the read planner meant to answer that the executor answered instead, because "
    "planning or running the plan raised (a bug in the planner: the log has the traceback).",
    ["stage"],
    registry=REGISTRY,
)

# --- recording ----------------------------------------------------------------------------------


def graphql_request(*, operation_type: str, outcome: str, seconds: float | None) -> None:
    """One GraphQL operation answered (over HTTP, or started over a websocket)."""
    if operation_type not in OPERATION_TYPES:
        operation_type = "unknown"
    GRAPHQL_REQUESTS.labels(operation_type, outcome).inc()
    if seconds is not None:
        GRAPHQL_DURATION.labels(operation_type).observe(seconds)


def planner_fallback(*, stage: str) -> None:
    """The read planner raised while compiling ("compile") or running ("run") a plan."""
    PLANNER_FALLBACKS.labels(stage).inc()


def websocket_opened() -> None:
    WEBSOCKETS_OPEN.inc()


def websocket_closed() -> None:
    WEBSOCKETS_OPEN.dec()


def websocket_overflowed(*, reason: str) -> None:
    """A websocket closed because its send queue overflowed; `reason` is `events` or `answers`."""
    WEBSOCKETS_OVERFLOWED.labels(reason).inc()


def subscription_started() -> None:
    SUBSCRIPTIONS_ACTIVE.inc()


def subscription_ended() -> None:
    SUBSCRIPTIONS_ACTIVE.dec()


def events_delivered(count: int = 1) -> None:
    EVENTS_DELIVERED.inc(count)


def event_delivery_lag(seconds: float) -> None:
    """Commit to socket write of one event (observed once per event and process, not per
    subscriber: the subscribers of a group are written to in the same pass)."""
    EVENT_DELIVERY_LAG.observe(max(seconds, 0.0))


def notification_attempted(*, kind: str, status: str) -> None:
    """A delivery attempt was recorded; `status` is the notification's status after it."""
    NOTIFICATIONS.labels(kind, status).inc()


def escalation_recorded() -> None:
    ESCALATIONS.inc()


def connection_closed(*, kind: str) -> None:
    """A connection closed on its client; `kind` is one of `CONNECTION_CLOSE_KINDS`."""
    CONNECTIONS_CLOSED.labels(kind).inc()


def rate_limited(*, transport: str) -> None:
    """An operation refused by the rate limit; `transport` is `http` or `websocket`."""
    RATE_LIMITED.labels(transport).inc()
    if transport == "http":
        GRAPHQL_REQUESTS.labels("unknown", "rate_limited").inc()


# --- the outbox, read at scrape time ------------------------------------------------------------


OUTBOX_READ_SECONDS = 5.0
"""How long one read of the outbox answers scrapes for."""


@dataclass(frozen=True)
class OutboxState:
    pending: int
    oldest_pending_age_seconds: float


@dataclass(frozen=True)
class OutboxRead:
    """What one read of the outbox found: how many wait, and since when the oldest has."""

    pending: int
    oldest_created_at: datetime | None

    def state(self, *, now: datetime) -> OutboxState:
        oldest = self.oldest_created_at
        age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        return OutboxState(pending=self.pending, oldest_pending_age_seconds=age)


async def read_outbox(session: AsyncSession) -> OutboxRead:
    """How many notifications wait in the outbox, and the creation time of the oldest."""
    count, oldest = (
        await session.exec(
            select(func.count(col(Notification.id)), func.min(Notification.created_at)).where(
                col(Notification.status) == "PENDING"
            )
        )
    ).one()
    return OutboxRead(pending=int(count or 0), oldest_created_at=oldest)


class OutboxGauges:
    """The outbox gauges of a scrape, read from the database at most once per `max_age_seconds`
    (by `now`, the injected clock); concurrent scrapes share one read."""

    def __init__(
        self,
        read_session: Callable[[], AbstractAsyncContextManager[AsyncSession]],
        now: Callable[[], datetime],
        *,
        max_age_seconds: float = OUTBOX_READ_SECONDS,
    ) -> None:
        self.read_session = read_session
        self.now = now
        self.max_age = timedelta(seconds=max_age_seconds)
        self.last: tuple[datetime, OutboxRead] | None = None
        self.reading = asyncio.Lock()

    async def state(self) -> OutboxState:
        async with self.reading:
            now = self.now()
            if self.last is None or not (self.last[0] <= now < self.last[0] + self.max_age):
                async with self.read_session() as session:
                    self.last = (now, await read_outbox(session))
            return self.last[1].state(now=now)


class OutboxCollector(Collector):
    """The outbox gauges of one scrape (read from the database just before)."""

    def __init__(self, state: OutboxState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "orderpulse_outbox_pending",
            "Notifications waiting to be sent (status PENDING), in every process.",
            value=self.state.pending,
        )
        yield GaugeMetricFamily(
            "orderpulse_outbox_oldest_pending_age_seconds",
            "Age of the oldest PENDING notification (0 when none waits).",
            value=self.state.oldest_pending_age_seconds,
        )


# --- exposition ---------------------------------------------------------------------------------


def scrape_allowed(authorization: Sequence[str], token: str | None) -> bool:
    """Whether a scrape with these `Authorization` values may read /metrics: always when no
    token is configured (ORDERPULSE_METRICS_TOKEN), else only with exactly `Bearer <token>`."""
    if token is None:
        return True
    if len(authorization) != 1:
        return False
    scheme, _, given = authorization[0].strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def worker_exiting() -> None:
    """A worker stops: its live gauges (open websockets, subscriptions) no longer count."""
    if multiprocess_dir() is not None:
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def exposition(outbox: OutboxState) -> bytes:
    """The text of one scrape: every process's metrics (or this one's) and the outbox gauges."""
    registry = CollectorRegistry(auto_describe=True)
    if multiprocess_dir() is not None:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_OwnMetrics())
    registry.register(OutboxCollector(outbox))
    return generate_latest(registry)


class _OwnMetrics(Collector):
    """This process's registry, as one collector of a scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
