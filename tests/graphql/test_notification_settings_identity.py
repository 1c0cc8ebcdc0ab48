"""`NotificationSettings` has a stable identity (issue 20): an opaque `id`, one per reseller, the
same in `notificationSettings` and in `updateNotificationSettings`' payload (so a normalizing client
cache, such as Apollo Client's, urql's graphcache or Relay's, updates the cached query from the
mutation), and `node(id:)` resolves it with `notificationSettings`' tenant rules: another tenant's
settings are null, exactly like an unknown id's.
"""

from __future__ import annotations

from sqlmodel import select

from app.graphql.ids import to_global_id
from app.notifications.models import NotificationSettings
from app.services import Services
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.world import World, make_world

FIELDS = "id __typename notifyReseller notifyCustomer reseller { name }"
READ = "query($r: ID) { notificationSettings(resellerId: $r) { %s } }" % FIELDS
UPDATE = (
    """mutation($input: UpdateNotificationSettingsInput!) {
  updateNotificationSettings(input: $input) { notificationSettings { %s } userErrors { code } } }
"""
    % FIELDS
)
NODE = "query($id: ID!) { node(id: $id) { id __typename ... on NotificationSettings { %s } } }" % (
    FIELDS
)


async def settings_rows(services: Services) -> list[tuple[int, bool, bool]]:
    async with services.db.read() as session:
        rows = (await session.exec(select(NotificationSettings))).all()
    return sorted((r.reseller_id, r.notify_reseller, r.notify_customer) for r in rows)


async def setup(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


async def test_the_query_and_the_mutation_payload_give_the_same_id(
    api: GraphQLClient, factory: Factory
) -> None:
    world = await setup(factory)
    reseller = api.as_(world.tokens["reseller a"])
    before = (await reseller.data(READ))["notificationSettings"]  # the defaults: no row yet
    assert before == {
        "id": before["id"],
        "__typename": "NotificationSettings",
        "notifyReseller": False,
        "notifyCustomer": False,
        "reseller": {"name": "Reseller A"},
    }
    assert before["id"] == str(to_global_id("NotificationSettings", world.reseller_a.id or 0))

    input = {"resellerId": gid("Reseller", world.reseller_a), "notifyReseller": True}
    payload = (await reseller.data(UPDATE, {"input": input}))["updateNotificationSettings"]
    after = {**before, "notifyReseller": True}
    assert payload == {"notificationSettings": after, "userErrors": []}
    assert (await reseller.data(READ))["notificationSettings"] == after
    # Support reads the same object under the same id.
    support = api.as_(world.tokens["support"])
    by_id = {"r": gid("Reseller", world.reseller_a)}
    assert (await support.data(READ, by_id))["notificationSettings"] == after

    # Each reseller's settings have their own id.
    other = (await support.data(READ, {"r": gid("Reseller", world.reseller_b)}))[
        "notificationSettings"
    ]
    assert other["id"] != after["id"]


async def test_node_resolves_the_settings_id_for_whoever_may_read_them(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    world = await setup(factory)
    owner = api.as_(world.tokens["reseller a"])
    settings = (await owner.data(READ))["notificationSettings"]
    assert (await owner.data(NODE, {"id": settings["id"]}))["node"] == settings
    support = api.as_(world.tokens["support"])
    assert (await support.data(NODE, {"id": settings["id"]}))["node"] == settings
    assert await settings_rows(services) == []  # reading wrote nothing


async def test_another_tenants_settings_id_is_null_like_an_unknown_one(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    world = await setup(factory)
    theirs = (await api.as_(world.tokens["reseller a"]).data(READ))["notificationSettings"]["id"]
    unknown = str(to_global_id("NotificationSettings", 999_999))
    for viewer in ("reseller b", "customer a1", "customer b1", "system"):
        client = api.as_(world.tokens[viewer])
        for settings_id in (theirs, unknown):
            assert await client.post(NODE, {"id": settings_id}) == {"data": {"node": None}}
    # The same rule as notificationSettings(resellerId:) for another reseller's.
    foreign = {"r": gid("Reseller", world.reseller_a)}
    other_reseller = api.as_(world.tokens["reseller b"])
    assert await other_reseller.post(READ, foreign) == {"data": {"notificationSettings": None}}
    support = api.as_(world.tokens["support"])
    assert await support.post(NODE, {"id": unknown}) == {"data": {"node": None}}
    assert await settings_rows(services) == []
