"""The notifications of a failed order and of its SLA escalation, stored: what the rule of who
is told (`app/notifications/rules.py`) needs is read here (`FailureMail`), and what it returns is
written here, as notification rows (the outbox) and their events in the caller's transaction
(on PostgreSQL a failure's can be one statement with the order's change:
`failed_order_statement`); the outbox worker sends them after commit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Text,
    Update,
    bindparam,
    func,
    insert,
    literal,
    true,
    union_all,
    update,
)
from sqlalchemy import select as sa_select  # sqlmodel's select takes at most four columns
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import CompiledStatement
from app.events.log import (
    EVENT_COLUMNS,
    EventRow,
    event_params,
    mark_notifications_written,
    notification_event,
    record_events,
)
from app.events.models import Event
from app.notifications import rules
from app.notifications.mailer import new_message_id
from app.notifications.models import (
    DeliveryStatus,
    Notification,
    NotificationKind,
    NotificationSettings,
    NotificationTemplate,
    RecipientRole,
)
from app.notifications.rules import (
    BUILTIN_TEMPLATE_NAMES,
    Addresses,
    MailTemplate,
    NewNotification,
)
from app.notifications.templates import (
    ORDER_FAILED_TEMPLATE,
    UNRESOLVED_TEMPLATE,
    BuiltinTemplate,
    MailWithFallback,
    render_with_fallback,
    template_context,
)
from app.orders import flow
from app.orders.models import Customer, Reseller, SalesOrder

log = logging.getLogger("orderpulse.notifications")


async def settings_for(session: AsyncSession, reseller_id: int) -> NotificationSettings:
    """The reseller's settings row, or the model's defaults (not saved) when it has none."""
    row = await session.get(NotificationSettings, reseller_id)
    if row is not None:
        return row
    return NotificationSettings(reseller_id=reseller_id)


async def template_by_name(session: AsyncSession, name: str) -> NotificationTemplate:
    row = (
        await session.exec(
            select(NotificationTemplate).where(col(NotificationTemplate.name) == name)
        )
    ).first()
    if row is None:
        raise LookupError(f"the built-in template {name!r} is missing; run migrations")
    return row


@dataclass(frozen=True)
class FailureMail:
    """What a failed order's notifications need besides the order: its customer and reseller,
    the reseller's notification settings (the defaults when it has none), the template it chose
    (if any) and the built-in one of the notification's kind."""

    customer_name: str
    customer_email: str
    reseller_name: str
    reseller_email: str
    notify_reseller: bool
    notify_customer: bool
    chosen_template: MailTemplate | None
    builtin_template: MailTemplate

    def order_failed(
        self, *, support_email: str, incident_id: int | None = None
    ) -> list[NewNotification]:
        """Who is told of the failure (`rules.order_failed`)."""
        return rules.order_failed(
            addresses=Addresses(
                support=support_email, reseller=self.reseller_email, customer=self.customer_email
            ),
            notify_reseller=self.notify_reseller,
            notify_customer=self.notify_customer,
            chosen=self.chosen_template,
            builtin=self.builtin_template,
            incident_id=incident_id,
        )


_chosen = aliased(NotificationTemplate, name="chosen_template")
_builtin = aliased(NotificationTemplate, name="builtin_template")
_DEFAULTS = NotificationSettings(reseller_id=0)
_MAIL_COLUMNS: dict[str, Any] = {  # name: a column or an expression
    "customer_name": col(Customer.name),
    "customer_email": col(Customer.contact_email),
    "reseller_name": col(Reseller.name),
    "reseller_email": col(Reseller.email),
    "notify_reseller": func.coalesce(
        col(NotificationSettings.notify_reseller), _DEFAULTS.notify_reseller
    ),
    "notify_customer": func.coalesce(
        col(NotificationSettings.notify_customer), _DEFAULTS.notify_customer
    ),
    "chosen_name": col(_chosen.name),
    "chosen_subject": col(_chosen.subject),
    "chosen_body": col(_chosen.body),
    "builtin_name": col(_builtin.name),
    "builtin_subject": col(_builtin.subject),
    "builtin_body": col(_builtin.body),
}
"""The columns of a failure mail's read, by name; `failure_mail_of` makes the mail of them."""
_FAILURE_MAIL_FROM = (
    sa_select(*(column.label(name) for name, column in _MAIL_COLUMNS.items()))
    .select_from(Customer)
    .join(Reseller, col(Reseller.id) == col(Customer.reseller_id))
    .outerjoin(NotificationSettings, col(NotificationSettings.reseller_id) == col(Reseller.id))
    .outerjoin(_chosen, col(_chosen.id) == col(NotificationSettings.template_id))
    .outerjoin(_builtin, col(_builtin.name) == bindparam("builtin_name"))
)
_FAILURE_MAIL = _FAILURE_MAIL_FROM.where(col(Customer.id) == bindparam("customer_id"))


def with_failure_mail(order_read: Select[Any], customer_id: ColumnElement[int]) -> Select[Any]:
    """PostgreSQL: `order_read` (a SELECT of one order's columns) with the columns of the failure
    mail of its customer `customer_id` after them, `failure_mail`'s SELECT joined LATERAL: a
    failure reads its order and its mail in one statement. Parameters: those of `order_read`
    and `failure_mail_params(...)`; the mail from the row's last columns: `failure_mail_of`."""
    mail = _FAILURE_MAIL_FROM.where(col(Customer.id) == customer_id).lateral("failure_mail")
    return order_read.add_columns(*mail.c).outerjoin(mail, true())


def failure_mail_params(kind: NotificationKind) -> dict[str, object]:
    """The parameters of the mail's read for a notification of `kind`: its built-in template."""
    return {"builtin_name": BUILTIN_TEMPLATE_NAMES[kind]}


def failure_mail_of(row: Sequence[Any], *, kind: NotificationKind) -> FailureMail:
    """The mail from the last columns of a row of `_FAILURE_MAIL` or `with_failure_mail`."""
    mail = dict(zip(_MAIL_COLUMNS, row[len(row) - len(_MAIL_COLUMNS) :], strict=True))
    if mail["builtin_name"] is None:
        name = BUILTIN_TEMPLATE_NAMES[kind]
        raise LookupError(f"the built-in template {name!r} is missing; run migrations")
    chosen = None
    if mail["chosen_name"] is not None:
        chosen = MailTemplate(mail["chosen_name"], mail["chosen_subject"], mail["chosen_body"])
    return FailureMail(
        customer_name=mail["customer_name"],
        customer_email=mail["customer_email"],
        reseller_name=mail["reseller_name"],
        reseller_email=mail["reseller_email"],
        notify_reseller=mail["notify_reseller"],
        notify_customer=mail["notify_customer"],
        chosen_template=chosen,
        builtin_template=MailTemplate(
            mail["builtin_name"], mail["builtin_subject"], mail["builtin_body"]
        ),
    )


_COMPILED_FAILURE_MAIL = CompiledStatement(_FAILURE_MAIL)


async def failure_mail(
    session: AsyncSession, *, customer_id: int, kind: NotificationKind
) -> FailureMail:
    """One statement for what `settings_for`, the templates by id and by name and two look-ups
    by key would read, for a notification of `kind`."""
    connection = await session.connection()
    params = {"customer_id": customer_id, **failure_mail_params(kind)}
    (row,) = await _COMPILED_FAILURE_MAIL.all(connection, params)
    return failure_mail_of(row, kind=kind)


def _context(order: SalesOrder, mail: FailureMail) -> dict[str, object]:
    reason = flow.FailureReason(order.failure_reason or flow.FailureReason.OTHER)
    return template_context(
        order_number=order.number,
        order_type=order.type,
        order_status=order.status,
        order_total=f"{order.total.quantize(flow.CENTS)} {order.currency}",
        customer_name=mail.customer_name,
        reseller_name=mail.reseller_name,
        reason=reason.value,
        message=flow.failure_message(reason, order.failure_details),
        remedy=flow.FAILURE_REASONS[reason].remedy,
        details=order.failure_details,
        sla_deadline=order.sla_deadline.isoformat() if order.sla_deadline else "",
    )


FALLBACK_TEMPLATES: dict[NotificationKind, BuiltinTemplate] = {
    NotificationKind.ORDER_PROVISIONING_FAILED: ORDER_FAILED_TEMPLATE,
    NotificationKind.FAILED_ORDER_UNRESOLVED: UNRESOLVED_TEMPLATE,
}
"""What each kind of notification is sent with when its template fails at send time."""


def support_note(problem: str) -> str:
    """What support's own mail adds when the template failed: support is told in the mail that
    always goes to it (and in every notification's lastError)."""
    return (
        f"\n--\nNote for support: {problem}. Every recipient of this failure got the same. "
        "Correct the template, or choose another in the reseller's notification settings.\n"
    )


def _notification_rows(
    *, order: SalesOrder, mail: FailureMail, notifications: Sequence[NewNotification], now: datetime
) -> list[dict[str, Any]]:
    """The columns of each notification (an outbox row): a PENDING one is due at once, a
    SUPPRESSED one is recorded and never sent.

    A template that fails to render never stops the failure from being recorded and told:
    the mail goes with the built-in template (`render_with_fallback`), each row's `last_error`
    says why, and support's mail carries a note saying so."""
    assert order.id is not None

    renders: dict[tuple[MailTemplate, NotificationKind], MailWithFallback] = {}

    def render(template: MailTemplate, kind: NotificationKind) -> MailWithFallback:
        """Once per template and kind (every notification of a failure shares them)."""
        if (rendered := renders.get((template, kind))) is None:
            rendered = renders[template, kind] = render_with_fallback(
                template_name=template.name,
                subject=template.subject,
                body=template.body,
                fallback=FALLBACK_TEMPLATES[kind],
                context=_context(order, mail),
            )
            if rendered.problem is not None:
                log.warning("order %s: %s", order.number, rendered.problem)
        return rendered

    rows = []
    for notification in notifications:
        kind = notification.kind
        text = render(notification.template, kind)
        note = ""
        if text.problem is not None and notification.role is RecipientRole.SUPPORT:
            note = support_note(text.problem)
        row = {
            "order_id": order.id,
            "reseller_id": order.reseller_id,
            "customer_id": order.customer_id,
            "kind": kind.value,
            "recipient_role": notification.role.value,
            "email": notification.email,
            "subject": text.mail.subject,
            "body": text.mail.body + note,
            "message_id": new_message_id(),
            "status": notification.status.value,
            "attempts": 0,
            "last_error": text.problem,
            "next_attempt_at": now if notification.status is DeliveryStatus.PENDING else None,
            "lease_until": None,
            "created_at": now,
            "sent_at": None,
        }
        if notification.incident_id is not None:
            row["incident_id"] = notification.incident_id
        rows.append(row)
    return rows


_INSERT_NOTIFICATIONS = insert(Notification).returning(
    col(Notification.id), sort_by_parameter_order=True
)


async def _write_notifications(
    session: AsyncSession,
    *,
    order: SalesOrder,
    mail: FailureMail,
    notifications: Sequence[NewNotification],
    now: datetime,
    events_before: Sequence[EventRow] = (),
    events_after: Sequence[EventRow] = (),
) -> list[int]:
    """The notifications (outbox rows) in one INSERT, then `events_before`, the notifications'
    events and `events_after` in one more (in that order in the log); the notifications' ids."""
    assert order.id is not None
    rows = _notification_rows(order=order, mail=mail, notifications=notifications, now=now)
    connection = await session.connection()
    inserted = (await connection.execute(_INSERT_NOTIFICATIONS, rows)).scalars()
    ids = cast(list[int], list(inserted))
    events = [
        notification_event(
            notification_id=notification_id,
            order_id=order.id,
            reseller_id=order.reseller_id,
            customer_id=order.customer_id,
            recipient_role=row["recipient_role"],
            delivery_status=row["status"],
            at=now,
        )
        for notification_id, row in zip(ids, rows, strict=True)
    ]
    await record_events(session, [*events_before, *events, *events_after])
    mark_notifications_written(session)
    return ids


ORDER_FAILED_MAIL_PARAMS = failure_mail_params(NotificationKind.ORDER_PROVISIONING_FAILED)
"""The `failure_mail_params` of a failed order's notifications."""


_PER_RECIPIENT = ("recipient_role", "email", "body", "message_id")
_NOTIFICATION_COLUMNS = (
    "order_id",
    "reseller_id",
    "customer_id",
    "kind",
    "recipient_role",
    "email",
    "subject",
    "body",
    "message_id",
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "lease_until",
    "created_at",
    "sent_at",
)
_FROM_NOTES = ("notification_id", "recipient_role")


@functools.cache
def failed_order_statement(order_change: Update) -> Insert:
    """PostgreSQL: an order's move to PF (`order_change`, the version-checked UPDATE of
    app/orders/service.py RETURNING the writer's announcement, reused: this is built once per
    statement), its failure notifications and the events, as one
    statement: the order's event, then each notification's, in that id order. It RETURNS the
    events' ids (none: the change matched nothing, and nothing was written). Parameters:
    `failed_order_params` with the change's own.

    Every row comes from the change's row, so no id is drawn before its lock is taken (the
    INSERTs read from it; the events' ids are drawn after the sort, which reads every row
    first), and a change that matched nothing writes nothing.
    """
    change = order_change.cte("changed")
    # The recipients as arrays: one statement shape for any number of them.
    people = (
        func.unnest(*(bindparam(f"note_{name}s", type_=ARRAY(Text)) for name in _PER_RECIPIENT))
        .table_valued(*_PER_RECIPIENT, with_ordinality="position")
        .render_derived("recipients")
    )
    table = Notification.__table__  # type: ignore[attr-defined]
    notes = (
        insert(Notification)
        .from_select(
            list(_NOTIFICATION_COLUMNS),
            sa_select(
                *(
                    people.c[name]
                    if name in _PER_RECIPIENT
                    else bindparam(f"note_{name}", type_=table.c[name].type)
                    for name in _NOTIFICATION_COLUMNS
                )
            )
            .select_from(change)
            .join(people, true())
            .order_by(people.c.position),
        )
        .returning(col(Notification.id), col(Notification.recipient_role))
        .cte("notes")
    )
    events = Event.__table__  # type: ignore[attr-defined]
    from_notes = {"notification_id": notes.c.id, "recipient_role": notes.c.recipient_role}

    def bound(prefix: str, name: str) -> Any:
        return bindparam(prefix + name, type_=events.c[name].type).label(name)

    rows = union_all(
        sa_select(
            *(bound("event_", name) for name in EVENT_COLUMNS),
            literal(0).label("sort_group"),
            literal(0).label("sort_id"),
        ).select_from(change),
        sa_select(
            *(
                from_notes[name].label(name) if name in from_notes else bound("note_event_", name)
                for name in EVENT_COLUMNS
            ),
            literal(1),
            notes.c.id,
        ).select_from(notes),
    ).subquery("written")
    return (
        insert(Event)
        .from_select(
            list(EVENT_COLUMNS),
            sa_select(*(rows.c[name] for name in EVENT_COLUMNS)).order_by(
                rows.c.sort_group, rows.c.sort_id
            ),
        )
        .returning(col(Event.id))
    )


def failed_order_params(
    *,
    order: SalesOrder,
    mail: FailureMail,
    notifications: Sequence[NewNotification],
    event: EventRow,
    now: datetime,
) -> dict[str, Any]:
    """`failed_order_statement`'s own parameters: `order` already holds what the change writes
    (the mail is rendered from it), `event` is the order's. The notifications differ only in
    `_PER_RECIPIENT`'s columns: an order that joins no incident (`mail.order_failed()`)."""
    rows = _notification_rows(order=order, mail=mail, notifications=notifications, now=now)
    # the statement has one status for all, and no incident
    assert all(n.status is DeliveryStatus.PENDING and n.incident_id is None for n in notifications)
    note_event = notification_event(
        notification_id=0,  # and the recipient role: each notification's own, from `notes`
        order_id=event["order_id"],
        reseller_id=event["reseller_id"],
        customer_id=event["customer_id"],
        recipient_role="",
        delivery_status=DeliveryStatus.PENDING.value,
        at=now,
    )
    return {
        **{f"note_{name}s": [row[name] for row in rows] for name in _PER_RECIPIENT},
        **{f"note_{name}": rows[0][name] for name in _NOTIFICATION_COLUMNS},
        **event_params(event),
        **event_params(note_event, from_source=_FROM_NOTES, prefix="note_event_"),
    }


async def notify_order_failed(
    session: AsyncSession,
    *,
    order: SalesOrder,
    support_email: str,
    now: datetime,
    events_before: Sequence[EventRow] = (),
    incident_id: int | None = None,
    events_after: Sequence[EventRow] = (),
    mail: FailureMail | None = None,
) -> list[int]:
    """The order just entered PF: write who is told (`FailureMail.order_failed`).

    `events_before` (the status change's own event) and `events_after` are written in the same
    INSERT as the notifications' events, around them; `mail`, if it was read already. With
    `incident_id` (the incident the order joined), support's is SUPPRESSED."""
    if mail is None:
        mail = await failure_mail(
            session, customer_id=order.customer_id, kind=NotificationKind.ORDER_PROVISIONING_FAILED
        )
    return await _write_notifications(
        session,
        order=order,
        mail=mail,
        notifications=mail.order_failed(support_email=support_email, incident_id=incident_id),
        now=now,
        events_before=events_before,
        events_after=events_after,
    )


async def overdue_failure_ids(
    session: AsyncSession, *, now: datetime, limit: int = 100
) -> list[int]:
    """Orders still in PF past their SLA deadline and not yet escalated."""
    rows = await session.exec(
        select(SalesOrder.id)
        .where(
            col(SalesOrder.status) == flow.Status.PF.value,
            col(SalesOrder.sla_deadline) <= now,
            col(SalesOrder.escalated_at).is_(None),
            col(SalesOrder.incident_id).is_(None),  # an incident's: one mail per reseller
        )
        .order_by(col(SalesOrder.sla_deadline))
        .limit(limit)
    )
    return [i for i in rows.all() if i is not None]


async def escalate_failure(session: AsyncSession, *, order_id: int, now: datetime) -> bool:
    """Escalate one overdue failure, exactly once across processes.

    The conditional UPDATE is the claim: only the transaction that flips `escalated_at` from
    NULL (while the order is still in PF) writes the notification.
    """
    result = await session.exec(
        update(SalesOrder)
        .where(
            col(SalesOrder.id) == order_id,
            col(SalesOrder.status) == flow.Status.PF.value,
            col(SalesOrder.sla_deadline) <= now,
            col(SalesOrder.escalated_at).is_(None),
        )
        .values(escalated_at=now)
    )
    if result.rowcount != 1:
        return False
    order = await session.get(SalesOrder, order_id, populate_existing=True)
    assert order is not None
    mail = await failure_mail(
        session, customer_id=order.customer_id, kind=NotificationKind.FAILED_ORDER_UNRESOLVED
    )
    notifications = rules.failure_unresolved(
        reseller_email=mail.reseller_email, builtin=mail.builtin_template
    )
    await _write_notifications(
        session, order=order, mail=mail, notifications=notifications, now=now
    )
    return True
