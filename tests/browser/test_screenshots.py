"""Screenshots of the panels and GraphiQL on the demo data, for the README (docs/screenshots/).

The browser's clock is pinned (and the server's is the FakeClock), so the pictures change only
when the pages do. GraphiQL is checked to work: its page, scripts and styles come from OrderPulse
and a query runs through it (the `panels` fixture fails the test on any request off 127.0.0.1).
"""

from __future__ import annotations

from datetime import timedelta

from playwright.async_api import Page, expect

from app.demo import seed_demo
from app.services import Services
from tests.browser.conftest import SCREENSHOTS, Panels
from tests.support.clock import FakeClock


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/panel")
    await page.fill("input[name=token]", token)
    await page.click("button[name=sign-in]")
    await expect(page.locator('[data-connection="live"]')).to_be_visible()
    await expect(page.locator("tr[data-order-number]").first).to_be_visible()
    await expect(page.locator("[data-status-count]").first).to_be_visible()


async def test_screenshots_of_both_panels_and_graphiql(
    panels: Panels, services: Services, clock: FakeClock
) -> None:
    tokens = await seed_demo(services)
    browser_time = clock.now() + timedelta(minutes=12, seconds=34)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

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
    await reseller.screenshot(path=SCREENSHOTS / "reseller-panel.png", full_page=True)

    phone, _ = await panels.page(viewport={"width": 390, "height": 844}, is_mobile=True)
    await phone.clock.set_fixed_time(browser_time)
    await sign_in(phone, tokens["RESELLER"])
    await phone.screenshot(path=SCREENSHOTS / "reseller-panel-phone.png")

    customer, _ = await panels.page()
    await customer.clock.set_fixed_time(browser_time)
    await sign_in(customer, tokens["CUSTOMER"])
    await expect(customer.locator("[data-notification-settings]")).to_be_hidden()
    await customer.locator('tr[data-status="PF"]').first.click()
    await expect(customer.locator("[data-order-detail] [data-failure-remedy]")).to_be_visible()
    await customer.screenshot(path=SCREENSHOTS / "customer-panel.png", full_page=True)

    # GraphiQL, in the tab signed in to the panel: the token is in its headers already.
    await reseller.goto("/graphql")
    await reseller.locator(".graphiql-execute-button").click()
    response = reseller.locator(".graphiql-response")
    await expect(response).to_contain_text("Northwind Cloud Partners")
    await expect(response).to_contain_text("totalCount")
    await reseller.evaluate("document.activeElement?.blur()")  # no blinking caret in the picture
    await reseller.screenshot(path=SCREENSHOTS / "graphiql.png")
