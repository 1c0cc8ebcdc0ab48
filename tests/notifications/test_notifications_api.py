"""The notification API: templates, settings, listing, and who may see and change what."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from app.graphql.ids import to_global_id
from app.notifications.models import NotificationSettings, NotificationTemplate
from app.orders.models import Reseller
from app.services import Services
from tests.notifications.helpers import NOTIFICATION_FIELDS, fail_order, outbox_idle
from tests.support.api import Factory, GraphQLClient, gid, refused
from tests.support.smtp import SmtpServer

TEMPLATES = "{ notificationTemplates { id name subject body } }"
CREATE_TEMPLATE = """mutation($input: CreateNotificationTemplateInput!) {
    createNotificationTemplate(input: $input) {
    notificationTemplate { id name subject body } userErrors { field message code } } }"""
UPDATE_TEMPLATE = """mutation($input: UpdateNotificationTemplateInput!) {
    updateNotificationTemplate(input: $input) {
    notificationTemplate { id name subject body } userErrors { field message code } } }"""
SETTINGS_FIELDS = """reseller { id name } notifyReseller notifyCustomer supportAlwaysNotified
    orderNotificationTemplate { id name }"""
READ_SETTINGS = "query($r: ID) { notificationSettings(resellerId: $r) { %s } }" % SETTINGS_FIELDS
UPDATE_SETTINGS = (
    """mutation($input: UpdateNotificationSettingsInput!) {
    updateNotificationSettings(input: $input) {
    notificationSettings { %s } userErrors { field message code } } }"""
    % SETTINGS_FIELDS
)

NOTIFICATIONS = (
    """query($filter: NotificationFilter) { notifications(filter: $filter, first: 100) {
    totalCount edges { node { %s } } } }"""
    % NOTIFICATION_FIELDS
)
ORDER_NOTIFICATIONS = """query($id: ID!) { order(id: $id) {
    notifications { recipientRole email } } }"""
NODE = "query($id: ID!) { node(id: $id) { ... on Notification { id email } } }"


async def update_settings(client: GraphQLClient, reseller: Reseller, **input: Any) -> Any:
    """`updateNotificationSettings` of `reseller` with `input`: its payload."""
    input = {"resellerId": gid("Reseller", reseller), **input}
    data = await client.data(UPDATE_SETTINGS, {"input": input})
    return data["updateNotificationSettings"]


GOOD_TEMPLATE = {
    "name": "Terse",
    "subject": "{{ order.number }}: {{ message }}",
    "body": "{{ customer.name }} / {{ reseller.name }}: {{ remedy }}\n",
}


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {"smtp_url": smtp_server.url}


@pytest.fixture
async def support(api: GraphQLClient, factory: Factory) -> GraphQLClient:
    return api.as_(await factory.token("SUPPORT"))


# --- templates ---------------------------------------------------------------------------------


async def test_the_builtin_templates_are_listed(support: GraphQLClient) -> None:
    templates = (await support.data(TEMPLATES))["notificationTemplates"]
    assert [t["name"] for t in templates] == [
        "Order Provisioning Failed",
        "Failed Order Unresolved",
        # SPEC 10: incident mail
        "Provisioning Incident Opened",
        "Provisioning Incident Digest",
        "Failed Orders Unresolved",
    ]
    assert "{{ order.number }}" in templates[0]["subject"]
    assert "{{ order.number }}" in templates[1]["subject"]


async def test_support_creates_and_edits_a_template(support: GraphQLClient) -> None:
    created = (await support.data(CREATE_TEMPLATE, {"input": GOOD_TEMPLATE}))[
        "createNotificationTemplate"
    ]
    assert created["userErrors"] == []
    template = created["notificationTemplate"]
    assert {k: template[k] for k in ("name", "subject", "body")} == GOOD_TEMPLATE
    updated = (
        await support.data(
            UPDATE_TEMPLATE, {"input": {"id": template["id"], "subject": "{{ order.number }}"}}
        )
    )["updateNotificationTemplate"]
    assert updated["userErrors"] == []
    assert updated["notificationTemplate"] == {**template, "subject": "{{ order.number }}"}


@pytest.mark.parametrize(
    ("field", "source", "message_part"),
    [
        ("subject", "Order {{ order.number ", "syntax error"),
        ("body", "{% if reason %}unclosed", "syntax error"),
        ("body", "{{ order.nmber }}", "unknown variable 'order.nmber'"),
        ("subject", "{{ customer_email }}", "unknown variable 'customer_email'"),
        ("body", "{{ 1 // 0 }}", "cannot be rendered"),
        ("body", "{{ reason.__class__.__mro__ }}", ""),
        ("body", "{{ 'x' * 1000000 }}", "not allowed"),
    ],
)
async def test_a_template_that_does_not_render_is_refused_and_nothing_is_saved(
    support: GraphQLClient, services: Services, field: str, source: str, message_part: str
) -> None:
    before = (await support.data(TEMPLATES))["notificationTemplates"]
    created = (await support.data(CREATE_TEMPLATE, {"input": {**GOOD_TEMPLATE, field: source}}))[
        "createNotificationTemplate"
    ]
    assert created["notificationTemplate"] is None
    (error,) = created["userErrors"]
    assert (error["code"], error["field"]) == ("BAD_USER_INPUT", ["input", field])
    assert message_part in error["message"]
    assert (await support.data(TEMPLATES))["notificationTemplates"] == before

    # Editing an existing template into the same shape is refused too, leaving it as it was.
    builtin = before[0]
    updated = (
        await support.data(UPDATE_TEMPLATE, {"input": {"id": builtin["id"], field: source}})
    )["updateNotificationTemplate"]
    assert updated["notificationTemplate"] is None
    assert [(e["code"], e["field"]) for e in updated["userErrors"]] == [
        ("BAD_USER_INPUT", ["input", field])
    ]
    async with services.db.read() as session:
        rows = (await session.exec(select(NotificationTemplate))).all()
    assert sorted((r.name, r.subject, r.body) for r in rows) == sorted(
        (t["name"], t["subject"], t["body"]) for t in before
    )


async def test_only_support_manages_templates(
    api: GraphQLClient, factory: Factory, support: GraphQLClient
) -> None:
    reseller = await factory.reseller()
    client = api.as_(await factory.token("RESELLER", reseller=reseller))
    refusal = await client.post(CREATE_TEMPLATE, {"input": GOOD_TEMPLATE})
    assert refusal["data"] is None
    assert refusal["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    names = [t["name"] for t in (await support.data(TEMPLATES))["notificationTemplates"]]
    assert names == [  # the built-ins only: nothing was created
        "Order Provisioning Failed",
        "Failed Order Unresolved",
        "Provisioning Incident Opened",
        "Provisioning Incident Digest",
        "Failed Orders Unresolved",
    ]
    customer = await factory.customer(reseller)
    as_customer = api.as_(await factory.token("CUSTOMER", customer=customer))
    assert (await as_customer.post(TEMPLATES))["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_duplicate_name_is_a_conflict(support: GraphQLClient) -> None:
    await support.data(CREATE_TEMPLATE, {"input": GOOD_TEMPLATE})
    again = (await support.data(CREATE_TEMPLATE, {"input": GOOD_TEMPLATE}))[
        "createNotificationTemplate"
    ]
    assert again["notificationTemplate"] is None
    assert [(e["code"], e["field"]) for e in again["userErrors"]] == [
        ("CONFLICT", ["input", "name"])
    ]


# --- settings ------------------------------------------------------------------------------------


async def test_a_reseller_reads_and_changes_its_own_settings(
    api: GraphQLClient, factory: Factory, support: GraphQLClient
) -> None:
    reseller = await factory.reseller(name="Northwind")
    client = api.as_(await factory.token("RESELLER", reseller=reseller))
    default = (await client.data(READ_SETTINGS))["notificationSettings"]
    builtin = (await support.data(TEMPLATES))["notificationTemplates"][0]
    assert default == {
        "reseller": {"id": gid("Reseller", reseller), "name": "Northwind"},
        "notifyReseller": False,  # both off until the reseller turns them on (SPEC 3)
        "notifyCustomer": False,
        "supportAlwaysNotified": True,
        "orderNotificationTemplate": {"id": builtin["id"], "name": "Order Provisioning Failed"},
    }
    template = (await support.data(CREATE_TEMPLATE, {"input": GOOD_TEMPLATE}))[
        "createNotificationTemplate"
    ]["notificationTemplate"]
    changed = await update_settings(
        client, reseller, notifyCustomer=True, orderNotificationTemplateId=template["id"]
    )
    expected = {
        **default,
        "notifyCustomer": True,
        "orderNotificationTemplate": {"id": template["id"], "name": "Terse"},
    }
    assert changed == {"notificationSettings": expected, "userErrors": []}
    assert (await client.data(READ_SETTINGS))["notificationSettings"] == expected
    assert (await support.data(READ_SETTINGS, {"r": gid("Reseller", reseller)}))[
        "notificationSettings"
    ] == expected

    # An explicit null goes back to the built-in template; omitted fields stay as they are.
    reset = (await update_settings(client, reseller, orderNotificationTemplateId=None))[
        "notificationSettings"
    ]
    assert reset == {**expected, "orderNotificationTemplate": default["orderNotificationTemplate"]}

    unknown = await update_settings(
        client,
        reseller,
        notifyReseller=True,  # would be visible if anything were written
        orderNotificationTemplateId=str(to_global_id("NotificationTemplate", 999)),
    )
    assert unknown["notificationSettings"] is None
    assert [(e["code"], e["field"]) for e in unknown["userErrors"]] == [
        ("NOT_FOUND", ["input", "orderNotificationTemplateId"])
    ]
    assert (await client.data(READ_SETTINGS))["notificationSettings"] == reset


async def test_a_reseller_cannot_read_or_change_anothers_settings(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    mine, theirs = await factory.reseller(), await factory.reseller()
    client = api.as_(await factory.token("RESELLER", reseller=mine))
    assert (await client.data(READ_SETTINGS, {"r": gid("Reseller", theirs)})) == {
        "notificationSettings": None
    }
    assert (await client.data(READ_SETTINGS, {"r": "not-an-id"})) == {"notificationSettings": None}
    for reseller_id in (gid("Reseller", theirs), str(to_global_id("Reseller", 999)), "garbage"):
        refusal = (
            await client.data(
                UPDATE_SETTINGS, {"input": {"resellerId": reseller_id, "notifyCustomer": True}}
            )
        )["updateNotificationSettings"]
        assert refusal == refused(
            "notificationSettings", ["input", "resellerId"], "reseller not found", "NOT_FOUND"
        )
    async with services.db.read() as session:
        assert (await session.exec(select(NotificationSettings))).all() == []


async def test_customers_and_the_platform_may_not_touch_settings(
    api: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer()
    for client in (
        api.as_(await factory.token("CUSTOMER", customer=customer)),
        api.as_(await factory.token("SYSTEM")),
    ):
        body = await client.post(READ_SETTINGS, {"r": gid("Reseller", await factory.reseller())})
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- notifications and tenancy ------------------------------------------------------------------


async def test_each_viewer_sees_only_the_notifications_addressed_to_it(
    api: GraphQLClient, factory: Factory, services: Services, support: GraphQLClient
) -> None:
    system = api.as_(await factory.token("SYSTEM"))
    tenants = []
    for name in ("a", "b"):
        reseller = await factory.reseller(email=f"ops@{name}.example")
        customer = await factory.customer(reseller, contact_email=f"it@{name}-customer.example")
        reseller_client = api.as_(await factory.token("RESELLER", reseller=reseller))
        enabled = await update_settings(
            reseller_client, reseller, notifyReseller=True, notifyCustomer=True
        )
        assert enabled["userErrors"] == []
        order = await fail_order(support, system, gid("Customer", customer))
        customer_client = api.as_(await factory.token("CUSTOMER", customer=customer))
        tenants.append((name, order, reseller_client, customer_client))
    await outbox_idle(services)

    everything = (await support.data(NOTIFICATIONS))["notifications"]
    assert everything["totalCount"] == 6
    assert sorted(e["node"]["email"] for e in everything["edges"]) == sorted(
        ["support@distributor.example"] * 2
        + ["ops@a.example", "ops@b.example", "it@a-customer.example", "it@b-customer.example"]
    )
    support_ids = [
        e["node"]["id"] for e in everything["edges"] if e["node"]["recipientRole"] == "SUPPORT"
    ]
    for name, order, reseller_client, customer_client in tenants:
        other_order = next(t[1] for t in tenants if t[0] != name)

        seen = (await reseller_client.data(NOTIFICATIONS))["notifications"]
        assert seen["totalCount"] == 2
        assert sorted((e["node"]["recipientRole"], e["node"]["email"]) for e in seen["edges"]) == [
            ("CUSTOMER", f"it@{name}-customer.example"),
            ("RESELLER", f"ops@{name}.example"),
        ]
        assert {e["node"]["order"]["id"] for e in seen["edges"]} == {order["id"]}
        foreign = await reseller_client.data(
            NOTIFICATIONS, {"filter": {"orderId": other_order["id"]}}
        )
        assert foreign["notifications"] == {"totalCount": 0, "edges": []}
        on_order = await reseller_client.data(ORDER_NOTIFICATIONS, {"id": order["id"]})
        assert sorted(n["recipientRole"] for n in on_order["order"]["notifications"]) == [
            "CUSTOMER",
            "RESELLER",
        ]
        for support_id in support_ids:
            assert await reseller_client.data(NODE, {"id": support_id}) == {"node": None}

        mine = (await customer_client.data(NOTIFICATIONS))["notifications"]
        assert mine["totalCount"] == 1
        (edge,) = mine["edges"]
        assert (edge["node"]["recipientRole"], edge["node"]["email"]) == (
            "CUSTOMER",
            f"it@{name}-customer.example",
        )
        assert (await customer_client.data(ORDER_NOTIFICATIONS, {"id": order["id"]})) == {
            "order": {
                "notifications": [
                    {"recipientRole": "CUSTOMER", "email": f"it@{name}-customer.example"}
                ]
            }
        }
        assert (await customer_client.data(ORDER_NOTIFICATIONS, {"id": other_order["id"]})) == {
            "order": None
        }
        reseller_only = await customer_client.data(
            NOTIFICATIONS, {"filter": {"recipientRole": "RESELLER"}}
        )
        assert reseller_only["notifications"]["totalCount"] == 0

    on_order = await support.data(ORDER_NOTIFICATIONS, {"id": tenants[0][1]["id"]})
    assert sorted(n["recipientRole"] for n in on_order["order"]["notifications"]) == [
        "CUSTOMER",
        "RESELLER",
        "SUPPORT",
    ]
    by_filter = await support.data(
        NOTIFICATIONS,
        {
            "filter": {
                "recipientRole": "SUPPORT",
                "status": "SENT",
                "kind": "ORDER_PROVISIONING_FAILED",
            }
        },
    )
    assert by_filter["notifications"]["totalCount"] == 2
    pending = await support.data(NOTIFICATIONS, {"filter": {"status": "PENDING"}})
    assert pending["notifications"]["totalCount"] == 0
    platform = await system.post(NOTIFICATIONS)
    assert platform["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_retrying_an_unknown_notification_is_not_found(support: GraphQLClient) -> None:
    for value in (str(to_global_id("Notification", 999)), "garbage"):
        body = await support.data(
            """mutation($id: ID!) { retryNotification(input: {id: $id}) {
            notification { id } userErrors { field code } } }""",
            {"id": value},
        )
        assert body["retryNotification"] == {
            "notification": None,
            "userErrors": [{"field": ["input", "id"], "code": "NOT_FOUND"}],
        }
