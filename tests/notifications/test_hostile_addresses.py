"""Hostile e-mail addresses (SPEC 8, issue 21 case 7), against the API and a real SMTP server.

Every input that stores an address refuses anything but one plain address, and writes nothing;
an address stored before the rule (written here straight into the table) is never mailed, not
even to a part of it: its notification is FAILED with a clear last error, and the other
recipients get their mail as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from app.notifications.mailer import FileMailer, OutgoingMail
from app.orders.models import Customer, Reseller
from app.services import Services
from app.settings import Settings
from tests.notifications.test_outbox import SUPPORT_EMAIL, Desk
from tests.support.api import Factory, GraphQLClient, refused
from tests.support.smtp import SmtpServer

HOSTILE = [
    "a,b,c@evil.example",
    "a>,<support@evil.example",
    "x\x00@y.example",
    '"x"@y.example',
    "Name <a@b.example>",
    "a@b.example\r\nBcc: victim@c.example",
    " it@acme.example",
]

CREATE_RESELLER = """mutation($input: CreateResellerInput!) { createReseller(input: $input) {
    reseller { id email } userErrors { field message code } } }"""
CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
    customer { id contactEmail } userErrors { field message code } } }"""
UPDATE_CONTACT = """mutation($input: UpdateCustomerContactInput!) {
    updateCustomerContact(input: $input) {
    customer { id contactEmail } userErrors { field message code } } }"""
STORED = """query($c: ID!, $r: ID!) { customers(first: 100) { totalCount }
    resellers(first: 100) { totalCount }
    customer(id: $c) { contactEmail } reseller(id: $r) { email } }"""
MESSAGE = "is not a valid e-mail address"


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {"smtp_url": smtp_server.url, "outbox_poll_seconds": 3600}


@pytest.fixture
async def desk(api: GraphQLClient, factory: Factory) -> Desk:
    """Northwind (ops@northwind.example, told of failures) and its customer Acme (it@acme.example)."""
    return await Desk(api, factory).setup()


async def stored(desk: Desk) -> dict[str, Any]:
    variables = {"c": desk.customer_id, "r": desk.reseller_id}
    return await desk.support.data(STORED, variables)


NUL_REFUSED = [
    {
        "message": "Variable '$input' holds a NUL character: text may not contain NUL (\\u0000)",
        "extensions": {"code": "BAD_USER_INPUT"},
    }
]
"""A NUL never reaches a resolver: the schema refuses any input holding one (SPEC 8, input that
cannot be valid), before the address rule would."""


async def assert_refused(
    client: GraphQLClient,
    document: str,
    variables: dict[str, Any],
    address: str,
    expected: dict[str, Any],
) -> None:
    body = await client.post(document, variables)
    if "\x00" in address:
        assert body == {"data": None, "errors": NUL_REFUSED}
    else:
        assert "errors" not in body, body
        assert body["data"] == expected


@pytest.mark.parametrize("address", HOSTILE)
async def test_a_hostile_address_is_refused_by_every_input_and_nothing_is_written(
    desk: Desk, address: str
) -> None:
    before = await stored(desk)
    assert before["customer"] == {"contactEmail": "it@acme.example"}

    await assert_refused(
        desk.support,
        CREATE_RESELLER,
        {"input": {"name": "Evil Ltd", "email": address}},
        address,
        {"createReseller": refused("reseller", ["input", "email"], MESSAGE, "BAD_USER_INPUT")},
    )
    for client in (desk.support, desk.reseller_client):
        await assert_refused(
            client,
            CREATE_CUSTOMER,
            {
                "input": {
                    "resellerId": desk.reseller_id,
                    "name": "Evil Inc",
                    "contactEmail": address,
                }
            },
            address,
            {
                "createCustomer": refused(
                    "customer", ["input", "contactEmail"], MESSAGE, "BAD_USER_INPUT"
                )
            },
        )
        await assert_refused(
            client,
            UPDATE_CONTACT,
            {"input": {"customerId": desk.customer_id, "email": address}},
            address,
            {
                "updateCustomerContact": refused(
                    "customer", ["input", "email"], MESSAGE, "BAD_USER_INPUT"
                )
            },
        )
    assert await stored(desk) == before


async def test_the_stored_address_is_the_one_mailed(desk: Desk, smtp_server: SmtpServer) -> None:
    await desk.settings(notifyReseller=False, notifyCustomer=True)
    changed = await desk.reseller_client.data(
        UPDATE_CONTACT,
        {"input": {"customerId": desk.customer_id, "email": "Billing+PF@Acme.EXAMPLE"}},
    )
    assert changed["updateCustomerContact"] == {
        "customer": {"id": desk.customer_id, "contactEmail": "Billing+PF@acme.example"},
        "userErrors": [],
    }
    order = await desk.fail()
    await smtp_server.wait_for(2)
    assert sorted(r.rcpt_tos for r in smtp_server.received) == [
        ("Billing+PF@acme.example",),
        (SUPPORT_EMAIL,),
    ]
    rows = await desk.settled(order, 2)
    assert sorted((r["email"], r["status"]) for r in rows) == [
        ("Billing+PF@acme.example", "SENT"),
        (SUPPORT_EMAIL, "SENT"),
    ]


@pytest.mark.parametrize(
    "address", ["a,b,c@evil.example", "a>,<support@evil.example", "x\x00@y.example"]
)
async def test_an_address_stored_before_the_rule_is_never_mailed(
    desk: Desk, smtp_server: SmtpServer, services: Services, address: str
) -> None:
    if "\x00" in address and not services.db.is_sqlite:
        pytest.skip("PostgreSQL cannot store a NUL: such a row cannot exist there")
    async with services.transaction() as session:  # a row from before the rule
        await session.exec(
            update(Customer).where(Customer.id == desk.customer.id).values(contact_email=address)  # type: ignore[arg-type]
        )
        await session.exec(
            update(Reseller)
            .where(Reseller.id == desk.reseller.id)
            .values(email="ops,x@evil.example")  # type: ignore[arg-type]
        )
    await desk.settings(notifyReseller=True, notifyCustomer=True)
    order = await desk.fail()
    rows = await desk.settled(order, 3)
    # Only support's mail went out, to support alone: no RCPT TO a part of the bad addresses.
    assert [r.rcpt_tos for r in smtp_server.received] == [(SUPPORT_EMAIL,)]
    by_role = {r["recipientRole"]: r for r in rows}
    assert (by_role["SUPPORT"]["status"], by_role["SUPPORT"]["lastError"]) == ("SENT", None)
    for role, bad in (("CUSTOMER", address), ("RESELLER", "ops,x@evil.example")):
        row = by_role[role]
        assert (row["email"], row["status"], row["attempts"]) == (bad, "FAILED", 1)
        assert row["lastError"] == (
            f"not sent: the recipient address {bad!r} is not one plain address, local@domain, "
            "with no name, comma, angle bracket, quote, space or control character (stored "
            "before addresses were checked); correct it: later notifications go to the "
            "corrected address"
        )
    # Support can see them, and a retry refuses them again without touching the mail server.
    retried = await desk.support.data(
        """mutation($id: ID!) { retryNotification(input: {id: $id}) {
        notification { status } userErrors { code } } }""",
        {"id": by_role["CUSTOMER"]["id"]},
    )
    assert retried["retryNotification"] == {"notification": {"status": "PENDING"}, "userErrors": []}
    rows = await desk.settled(order, 3)
    assert {r["recipientRole"]: r["status"] for r in rows}["CUSTOMER"] == "FAILED"
    assert [r.rcpt_tos for r in smtp_server.received] == [(SUPPORT_EMAIL,)]


async def test_the_file_mailer_refuses_the_same_addresses(tmp_path: Any) -> None:
    from app.notifications.mailer import DeliveryError

    mailer = FileMailer(tmp_path / "mail")
    for recipient in HOSTILE:
        mail = OutgoingMail("<m@orderpulse.local>", "op@x.example", recipient, "s", "b")
        with pytest.raises(DeliveryError) as caught:
            await mailer.send(mail)
        assert caught.value.permanent
    assert not (tmp_path / "mail").exists()


@pytest.mark.parametrize("variable", ["support_email", "mail_from"])
@pytest.mark.parametrize(
    "value", ["Support <support@x.example>", "a,b@x.example", "s\x00@localhost", "a@b.example "]
)
def test_the_configured_addresses_are_plain_too(variable: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **{variable: value})  # type: ignore[call-arg]
    assert caught.value.errors()[0]["loc"] == (variable,)
    assert "must be one plain address" in str(caught.value)


def test_the_default_configured_addresses_are_local_mailboxes() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.support_email, settings.mail_from) == (
        "support@localhost",
        "orderpulse@localhost",
    )
    assert Settings(_env_file=None, support_email="Ops@Relay.LOCAL").support_email == (  # type: ignore[call-arg]
        "Ops@relay.local"
    )
