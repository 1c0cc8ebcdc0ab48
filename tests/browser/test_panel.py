"""The control panels in a real browser (SPEC section 9): sign-in per role, tenancy, live updates
within a second, actions between panels, resuming after going offline, settings and contact e-mail.

Each page's requests and console are checked by the `panels` fixture (conftest): nothing may leave
127.0.0.1 and no error may be logged.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from playwright.async_api import Page, Route, WebSocketRoute, expect

from tests.browser.conftest import LIVE_TIMEOUT_MS, Panels, World, report_failure, row
from tests.support.api import GraphQLClient, gid

SETTINGS_QUERY = """
query($id: ID) { notificationSettings(resellerId: $id) { notifyReseller notifyCustomer
  orderNotificationTemplate { name } } }
"""


async def shown_numbers(page: Page, expected: set[str]) -> set[str]:
    """The order numbers in the table, once it has as many rows as `expected`."""
    rows = page.locator("tr[data-order-number]")
    await expect(rows).to_have_count(len(expected))
    numbers = await rows.evaluate_all("rows => rows.map(r => r.dataset.orderNumber)")
    return set(numbers)


async def test_each_role_signs_in_and_sees_only_its_own_orders(
    panels: Panels, world: World
) -> None:
    orders = world.orders
    ours = {orders[k].number for k in ("pr", "pr2", "pr3", "pf", "cp")}
    theirs = {orders["foreign_pr"].number, orders["foreign_pf"].number}
    acme = {orders[k].number for k in ("pr", "pr2", "pf")}

    support, _ = await panels.signed_in(world.tokens["support"])
    assert await shown_numbers(support, ours | theirs) == ours | theirs
    await expect(support.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "2")
    await expect(support.locator("[data-notification-settings]")).to_be_visible()
    await expect(support.locator("[data-viewer]")).to_have_text("Support")

    reseller, _ = await panels.signed_in(world.tokens["reseller"])
    assert await shown_numbers(reseller, ours) == ours
    await expect(reseller.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "1")
    await expect(reseller.locator("[data-viewer]")).to_have_text("Northwind Cloud")
    await expect(reseller.locator("[data-notification-settings]")).to_be_visible()
    customers = reseller.locator("[data-customer-id]")
    await expect(customers).to_have_count(2)
    await expect(reseller.locator("[data-customers]")).not_to_contain_text("Fabrikam")

    other, _ = await panels.signed_in(world.tokens["other_reseller"])
    assert await shown_numbers(other, theirs) == theirs

    customer, _ = await panels.signed_in(world.tokens["customer"])
    assert await shown_numbers(customer, acme) == acme
    await expect(customer.locator("[data-notification-settings]")).to_be_hidden()
    await expect(customer.locator("[data-customers]")).to_be_hidden()
    await expect(customer.locator("[data-account]")).to_contain_text("Northwind Cloud")
    await expect(customer.locator("[data-notification-list]")).not_to_contain_text("Fabrikam")

    # Another tenant's order, asked for through the number filter, is not there either.
    other_rows = other.locator(f'tr[data-order-number="{orders["pr"].number}"]')
    await expect(other_rows).to_have_count(0)


async def test_a_bad_token_is_refused_and_a_good_one_is_kept_for_the_tab(
    panels: Panels, world: World
) -> None:
    page, _ = await panels.page()
    await page.goto("/panel")
    await page.fill("input[name=token]", "op_not_a_token")
    await page.click("button[name=sign-in]")
    await expect(page.locator("[data-sign-in-message]")).to_contain_text("not accepted")
    await expect(page.locator("[data-app]")).to_be_hidden()

    await page.fill("input[name=token]", world.tokens["reseller"])
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    assert (
        await page.evaluate("sessionStorage.getItem('orderpulse.token')")
        == world.tokens["reseller"]
    )
    await page.reload()  # the same tab stays signed in
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await expect(row(page, world.orders["pf"])).to_be_visible()

    await page.click("button[name=sign-out]")
    await expect(page.locator("input[name=token]")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('orderpulse.token')") is None


async def test_a_reported_failure_shows_its_mark_and_badge_within_a_second(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    page, record = await panels.signed_in(world.tokens["reseller"])
    order = world.orders["pr"]
    await expect(row(page, order)).to_have_attribute("data-status", "PR")
    await expect(row(page, order).locator("[data-failed-mark]")).to_have_count(0)
    await expect(page.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "1")

    await report_failure(http, world)("pr")
    reported = time.monotonic()

    mark = row(page, order).locator("[data-failed-mark]")
    try:
        await expect(mark).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    except AssertionError:
        await expect(mark).to_be_visible()  # say whether it came late or never
        late = time.monotonic() - reported
        frame = next(
            (at - reported for at, text in record.frames_received if order.number in text),
            None,
        )
        pytest.fail(
            f'the "!" came {late:.2f} s after the report, not within a second (the change '
            f"reached the page's socket after {frame} s)"
        )
    await expect(row(page, order).locator("[data-status]")).to_have_attribute(
        "data-status", "PF", timeout=LIVE_TIMEOUT_MS
    )
    await expect(page.locator('[data-status-count="PF"]')).to_have_attribute(
        "data-count", "2", timeout=LIVE_TIMEOUT_MS
    )
    # Another reseller's panel never hears of it.
    other, _ = await panels.signed_in(world.tokens["other_reseller"])
    await expect(other.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "1")
    await expect(row(other, order)).to_have_count(0)


async def test_the_order_detail_shows_the_failure_history_and_notifications(
    panels: Panels, world: World
) -> None:
    page, _ = await panels.signed_in(world.tokens["reseller"])
    await row(page, world.orders["pf"]).click()
    detail = page.locator("[data-order-detail]")
    await expect(detail).to_have_attribute("data-order-number", world.orders["pf"].number)
    await expect(detail.locator("[data-failure-reason]")).to_have_text("SERVICE_CREATION_FAILED")
    await expect(detail.locator("[data-failure-message]")).to_have_text("Service creation failed")
    await expect(detail.locator("[data-failure-remedy]")).to_have_text(
        "Verify whether information on the order is correct"
    )
    await expect(detail.locator("[data-sla-deadline]")).to_be_visible()
    countdown = detail.locator("[data-sla-countdown]")
    first = await countdown.text_content()
    await expect(countdown).not_to_have_text(first or "", timeout=3000)  # it counts
    await expect(detail.locator("[data-history] li")).to_have_count(2)
    await expect(detail.locator("[data-history]")).to_contain_text("PR → PF")
    # Support is always told; the reseller's own settings are off by default (SPEC 3).
    await expect(detail.locator("[data-order-notifications]")).to_be_visible()
    # A reseller may resubmit or cancel a failed order, nothing else.
    actions = await detail.locator("button[data-action]").evaluate_all(
        "buttons => buttons.map(b => b.dataset.action)"
    )
    assert sorted(actions) == ["CANCEL", "RESUBMIT"]
    # Keyboard: a row opens with Enter.
    await row(page, world.orders["cp"]).focus()
    await page.keyboard.press("Enter")
    await expect(detail).to_have_attribute("data-order-number", world.orders["cp"].number)


class HeldSocket:
    """Relays a page's websocket to the server, and can hold the server's messages back."""

    def __init__(self) -> None:
        self.held: list[str | bytes] | None = None
        self.routes: list[WebSocketRoute] = []

    def route(self, socket: WebSocketRoute) -> None:
        server = socket.connect_to_server()
        self.routes.append(socket)

        def to_page(message: str | bytes) -> None:
            if self.held is not None:
                self.held.append(message)
            else:
                socket.send(message)

        server.on_message(to_page)
        socket.on_message(lambda message: server.send(message))

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for message in held:
            self.routes[-1].send(message)


async def test_an_action_in_the_support_panel_reaches_the_reseller_panel(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    order = world.orders["pf"]
    reseller, _ = await panels.signed_in(world.tokens["reseller"])
    support, _ = await panels.signed_in(world.tokens["support"])
    await row(support, order).click()
    detail = support.locator("[data-order-detail]")
    await detail.locator("button[data-action=HOLD]").click()
    await expect(detail.locator("[data-action-message]")).to_contain_text("now HL")
    await expect(row(reseller, order)).to_have_attribute("data-status", "HL")
    await expect(row(reseller, order).locator("[data-failed-mark]")).to_have_count(0)
    await expect(reseller.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "0")
    await expect(reseller.locator('[data-status-count="HL"]')).to_have_attribute("data-count", "1")
    # The reseller's open detail follows, too.
    await row(reseller, order).click()
    await expect(reseller.locator("[data-order-detail] [data-history] li")).to_have_count(3)


async def test_an_action_on_a_stale_order_is_refused_with_a_clear_conflict_message(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    order = world.orders["pf"]
    relay = HeldSocket()
    page, _ = await panels.signed_in(world.tokens["support"], websocket_route=relay.route)
    await row(page, order).click()
    detail = page.locator("[data-order-detail]")
    await expect(detail.locator("button[data-action=HOLD]")).to_be_visible()

    relay.hold()  # the panel does not hear of the next change yet
    act = """mutation($id: ID!) { performOrderAction(input: {orderId: $id, action: RESUBMIT}) {
      order { status } userErrors { code } } }"""
    done = await http.as_(world.tokens["support"]).data(act, {"id": world.id("pf")})
    assert done["performOrderAction"] == {"order": {"status": "PR"}, "userErrors": []}
    await detail.locator("button[data-action=HOLD]").click()
    message = detail.locator("[data-action-message]")
    await expect(message).to_contain_text("changed while you were looking at it")
    await expect(message).to_have_attribute("role", "alert")
    # Nothing was done: the order is in PR, as the other operator left it.
    check = await http.as_(world.tokens["support"]).data(
        "query($id: ID!) { order(id: $id) { status } }", {"id": world.id("pf")}
    )
    assert check["order"]["status"] == "PR"
    await expect(detail.locator("button[data-action=MARK_FAILED]")).to_be_visible()
    relay.release()
    await expect(row(page, order)).to_have_attribute("data-status", "PR")


@pytest.fixture
def offline_errors(request: pytest.FixtureRequest) -> None:
    """While offline the browser itself logs its failed connection attempts as errors."""
    request.node.allowed_console_errors = (
        r"ERR_INTERNET_DISCONNECTED",
        r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/graphql' failed",
    )


async def test_offline_then_online_misses_nothing(
    panels: Panels, world: World, http: GraphQLClient, offline_errors: None
) -> None:
    page, record = await panels.signed_in(world.tokens["reseller"])
    report = report_failure(http, world)
    await report("pr")  # one change while live, so the panel holds a cursor
    await expect(row(page, world.orders["pr"])).to_have_attribute("data-status", "PF")

    await page.context.set_offline(True)
    await expect(page.locator('[data-connection="offline"]')).to_be_visible()
    await report("pr2")
    await report("pr3")
    await http.as_(world.tokens["support"]).data(
        """mutation($id: ID!) { performOrderAction(input: {orderId: $id, action: HOLD}) {
        userErrors { code } } }""",
        {"id": world.id("pf")},
    )
    await asyncio.sleep(0.3)  # the changes are committed; the offline page cannot have them yet
    await expect(row(page, world.orders["pr2"])).to_have_attribute("data-status", "PR")
    sent_before = len(record.frames_sent)

    await page.context.set_offline(False)
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await expect(row(page, world.orders["pr2"])).to_have_attribute("data-status", "PF")
    await expect(row(page, world.orders["pr3"])).to_have_attribute("data-status", "PF")
    await expect(row(page, world.orders["pf"])).to_have_attribute("data-status", "HL")
    await expect(page.locator('[data-status-count="PF"]')).to_have_attribute("data-count", "3")
    # It resumed from its last cursor (the server replayed), not from a fresh start.
    resumed = [
        json.loads(frame)
        for frame in record.frames_sent[sent_before:]
        if '"subscribe"' in frame and "orderStatusChanged" in frame
    ]
    assert resumed and all(m["payload"]["variables"]["after"] for m in resumed), resumed


async def test_a_dropped_socket_reconnects_and_misses_nothing(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    relay = HeldSocket()
    page, _ = await panels.signed_in(world.tokens["reseller"], websocket_route=relay.route)
    await expect(row(page, world.orders["pr"])).to_be_visible()

    relay.hold()
    await report_failure(http, world)("pr")  # sent by the server, lost with the socket
    relay.held = None
    await relay.routes[-1].close(code=1012, reason="Service restart")
    await expect(row(page, world.orders["pr"])).to_have_attribute("data-status", "PF")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    assert len(relay.routes) == 2


async def test_notification_settings_and_contact_email_are_edited_in_the_panel(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    page, _ = await panels.signed_in(world.tokens["reseller"])
    form = page.locator("[data-notification-settings]")
    await expect(form.locator("select[name=template]")).to_have_value(
        await form.locator("select[name=template] option").first.get_attribute("value") or ""
    )
    await form.locator("input[name=notifyReseller]").check()
    await form.locator("input[name=notifyCustomer]").check()
    await form.locator("button[name=save-settings]").click()
    await expect(page.locator("[data-settings-message]")).to_have_text("Settings saved.")
    settings = await http.as_(world.tokens["reseller"]).data(SETTINGS_QUERY, {"id": None})
    assert settings["notificationSettings"] == {
        "notifyReseller": True,
        "notifyCustomer": True,
        "orderNotificationTemplate": {"name": "Order Provisioning Failed"},
    }

    customer = page.locator(f'[data-customer-id="{gid("Customer", world.customer)}"]')
    await customer.locator("input[name=contactEmail]").fill("alerts@acme.example")
    await customer.locator("button[name=save-contact]").click()
    await expect(customer).to_contain_text("Saved.")

    # The next failure is told to the reseller and the customer's new address, live.
    await report_failure(http, world)("pr")
    notes = page.locator("[data-notification-list] tbody")
    await expect(notes).to_contain_text("alerts@acme.example")
    await expect(notes).to_contain_text("ops@northwind.example")


async def test_graphiql_is_served_offline_and_runs_a_live_subscription(
    panels: Panels, world: World, http: GraphQLClient
) -> None:
    page, record = await panels.page()
    await page.goto("/panel")  # signed in to the panel, this tab's GraphiQL has the token
    await page.fill("input[name=token]", world.tokens["reseller"])
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await page.goto("/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await expect(editor).to_be_visible()
    await page.evaluate(
        "() => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
        ".setValue('subscription { orderStatusChanged { from to order { number } } }')"
    )
    await page.locator(".graphiql-execute-button").click()
    await report_failure(http, world)("pr")
    response = page.locator(".graphiql-response")
    await expect(response).to_contain_text(world.orders["pr"].number)
    await expect(response).to_contain_text('"to": "PF"')
    assert any(u.endswith("/panel/static/vendor/graphiql.js") for u in record.requests)


STORAGE = """() => {
  const all = (store) => Object.fromEntries(Object.keys(store).map((k) => [k, store.getItem(k)]));
  return {local: all(localStorage), session: all(sessionStorage)};
}"""


async def test_graphiql_keeps_no_token_in_browser_storage(panels: Panels, world: World) -> None:
    """GraphiQL's history, favorites and tabs live in localStorage, which outlives the tab and
    the sign-out; the token lives only in the tab's sessionStorage (SPEC 8). History written by
    earlier versions, headers and all, is cleaned when GraphiQL loads."""
    token = world.tokens["reseller"]
    page, _ = await panels.page()
    await page.goto("/panel")
    old_history = {
        "queries": [
            {
                "query": "{ viewer { role } }",
                "headers": f'{{"Authorization": "Bearer {token}"}}',
                "operationName": None,
            }
        ]
    }
    await page.evaluate(
        "([key, value]) => { localStorage.setItem(key, value); }",
        ["graphiql:queries", json.dumps(old_history)],
    )
    await page.evaluate("() => localStorage.setItem('graphiql:headers', 'Bearer ' + 'x')")
    await page.fill("input[name=token]", token)
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await page.goto("/graphql")  # this tab's GraphiQL has the token in its headers editor
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await expect(editor).to_be_visible()
    await page.evaluate(
        "() => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
        ".setValue('query Mine { viewer { role reseller { name } } }')"
    )
    await page.locator(".graphiql-execute-button").click()
    await expect(page.locator(".graphiql-response")).to_contain_text("Northwind Cloud")
    await page.wait_for_function(
        "() => (localStorage.getItem('graphiql:queries') || '').includes('query Mine')"
    )
    await page.wait_for_function("() => localStorage.getItem('graphiql:tabState') !== null")

    stored = await page.evaluate(STORAGE)
    history = json.loads(stored["local"]["graphiql:queries"])
    assert [(q["query"], "headers" in q) for q in history["queries"]] == [
        ("{ viewer { role } }", False),  # the old entry, cleaned
        ("query Mine { viewer { role reseller { name } } }", False),
    ]
    assert "graphiql:headers" not in stored["local"]
    for key, value in stored["local"].items():
        assert token not in value, key
        assert token[3:20] not in value, key
    assert [key for key, value in stored["session"].items() if token in value] == [
        "orderpulse.token"
    ]

    await page.goto("/panel")
    await page.click("button[name=sign-out]")
    await expect(page.locator("input[name=token]")).to_be_visible()
    stored = await page.evaluate(STORAGE)
    for store in ("local", "session"):
        for key, value in stored[store].items():
            assert token not in value, (store, key)


async def test_answers_that_arrive_after_signing_out_are_dropped(
    panels: Panels, world: World
) -> None:
    """The panel's loads started while signed in may answer after the user signed out: the page
    drops them (it used to read the signed-out viewer and throw)."""
    page, _ = await panels.page()
    held: list[Route] = []

    async def hold_customers(route: Route) -> None:
        if "PanelCustomers" in (route.request.post_data or ""):
            held.append(route)  # answered only after signing out
        else:
            await route.continue_()

    await page.route("**/graphql", hold_customers)
    await page.goto("/panel")
    await page.fill("input[name=token]", world.tokens["reseller"])
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    for _ in range(200):  # the customers' load is on its way (at most 10 s)
        if held:
            break
        await asyncio.sleep(0.05)
    assert held
    await page.click("button[name=sign-out]")
    await expect(page.locator("input[name=token]")).to_be_visible()
    for route in held:
        await route.continue_()
    await page.evaluate("() => new Promise((done) => setTimeout(done, 300))")  # answers handled
    await expect(page.locator("[data-customer-list] > *")).to_have_count(0)
