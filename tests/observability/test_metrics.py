"""/metrics over real HTTP: the names of SPEC 8, counts that move with what happened, outbox gauges
read from the database, and no tenant, token or e-mail in any label."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.notifications.escalation import escalate_overdue_failures
from app.observability.metrics import OUTBOX_READ_SECONDS
from app.services import Services
from tests.notifications.helpers import eventually
from tests.observability.helpers import Samples, parse, scrape, value
from tests.support.api import Factory
from tests.support.clock import FakeClock
from tests.support.server import LiveServer
from tests.support.smtp import free_port
from tests.support.ws import ws_client

SPEC_NAMES = {
    "orderpulse_graphql_requests_total",
    "orderpulse_graphql_request_duration_seconds",
    "orderpulse_websockets_open",
    "orderpulse_subscriptions_active",
    "orderpulse_events_delivered_total",
    "orderpulse_event_delivery_lag_seconds",
    "orderpulse_outbox_pending",
    "orderpulse_outbox_oldest_pending_age_seconds",
    "orderpulse_notifications_total",
    "orderpulse_escalations_total",
    "orderpulse_rate_limited_total",
}
ALLOWED_LABELS = {
    "operation_type",
    "outcome",
    "kind",
    "status",
    "transport",
    "reason",
    "stage",
    "le",
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A mail server that refuses connections: notifications stay PENDING in the outbox.
    return {
        "smtp_url": f"smtp://127.0.0.1:{free_port()}",
        "delivery_retry_seconds": 3600,
        "escalation_poll_seconds": 3600,
    }


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


async def post(http: httpx.AsyncClient, query: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.post("/graphql", json={"query": query}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_every_spec_metric_is_exposed(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    exposed = set()
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            # a counter is declared with or without its _total suffix, by exposition version
            exposed.add(
                name + "_total" if kind == "counter" and not name.endswith("_total") else name
            )
    assert SPEC_NAMES <= exposed, SPEC_NAMES - exposed


async def test_operations_are_counted_by_type_and_outcome(
    http: httpx.AsyncClient, factory: Factory
) -> None:
    token = await factory.token("SUPPORT")
    before = await scrape(http)
    assert (await post(http, "{ viewer { role } }", token))["data"] == {
        "viewer": {"role": "SUPPORT"}
    }
    assert "errors" in await post(http, "{ viewer { role } }")  # no token: UNAUTHENTICATED
    assert "errors" in await post(http, "{ viewer { ", token)  # does not parse
    created = await post(
        http,
        'mutation { createReseller(input: {name: "M", email: "m@m.example"}) { reseller { id } } }',
        token,
    )
    assert created["data"]["createReseller"]["reseller"]["id"]
    after = await scrape(http)

    name = "orderpulse_graphql_requests_total"
    assert delta(before, after, name, operation_type="query", outcome="success") == 1
    assert delta(before, after, name, operation_type="query", outcome="error") == 1
    assert delta(before, after, name, operation_type="unknown", outcome="rejected") == 1
    assert delta(before, after, name, operation_type="mutation", outcome="success") == 1
    histogram = "orderpulse_graphql_request_duration_seconds_count"
    assert delta(before, after, histogram, operation_type="query") == 2
    assert delta(before, after, histogram, operation_type="mutation") == 1


async def test_outbox_gauges_come_from_the_database(
    http: httpx.AsyncClient, factory: Factory, clock: FakeClock, services: Services
) -> None:
    before = await scrape(http)
    assert value(before, "orderpulse_outbox_pending") == 0
    assert value(before, "orderpulse_outbox_oldest_pending_age_seconds") == 0
    reseller = await factory.reseller()
    await factory.notify(reseller, reseller_mail=True)
    await factory.order(await factory.customer(reseller), status="PF")  # support + reseller mail

    async def attempted() -> Samples | None:
        samples = await scrape(http)
        name = "orderpulse_notifications_total"
        tried = value(samples, name, kind="ORDER_PROVISIONING_FAILED", status="PENDING")
        return (
            samples
            if tried - value(before, name, kind="ORDER_PROVISIONING_FAILED", status="PENDING") == 2
            else None
        )

    samples = await eventually(attempted)  # both tried once: the mail server refused
    # within OUTBOX_READ_SECONDS of the first scrape, scrapes answer from its read
    assert value(samples, "orderpulse_outbox_pending") == 0
    clock.advance(seconds=OUTBOX_READ_SECONDS)
    samples = await scrape(http)
    assert value(samples, "orderpulse_outbox_pending") == 2
    assert value(samples, "orderpulse_outbox_oldest_pending_age_seconds") == OUTBOX_READ_SECONDS
    clock.advance(seconds=90 - OUTBOX_READ_SECONDS)
    samples = await scrape(http)
    assert value(samples, "orderpulse_outbox_pending") == 2
    assert value(samples, "orderpulse_outbox_oldest_pending_age_seconds") == 90

    clock.advance(hours=3)  # past the 2 business hours of the SLA
    escalations = value(samples, "orderpulse_escalations_total")
    assert (
        await escalate_overdue_failures(
            db=services.db, transaction=services.transaction, clock=services.clock
        )
        == 1
    )
    after = await scrape(http)
    assert value(after, "orderpulse_escalations_total") - escalations == 1
    assert value(after, "orderpulse_outbox_pending") == 3  # the escalation mail waits too


async def test_no_label_carries_a_tenant_token_or_email(
    http: httpx.AsyncClient, factory: Factory
) -> None:
    reseller = await factory.reseller(name="Secret Reseller", email="secret@reseller.example")
    await factory.notify(reseller, reseller_mail=True, customer_mail=True)
    customer = await factory.customer(reseller, name="Secret Customer")
    await factory.order(customer, status="PF")
    token = await factory.token("RESELLER", reseller=reseller)
    await post(http, "{ viewer { role } orders(first: 5) { totalCount } }", token)
    text = (await http.get("/metrics")).text
    for sample_key in parse(text):
        _, labels = sample_key
        assert {k for k, _ in labels} <= ALLOWED_LABELS, labels
    for secret in ("Secret", "secret@", "@", token, token[:12]):
        assert secret not in text


async def test_websocket_metrics_follow_sockets_subscriptions_and_events(
    http: httpx.AsyncClient, live_server: LiveServer, factory: Factory, clock: FakeClock
) -> None:
    token = await factory.token("SUPPORT")
    before = await scrape(http)
    async with ws_client(live_server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        await ws.subscribe("1", "subscription { orderStatusChanged { to } }")
        await ws.subscribe("2", "subscription { orderStatusChanged { to } }")
        await ws.until_pong()  # both started
        during = await scrape(http)
        assert delta(before, during, "orderpulse_websockets_open") == 1
        assert delta(before, during, "orderpulse_subscriptions_active") == 2
        await factory.order(status="PR")  # one status change (placed): to both subscriptions
        assert (await ws.next("1"))["orderStatusChanged"]["to"] == "PR"
        assert (await ws.next("2"))["orderStatusChanged"]["to"] == "PR"
        delivered = await scrape(http)
        assert delta(before, delivered, "orderpulse_events_delivered_total") == 2
        assert delta(before, delivered, "orderpulse_event_delivery_lag_seconds_count") == 1

    async def closed() -> Samples | None:
        samples = await scrape(http)
        return (
            samples
            if value(samples, "orderpulse_websockets_open")
            == value(before, "orderpulse_websockets_open")
            else None
        )

    after = await eventually(closed)
    assert delta(before, after, "orderpulse_subscriptions_active") == 0
