"""Who is told of a failed order, and with which template: the rule alone
(app/notifications/rules.py), over every combination of the reseller's settings, a chosen
template or none, and an order that joined an incident or none."""

from __future__ import annotations

import pytest

from app.notifications.models import DeliveryStatus, NotificationKind, RecipientRole
from app.notifications.rules import (
    BUILTIN_TEMPLATE_NAMES,
    Addresses,
    MailTemplate,
    NewNotification,
    failure_unresolved,
    order_failed,
)
from app.notifications.templates import ORDER_FAILED_TEMPLATE_NAME, UNRESOLVED_TEMPLATE_NAME

ADDRESSES = Addresses(
    support="support@example.com", reseller="sales@reseller.example", customer="it@customer.example"
)
BUILTIN = MailTemplate(ORDER_FAILED_TEMPLATE_NAME, "built-in subject", "built-in body")
CHOSEN = MailTemplate("Mine", "my subject", "my body")
FAILED = NotificationKind.ORDER_PROVISIONING_FAILED
SUPPORT, RESELLER, CUSTOMER = RecipientRole.SUPPORT, RecipientRole.RESELLER, RecipientRole.CUSTOMER
PENDING, SUPPRESSED = DeliveryStatus.PENDING, DeliveryStatus.SUPPRESSED


@pytest.mark.parametrize(
    ("notify_reseller", "notify_customer", "incident_id", "told"),
    [
        (False, False, None, [(SUPPORT, PENDING)]),
        (True, False, None, [(SUPPORT, PENDING), (RESELLER, PENDING)]),
        (False, True, None, [(SUPPORT, PENDING), (CUSTOMER, PENDING)]),
        (True, True, None, [(SUPPORT, PENDING), (RESELLER, PENDING), (CUSTOMER, PENDING)]),
        (False, False, 7, [(SUPPORT, SUPPRESSED)]),
        (True, False, 7, [(SUPPORT, SUPPRESSED), (RESELLER, PENDING)]),
        (False, True, 7, [(SUPPORT, SUPPRESSED), (CUSTOMER, PENDING)]),
        (True, True, 7, [(SUPPORT, SUPPRESSED), (RESELLER, PENDING), (CUSTOMER, PENDING)]),
    ],
)
@pytest.mark.parametrize("chosen", [None, CHOSEN], ids=["built-in template", "chosen template"])
def test_a_failure_tells_support_always_and_the_others_as_the_settings_say(
    notify_reseller: bool,
    notify_customer: bool,
    incident_id: int | None,
    told: list[tuple[RecipientRole, DeliveryStatus]],
    chosen: MailTemplate | None,
) -> None:
    email = {SUPPORT: ADDRESSES.support, RESELLER: ADDRESSES.reseller, CUSTOMER: ADDRESSES.customer}
    assert order_failed(
        addresses=ADDRESSES,
        notify_reseller=notify_reseller,
        notify_customer=notify_customer,
        chosen=chosen,
        builtin=BUILTIN,
        incident_id=incident_id,
    ) == [
        NewNotification(role, email[role], FAILED, status, chosen or BUILTIN, incident_id)
        for role, status in told
    ]


def test_an_unresolved_failure_tells_the_reseller_only_with_the_builtin_template() -> None:
    """Whatever the reseller's settings and chosen template: the rule is not given them
    (tests/notifications/test_escalation.py checks it end to end)."""
    builtin = MailTemplate(UNRESOLVED_TEMPLATE_NAME, "late", "still failed")
    assert failure_unresolved(reseller_email=ADDRESSES.reseller, builtin=builtin) == [
        NewNotification(
            RESELLER, ADDRESSES.reseller, NotificationKind.FAILED_ORDER_UNRESOLVED, PENDING, builtin
        )
    ]


def test_each_kind_has_its_own_builtin_template() -> None:
    assert BUILTIN_TEMPLATE_NAMES == {
        FAILED: ORDER_FAILED_TEMPLATE_NAME,
        NotificationKind.FAILED_ORDER_UNRESOLVED: UNRESOLVED_TEMPLATE_NAME,
    }
