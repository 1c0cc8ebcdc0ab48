"""Order history shows who acted as a role and a display name, never an internal id (SPEC 8,
issue 21 case 10): over HTTP and over a real websocket subscription, for resellers and customers;
support sees the same display followed by the record (with its ids)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from app.access.actors import parse_actor, shown_actor
from app.access.tokens import viewer_for_token
from app.access.viewer import Viewer
from app.orders.flow import Role
from app.services import Services
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.server import LiveServer
from tests.support.ws import connected

PLACE = """mutation($c: ID!) { placeOrder(input: {customerId: $c,
    items: [{description: "Seat", quantity: 1, unitPrice: "10"}]}) {
    order { id status } userErrors { code } } }"""
REPORT = """mutation($o: ID!) { reportProvisioningResult(input: {orderId: $o, outcome: FAILED,
    reason: NO_IP_ADDRESSES}) { order { status } userErrors { code } } }"""
ACT = """mutation($o: ID!, $a: OrderAction!) { performOrderAction(input: {orderId: $o,
    action: $a}) { order { status } userErrors { code } } }"""
HISTORY = """query($o: ID!) { order(id: $o) { history { to action actor } } }"""
CHANGES = """subscription($after: String) { orderStatusChanged(after: $after) {
    cursor to action actor } }"""
ID_LIKE = re.compile(r"(reseller|customer|token):|\d")


@dataclass
class Desk:
    support: GraphQLClient
    system: GraphQLClient
    reseller: GraphQLClient
    customer: GraphQLClient
    tokens: dict[str, str]
    customer_id: str


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin) as client:
        yield client


@pytest.fixture
async def desk(http: httpx.AsyncClient, factory: Factory) -> Desk:
    reseller = await factory.reseller("Northwind Cloud", "ops@northwind.example")
    customer = await factory.customer(reseller, name="Acme Corp", contact_email="it@acme.example")
    tokens = {
        "SUPPORT": await factory.token("SUPPORT"),
        "SYSTEM": await factory.token("SYSTEM"),
        "RESELLER": await factory.token("RESELLER", reseller=reseller),
        "CUSTOMER": await factory.token("CUSTOMER", customer=customer),
    }
    client = GraphQLClient(http)
    return Desk(
        support=client.as_(tokens["SUPPORT"]),
        system=client.as_(tokens["SYSTEM"]),
        reseller=client.as_(tokens["RESELLER"]),
        customer=client.as_(tokens["CUSTOMER"]),
        tokens=tokens,
        customer_id=gid("Customer", customer),
    )


async def act_on_an_order(desk: Desk) -> str:
    """Each role acts once: the customer places, the platform fails it, the reseller resubmits,
    support marks it failed. The order's id."""
    placed = await desk.customer.data(PLACE, {"c": desk.customer_id})
    order: str = placed["placeOrder"]["order"]["id"]
    assert placed["placeOrder"]["order"]["status"] == "PR"
    assert (await desk.system.data(REPORT, {"o": order}))["reportProvisioningResult"] == {
        "order": {"status": "PF"},
        "userErrors": [],
    }
    for client, action, status in (
        (desk.reseller, "RESUBMIT", "PR"),
        (desk.support, "MARK_FAILED", "PF"),
    ):
        done = await client.data(ACT, {"o": order, "a": action})
        assert done["performOrderAction"] == {"order": {"status": status}, "userErrors": []}
    return order


SHOWN = [
    ("PR", "PLACE_ORDER", "Customer Acme Corp"),
    ("PF", "REPORT_FAILED", "Provisioning platform"),
    ("PR", "RESUBMIT", "Reseller Northwind Cloud"),
    ("PF", "MARK_FAILED", "Support"),
]


async def records(services: Services, desk: Desk) -> dict[str, str]:
    """The actor record each role's token writes (`Viewer.actor`), with its ids."""
    found: dict[str, str] = {}
    async with services.db.read() as session:
        for role, token in desk.tokens.items():
            viewer = await viewer_for_token(session, token, now=services.clock.now())
            assert viewer is not None
            found[role] = viewer.actor
    return found


async def test_history_shows_a_role_and_a_name_to_resellers_and_customers(
    desk: Desk, services: Services
) -> None:
    order = await act_on_an_order(desk)
    for client in (desk.reseller, desk.customer):
        history = (await client.data(HISTORY, {"o": order}))["order"]["history"]
        assert [(h["to"], h["action"], h["actor"]) for h in history] == SHOWN
        assert not any(ID_LIKE.search(h["actor"]) for h in history)

    recorded = await records(services, desk)
    assert re.fullmatch(r"CUSTOMER customer:\d+ token:\d+", recorded["CUSTOMER"])
    history = (await desk.support.data(HISTORY, {"o": order}))["order"]["history"]
    assert [h["actor"] for h in history] == [
        f"Customer Acme Corp ({recorded['CUSTOMER']})",
        f"Provisioning platform ({recorded['SYSTEM']})",
        f"Reseller Northwind Cloud ({recorded['RESELLER']})",
        f"Support ({recorded['SUPPORT']})",
    ]


async def test_live_and_replayed_changes_show_the_same_over_a_websocket(
    desk: Desk, live_server: LiveServer
) -> None:
    async with (
        connected(live_server.ws_url, desk.tokens["RESELLER"]) as reseller,
        connected(live_server.ws_url, desk.tokens["CUSTOMER"]) as customer,
    ):
        for ws in (reseller, customer):
            await ws.subscribe("live", CHANGES)
            assert await ws.until_pong() == []  # subscribed before anything happens
        await act_on_an_order(desk)
        for ws in (reseller, customer):
            live = [(await ws.next("live"))["orderStatusChanged"] for _ in SHOWN]
            assert [(c["to"], c["action"], c["actor"]) for c in live] == SHOWN
            assert not any(ID_LIKE.search(c["actor"]) for c in live)
        first_cursor = live[0]["cursor"]

    # Resuming after the first change replays the later ones from the log: the same display.
    for role in ("RESELLER", "CUSTOMER"):
        async with connected(live_server.ws_url, desk.tokens[role]) as ws:
            await ws.subscribe("replay", CHANGES, {"after": first_cursor})
            replayed = [(await ws.next("replay"))["orderStatusChanged"] for _ in SHOWN[1:]]
            assert [(c["to"], c["action"], c["actor"]) for c in replayed] == SHOWN[1:]


@pytest.mark.parametrize(
    ("viewer", "record", "name", "shown"),
    [
        (Viewer(Role.CUSTOMER, customer_id=7), "RESELLER reseller:1 token:2", "N", "Reseller N"),
        (Viewer(Role.CUSTOMER, customer_id=7), "RESELLER reseller:1 token:2", None, "Reseller"),
        (Viewer(Role.RESELLER, reseller_id=1), "CUSTOMER customer:7 token:9", "A", "Customer A"),
        (Viewer(Role.RESELLER, reseller_id=1), "SYSTEM token:4", None, "Provisioning platform"),
        (Viewer(Role.RESELLER, reseller_id=1), "SYSTEM", None, "OrderPulse"),
        (Viewer(Role.RESELLER, reseller_id=1), "SUPPORT token:3", None, "Support"),
        (Viewer(Role.RESELLER, reseller_id=1), "someone else 12", None, None),
        (Viewer(Role.RESELLER, reseller_id=1), None, None, None),
        (Viewer(Role.SUPPORT), "SUPPORT token:3", None, "Support (SUPPORT token:3)"),
        (Viewer(Role.SUPPORT), "someone else 12", None, "someone else 12"),
    ],
)
def test_the_display_rule(
    viewer: Viewer, record: str | None, name: str | None, shown: str | None
) -> None:
    assert shown_actor(viewer, record, name=name) == shown


def test_records_are_read_back() -> None:
    actor = parse_actor("RESELLER reseller:12 token:34")
    assert actor is not None
    assert (actor.role, actor.reseller_id, actor.customer_id, actor.token_id) == (
        Role.RESELLER,
        12,
        None,
        34,
    )
    assert parse_actor("ROOT token:1") is None
    assert parse_actor("RESELLER reseller:1 token:2 extra") is None
