"""A template that fails at send time never loses a failure (SPEC 8, issue 21 case 8).

The templates here were saved before templates were checked against boundary values (or were
edited in the database): they are written straight into the table, past the save check. The
provisioning platform then reports a failure over the API, with a real SMTP server listening:
the order is in PF, every recipient got the built-in template's mail, each notification's
lastError says why, and support's own mail says so too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

from app.graphql.ids import to_global_id
from app.notifications import escalation
from app.notifications.models import NotificationTemplate
from app.notifications.recipients import support_note
from app.notifications.templates import (
    ORDER_FAILED_TEMPLATE,
    RENDER_TIME_LIMIT_SECONDS,
    UNRESOLVED_TEMPLATE,
    UNRESOLVED_TEMPLATE_NAME,
    render_template,
    template_context,
)
from app.services import Services
from tests.notifications.test_outbox import SUPPORT_EMAIL, Desk
from tests.support.api import Factory, GraphQLClient
from tests.support.clock import FakeClock
from tests.support.smtp import SmtpServer

NESTED_LOOPS = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
ORDER = """query($id: ID!) { order(id: $id) { status failure { reason details escalatedAt } } }"""


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {
        "smtp_url": smtp_server.url,
        "outbox_poll_seconds": 3600,
        "escalation_poll_seconds": 3600,
    }


@pytest.fixture
async def desk(api: GraphQLClient, factory: Factory) -> Desk:
    """Northwind (ops@northwind.example) and its customer Acme (it@acme.example), both told."""
    desk = await Desk(api, factory).setup()
    await desk.settings(notifyReseller=True, notifyCustomer=True)
    return desk


async def saved_unchecked(services: Services, name: str, subject: str, body: str) -> str:
    """A template written past the save check, as one saved before it existed would be."""
    async with services.transaction() as session:
        now = services.clock.now()
        row = NotificationTemplate(
            name=name, subject=subject, body=body, created_at=now, updated_at=now
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        return str(to_global_id("NotificationTemplate", row.id))


def builtin_mail(order: dict[str, Any], details: str | None) -> tuple[str, str]:
    """The built-in template's subject and body for the order failed by `Desk.fail`."""
    mail = render_template(
        subject=ORDER_FAILED_TEMPLATE.subject,
        body=ORDER_FAILED_TEMPLATE.body,
        context=template_context(
            order_number=order["number"],
            order_type="SO",
            order_status="PF",
            order_total="50.00 USD",
            customer_name="Acme",
            reseller_name="Northwind",
            reason="SERVICE_CREATION_FAILED",
            message="Service creation failed",
            remedy="Verify whether information on the order is correct",
            details=details,
            sla_deadline=order["failure"]["slaDeadline"],
        ),
    )
    return mail.subject, mail.body


@pytest.mark.parametrize(
    ("subject", "body", "why"),
    [
        (
            "Order {{ order.number }}",
            "{{ details|length }} characters of details",
            "cannot be rendered: TypeError: object of type 'NoneType' has no len()",
        ),
        (
            "Order {{ order.number }}",
            NESTED_LOOPS,
            "not allowed in a template: the template does too much work (over 50000 steps)",
        ),
        ("{{ order.nmber }}", "ok", "'dict object' has no attribute 'nmber'"),
    ],
)
async def test_a_template_that_fails_at_send_time_never_loses_the_failure(
    desk: Desk, smtp_server: SmtpServer, services: Services, subject: str, body: str, why: str
) -> None:
    template_id = await saved_unchecked(services, "Saved before the check", subject, body)
    chosen = await desk.settings(orderNotificationTemplateId=template_id)
    assert chosen["notificationSettings"]["orderNotificationTemplate"] == {
        "name": "Saved before the check"
    }

    started = time.thread_time()
    order = await desk.fail(details=None)  # the order is in PF, with no userErrors
    assert time.thread_time() - started < RENDER_TIME_LIMIT_SECONDS + 1  # CPU: bounded render
    assert (await desk.support.data(ORDER, {"id": order["id"]}))["order"] == {
        "status": "PF",
        "failure": {"reason": "SERVICE_CREATION_FAILED", "details": None, "escalatedAt": None},
    }

    received = await smtp_server.wait_for(3)
    assert sorted(r.rcpt_tos for r in smtp_server.received) == [
        ("it@acme.example",),
        ("ops@northwind.example",),
        (SUPPORT_EMAIL,),
    ]
    problem = (
        f"the template 'Saved before the check' could not be rendered ({why}); "
        "sent with the built-in template 'Order Provisioning Failed'"
    )
    builtin_subject, builtin_body = builtin_mail(order, None)
    for mail in smtp_server.received:
        (address,) = mail.rcpt_tos
        assert mail.message["Subject"] == builtin_subject
        note = support_note(problem) if address == SUPPORT_EMAIL else ""
        assert mail.message.get_content() == builtin_body + note
    assert "Note for support: the template 'Saved before the check' could not be rendered" in (
        next(m for m in received if m["To"] == SUPPORT_EMAIL).get_content()
    )

    rows = await desk.settled(order, 3)
    assert sorted((r["recipientRole"], r["status"], r["lastError"]) for r in rows) == [
        ("CUSTOMER", "SENT", problem),
        ("RESELLER", "SENT", problem),
        ("SUPPORT", "SENT", problem),
    ]
    assert len(smtp_server.messages) == 3


async def test_a_later_failure_with_a_good_template_records_no_problem(
    desk: Desk, smtp_server: SmtpServer, services: Services
) -> None:
    template_id = await saved_unchecked(
        services, "Details length", "Order {{ order.number }}", "{{ details|length }}"
    )
    await desk.settings(orderNotificationTemplateId=template_id)
    order = await desk.fail(details="vendor said no")  # details given: the template renders
    await smtp_server.wait_for(3)
    assert sorted(m["Subject"] for m in smtp_server.messages) == [f"Order {order['number']}"] * 3
    assert (
        sorted(m.get_content() for m in smtp_server.messages) == ["14\n"] * 3
    )  # the mail ends its body with a newline
    rows = await desk.settled(order, 3)
    assert [(r["status"], r["lastError"]) for r in rows] == [("SENT", None)] * 3


async def test_an_escalation_with_a_broken_builtin_row_goes_with_the_shipped_one(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    await desk.settings(notifyReseller=False, notifyCustomer=False)
    order = await desk.fail(details=None)
    await smtp_server.wait_for(1)
    async with services.transaction() as session:  # support's edit, from before the check
        await session.exec(
            update(NotificationTemplate)
            .where(NotificationTemplate.name == UNRESOLVED_TEMPLATE_NAME)  # type: ignore[arg-type]
            .values(body="{{ details|length }}")
        )
    clock.advance(days=7)
    escalated = await escalation.escalate_overdue_failures(
        db=services.db, transaction=services.transaction, clock=services.clock
    )
    assert escalated == 1
    await smtp_server.wait_for(2)
    mail = smtp_server.received[1]
    assert mail.rcpt_tos == ("ops@northwind.example",)
    assert mail.message["Subject"] == (
        f"Order {order['number']} is still failed past its SLA deadline"
    )
    assert mail.message.get_content().startswith(
        f"Hello,\n\nOrder {order['number']} is still failed past its SLA deadline of "
    )
    assert UNRESOLVED_TEMPLATE.body.endswith("OrderPulse\n")
    rows = await desk.settled(order, 2)
    unresolved = next(r for r in rows if r["kind"] == "FAILED_ORDER_UNRESOLVED")
    assert (unresolved["status"], unresolved["lastError"]) == (
        "SENT",
        "the template 'Failed Order Unresolved' could not be rendered (cannot be rendered: "
        "TypeError: object of type 'NoneType' has no len()); sent with the built-in template "
        "'Failed Order Unresolved'",
    )
