"""Screenshots of the panels and GraphiQL on the demo data, for the README (docs/screenshots/,
rewritten with `ORDERPULSE_UPDATE_SCREENSHOTS=1 ./scripts/test tests/browser/test_screenshots.py`).

The browser's clock is pinned (and the server's is the FakeClock), so the pictures change only
when the pages do. GraphiQL is checked to work: its page, scripts and styles come from OrderPulse
and a query runs through it (the `panels` fixture fails the test on any request off 127.0.0.1).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page, expect

from app.demo import seed_demo
from app.services import Services
from tests.browser.conftest import DOCS_SCREENSHOTS, Panels
from tests.support.clock import FakeClock


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/panel")
    await page.fill("input[name=token]", token)
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await expect(page.locator("tr[data-order-number]").first).to_be_visible()
    await expect(page.locator("[data-status-count]").first).to_be_visible()


async def test_screenshots_of_both_panels_and_graphiql(
    panels: Panels, services: Services, clock: FakeClock, tmp_path: Path
) -> None:
    update = os.environ.get("ORDERPULSE_UPDATE_SCREENSHOTS") == "1"
    folder = DOCS_SCREENSHOTS if update else tmp_path
    tokens = await seed_demo(services)
    browser_time = clock.now() + timedelta(minutes=12, seconds=34)
    folder.mkdir(parents=True, exist_ok=True)

    reseller, _ = await panels.page()
    await reseller.clock.set_fixed_time(browser_time)
    await sign_in(reseller, tokens["RESELLER"])
    await reseller.locator('tr[data-status="PF"]').first.click()
    detail = reseller.locator("[data-order-detail]")
    await expect(detail.locator("[data-sla-countdown]")).to_have_text("1h 47m 26s left")
    await expect(
        reseller.locator("[data-notification-settings] select[name=template]")
    ).to_have_value(
        await reseller.locator("select[name=template] option").first.get_attribute("value") or ""
    )
    await reseller.screenshot(path=folder / "reseller-panel.png", full_page=True)

    phone, _ = await panels.page(viewport={"width": 390, "height": 844}, is_mobile=True)
    await phone.clock.set_fixed_time(browser_time)
    await sign_in(phone, tokens["RESELLER"])
    await phone.screenshot(path=folder / "reseller-panel-phone.png")

    customer, _ = await panels.page()
    await customer.clock.set_fixed_time(browser_time)
    await sign_in(customer, tokens["CUSTOMER"])
    await expect(customer.locator("[data-notification-settings]")).to_be_hidden()
    await customer.locator('tr[data-status="PF"]').first.click()
    await expect(customer.locator("[data-order-detail] [data-failure-remedy]")).to_be_visible()
    await customer.screenshot(path=folder / "customer-panel.png", full_page=True)

    # GraphiQL, in the tab signed in to the panel: the token is in its headers already.
    await reseller.goto("/graphql")
    await reseller.locator(".graphiql-execute-button").click()
    response = reseller.locator(".graphiql-response")
    await expect(response).to_contain_text("Northwind Cloud Partners")
    await expect(response).to_contain_text("totalCount")
    await reseller.evaluate("document.activeElement?.blur()")  # no blinking caret in the picture
    await reseller.screenshot(path=folder / "graphiql.png")
    for name in ("reseller-panel", "reseller-panel-phone", "customer-panel", "graphiql"):
        assert (folder / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
