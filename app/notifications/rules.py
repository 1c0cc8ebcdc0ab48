"""Who is told of a failed order, and with which template (SPEC 3, SPEC 10): the rule alone.

Plain values in, the notifications to create out; nothing here reads or writes the database.
`app/notifications/recipients.py` reads the facts and writes what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.notifications.models import DeliveryStatus, NotificationKind, RecipientRole
from app.notifications.templates import ORDER_FAILED_TEMPLATE_NAME, UNRESOLVED_TEMPLATE_NAME

BUILTIN_TEMPLATE_NAMES: dict[NotificationKind, str] = {
    NotificationKind.ORDER_PROVISIONING_FAILED: ORDER_FAILED_TEMPLATE_NAME,
    NotificationKind.FAILED_ORDER_UNRESOLVED: UNRESOLVED_TEMPLATE_NAME,
}
"""The built-in template each kind of per-order notification is written with by default."""


@dataclass(frozen=True)
class MailTemplate:
    name: str
    subject: str
    body: str


@dataclass(frozen=True)
class Addresses:
    """Where each role's mail goes: support's, the reseller's, the customer's contact e-mail."""

    support: str
    reseller: str
    customer: str


@dataclass(frozen=True)
class NewNotification:
    """One notification to create: to whom, what kind, in which status, with which template."""

    role: RecipientRole
    email: str
    kind: NotificationKind
    status: DeliveryStatus
    template: MailTemplate
    incident_id: int | None = None


def order_failed(
    *,
    addresses: Addresses,
    notify_reseller: bool,
    notify_customer: bool,
    chosen: MailTemplate | None,
    builtin: MailTemplate,
    incident_id: int | None,
) -> list[NewNotification]:
    """An order entered PF: support always, the reseller and the customer as the reseller's
    settings say, with the reseller's `chosen` template or else the `builtin` one. When the
    order joined an incident, support's is recorded SUPPRESSED: support hears of the incident
    instead (app/incidents)."""
    kind, template = NotificationKind.ORDER_PROVISIONING_FAILED, chosen or builtin
    support = DeliveryStatus.SUPPRESSED if incident_id is not None else DeliveryStatus.PENDING
    told_by_role = [
        (RecipientRole.SUPPORT, addresses.support, True, support),
        (RecipientRole.RESELLER, addresses.reseller, notify_reseller, DeliveryStatus.PENDING),
        (RecipientRole.CUSTOMER, addresses.customer, notify_customer, DeliveryStatus.PENDING),
    ]
    return [
        NewNotification(role, email, kind, status, template, incident_id)
        for role, email, is_told, status in told_by_role
        if is_told
    ]


def failure_unresolved(*, reseller_email: str, builtin: MailTemplate) -> list[NewNotification]:
    """A failure is still in PF at its SLA deadline: the reseller is told whatever its settings
    say, always with the built-in template."""
    return [
        NewNotification(
            RecipientRole.RESELLER,
            reseller_email,
            NotificationKind.FAILED_ORDER_UNRESOLVED,
            DeliveryStatus.PENDING,
            builtin,
        )
    ]
