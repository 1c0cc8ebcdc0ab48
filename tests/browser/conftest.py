"""Real-browser fixtures: Debian's headless Chromium driven by Playwright against a real uvicorn.

Every page a test opens records each request it makes (HTTP through a route that refuses any host
but the test server's 127.0.0.1 address, websockets through the page's `websocket` event) and each
console error or uncaught exception; the fixture fails the test if any request left 127.0.0.1 or
any error was logged (a test that expects a browser's own offline errors says which).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    WebSocket,
    WebSocketRoute,
    async_playwright,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from app.orders.models import Customer, Reseller, SalesOrder
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.browser import CHROMIUM, launch_chromium
from tests.support.server import LiveServer

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where the README's pictures live: the screenshot test writes there only when
ORDERPULSE_UPDATE_SCREENSHOTS=1 (the pictures carry a random token, so a run would otherwise
change tracked files), else to the test's own temporary directory."""
LIVE_TIMEOUT_MS = 1000
"""SPEC 9: a change shows in every open panel that may see it within a second."""
WAIT_MS = 10_000
"""Bound for everything else a test waits for."""
expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: ./scripts/test installs Debian's chromium (apt-get install "
            "chromium); or set ORDERPULSE_CHROMIUM",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        instance = await launch_chromium(playwright)
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class PageRecord:
    """What one page did: its requests, and the errors it logged."""

    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frames_sent: list[str] = field(default_factory=list)
    frames_received: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic() when Playwright reported it, the frame) for each websocket frame."""


@dataclass
class Panels:
    """Opens pages on the test server, each in a context of its own (its own session storage)."""

    browser: Browser
    server: LiveServer
    contexts: list[tuple[BrowserContext, PageRecord]] = field(default_factory=list)

    async def page(self, **context_options: Any) -> tuple[Page, PageRecord]:
        options: dict[str, Any] = {
            "viewport": {"width": 1360, "height": 900},
            "locale": "en-US",
            "timezone_id": "UTC",
            "base_url": self.server.origin,
            **context_options,
        }
        context = await self.browser.new_context(**options)
        context.set_default_timeout(WAIT_MS)
        record = PageRecord()
        self.contexts.append((context, record))
        own_host = urlsplit(self.server.origin).netloc

        async def only_loopback(route: Route) -> None:
            url = route.request.url
            record.requests.append(url)
            if urlsplit(url).netloc == own_host:
                await route.continue_()
            else:
                record.outside.append(url)
                await route.abort()

        await context.route("**/*", only_loopback)
        page = await context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                record.errors.append(message.text)

        def on_websocket(socket: WebSocket) -> None:
            record.requests.append(socket.url)
            if urlsplit(socket.url).netloc != own_host:
                record.outside.append(socket.url)
            socket.on("framesent", lambda payload: record.frames_sent.append(str(payload)))
            socket.on(
                "framereceived",
                lambda payload: record.frames_received.append((time.monotonic(), str(payload))),
            )

        page.on("console", on_console)
        page.on("pageerror", lambda error: record.errors.append(f"uncaught: {error}"))
        page.on("websocket", on_websocket)
        return page, record

    async def signed_in(
        self, token: str, *, websocket_route: Callable[[WebSocketRoute], Any] | None = None
    ) -> tuple[Page, PageRecord]:
        """A panel page signed in with `token`, live and showing its orders; its websocket goes
        through `websocket_route` when one is given."""
        page, record = await self.page()
        if websocket_route is not None:
            await page.route_web_socket("**/graphql", websocket_route)
        await page.goto("/panel")
        await page.fill("input[name=token]", token)
        await page.click("button[name=sign-in]")
        await page.wait_for_selector('[data-connection="live"]')
        await page.wait_for_selector("[data-status-count]")
        return page, record


@pytest.fixture
async def panels(
    browser: Browser, live_server: LiveServer, request: pytest.FixtureRequest
) -> AsyncIterator[Panels]:
    opened = Panels(browser, live_server)
    yield opened
    allowed = getattr(request.node, "allowed_console_errors", ())
    problems: list[str] = []
    for context, record in opened.contexts:
        problems += [f"request left 127.0.0.1: {url}" for url in record.outside]
        problems += [
            f"console error: {text}"
            for text in record.errors
            if not any(re.search(pattern, text) for pattern in allowed)
        ]
        try:
            await context.close()
        except PlaywrightError:
            pass
    assert not problems, problems


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[GraphQLClient]:
    """The public API over real HTTP, as another client (an integration, a script) uses it."""
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield GraphQLClient(client)


@dataclass
class World:
    """Two resellers with a customer each, orders in several statuses, and a token per viewer."""

    reseller: Reseller
    other_reseller: Reseller
    customer: Customer
    second_customer: Customer
    other_customer: Customer
    orders: dict[str, SalesOrder]
    tokens: dict[str, str]

    def id(self, key: str) -> str:
        return gid("Order", self.orders[key])


@pytest.fixture
async def world(factory: Factory) -> World:
    reseller = await factory.reseller("Northwind Cloud", "ops@northwind.example")
    other = await factory.reseller("Contoso Partners", "ops@contoso.example")
    customer = await factory.customer(reseller, name="Acme Corp", contact_email="it@acme.example")
    second = await factory.customer(reseller, name="Globex", contact_email="it@globex.example")
    foreign = await factory.customer(other, name="Fabrikam", contact_email="it@fabrikam.example")
    orders = {
        "pr": await factory.order(customer, status="PR"),
        "pr2": await factory.order(customer, status="PR"),
        "pr3": await factory.order(second, status="PR"),
        "pf": await factory.order(customer, status="PF"),
        "cp": await factory.order(second, status="CP"),
        "foreign_pr": await factory.order(foreign, status="PR"),
        "foreign_pf": await factory.order(foreign, status="PF"),
    }
    tokens = {
        "support": await factory.token("SUPPORT"),
        "reseller": await factory.token("RESELLER", reseller=reseller),
        "other_reseller": await factory.token("RESELLER", reseller=other),
        "customer": await factory.token("CUSTOMER", customer=customer),
        "system": await factory.token("SYSTEM"),
    }
    return World(reseller, other, customer, second, foreign, orders, tokens)


REPORT_FAILURE = """
mutation($id: ID!, $reason: FailureReason!, $details: String) {
  reportProvisioningResult(input: {orderId: $id, outcome: FAILED, reason: $reason, details: $details}) {
    order { number status } userErrors { message code }
  }
}
"""


def report_failure(
    http: GraphQLClient, world: World
) -> Callable[[str, str], Awaitable[dict[str, Any]]]:
    async def report(key: str, reason: str = "SERVICE_CREATION_FAILED") -> dict[str, Any]:
        data = await http.as_(world.tokens["system"]).data(
            REPORT_FAILURE, {"id": world.id(key), "reason": reason, "details": "disk full"}
        )
        payload: dict[str, Any] = data["reportProvisioningResult"]
        assert payload["userErrors"] == [], payload
        return payload

    return report


def row(page: Page, order: SalesOrder) -> Any:
    return page.locator(f'tr[data-order-number="{order.number}"]')
