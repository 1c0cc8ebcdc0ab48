"""Incidents in the panels, in a real browser (SPEC 10): a support panel shows an incident appear
and count up live while failures are reported through the API; "Resubmit all" moves every order
out of PF in an open reseller panel; an order's detail shows its incident to whoever sees it."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Panels, World, report_failure, row
from tests.support.api import Factory, GraphQLClient


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"incident_threshold": 3, "escalation_poll_seconds": 3600}


async def test_support_sees_an_incident_grow_live_and_resubmits_it_for_every_panel(
    panels: Panels, world: World, http: GraphQLClient, factory: Factory
) -> None:
    # Two more orders in PR for the reseller's customers (with "pr", "pr2", "pr3": five).
    world.orders["pr4"] = await factory.order(world.customer, status="PR")
    world.orders["pr5"] = await factory.order(world.second_customer, status="PR")
    support, _ = await panels.signed_in(world.tokens["support"])
    reseller, _ = await panels.signed_in(world.tokens["reseller"])
    await expect(support.locator("[data-incidents]")).to_be_hidden()
    report = report_failure(http, world)

    await report("pr", "NO_IP_ADDRESSES")
    await report("pr2", "NO_IP_ADDRESSES")
    await expect(support.locator("[data-incident-id]")).to_have_count(0)
    await report("pr3", "NO_IP_ADDRESSES")  # the third within the window: an incident
    incident = support.locator("[data-incident-id]")
    await expect(incident).to_have_count(1)
    await expect(incident.locator("[data-incident-count]")).to_have_text("3")
    await expect(incident).to_contain_text("No IP addresses available for allocation")
    await report("pr4", "NO_IP_ADDRESSES")
    await expect(incident.locator("[data-incident-count]")).to_have_text("4")
    await report("pr5", "NO_IP_ADDRESSES")
    await expect(incident.locator("[data-incident-count]")).to_have_text("5")
    await expect(incident.locator("[data-incident-pending]")).to_have_text("5")
    keys = ("pr", "pr2", "pr3", "pr4", "pr5")
    for key in keys:
        await expect(row(reseller, world.orders[key])).to_have_attribute("data-status", "PF")

    # The reseller opens one of them: its detail names the incident, counted over its orders.
    await row(reseller, world.orders["pr2"]).click()
    note = reseller.locator("[data-order-incident]")
    await expect(note).to_contain_text("5 orders, 5 still failed")

    await incident.locator("button[data-action=RESUBMIT_INCIDENT]").click()
    await expect(incident.locator("[data-incident-message]")).to_have_text(
        "5 resubmitted, 0 skipped (no longer failed)."
    )
    for key in keys:
        await expect(row(reseller, world.orders[key])).to_have_attribute("data-status", "PR")
        await expect(row(support, world.orders[key])).to_have_attribute("data-status", "PR")
    await expect(incident.locator("[data-incident-pending]")).to_have_text("0")
    await expect(note).to_contain_text("5 orders, 0 still failed")
    # The reseller's own order in PF before the incident is untouched.
    await expect(row(reseller, world.orders["pf"])).to_have_attribute("data-status", "PF")
