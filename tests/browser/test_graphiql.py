"""GraphiQL opened from a signed-in panel tab (issue 20): its introspection carries the tab's token
and succeeds (it used to answer `'__schema'`), so the documentation explorer shows the schema's
root types and their descriptions. Requests and console errors are checked by `panels`."""

from __future__ import annotations

from playwright.async_api import Request, expect

from tests.browser.conftest import Panels, World


async def test_graphiql_from_a_signed_in_panel_shows_the_documentation_explorer(
    panels: Panels, world: World
) -> None:
    page, _ = await panels.signed_in(world.tokens["reseller"])
    introspections: list[str | None] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and "__schema" in (request.post_data or ""):
            introspections.append(request.headers.get("authorization"))

    page.on("request", on_request)
    await page.goto("/graphql")  # the same tab: its headers hold the panel's token
    await page.get_by_role("button", name="Show Documentation Explorer").click()
    explorer = page.locator(".graphiql-doc-explorer")
    root_types = explorer.locator(".graphiql-doc-explorer-root-type").locator("xpath=..")
    await expect(root_types).to_have_text(
        ["query: Query", "mutation: Mutation", "subscription: Subscription"]
    )
    assert introspections and set(introspections) == {f"Bearer {world.tokens['reseller']}"}

    await explorer.get_by_role("link", name="Query", exact=True).click()
    await expect(explorer).to_contain_text("The entry points for reading")
    await expect(explorer).to_contain_text("orderStatuses")

    await explorer.locator(".graphiql-doc-explorer-back").click()  # back to the root
    await explorer.get_by_role("link", name="OrderStatus", exact=True).click()
    await expect(explorer).to_contain_text(
        "Manual Customer Account Verification Required: The customer account must be "
        "activated by the provider."
    )
