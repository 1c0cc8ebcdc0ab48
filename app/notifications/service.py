"""Notification settings, templates and retries: the use cases behind the API."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access import policy
from app.access.viewer import Viewer
from app.db import saved
from app.errors import BadInput, Conflict, NotFound
from app.events.log import mark_notifications_written, record_notification_event
from app.notifications.models import (
    DeliveryStatus,
    Notification,
    NotificationSettings,
    NotificationTemplate,
)
from app.notifications.recipients import settings_for, template_by_name
from app.notifications.templates import ORDER_FAILED_TEMPLATE_NAME, TemplateError, validate_template
from app.orders.models import Reseller
from app.orders.service import visible_row


async def _managed_reseller(session: AsyncSession, viewer: Viewer, reseller_id: int) -> Reseller:
    def managed(_: Reseller) -> bool:
        return policy.may_manage_reseller(viewer, reseller_id)

    return await visible_row(session, Reseller, reseller_id, managed, field="resellerId")


async def read_settings(
    session: AsyncSession, *, viewer: Viewer, reseller_id: int
) -> tuple[NotificationSettings, NotificationTemplate]:
    policy.require(viewer, policy.Operation.NOTIFICATION_SETTINGS)
    await _managed_reseller(session, viewer, reseller_id)
    settings = await settings_for(session, reseller_id)
    template = None
    if settings.template_id is not None:
        template = await session.get(NotificationTemplate, settings.template_id)
    return settings, template or await template_by_name(session, ORDER_FAILED_TEMPLATE_NAME)


async def update_settings(
    session: AsyncSession,
    *,
    viewer: Viewer,
    reseller_id: int,
    notify_reseller: bool | None,
    notify_customer: bool | None,
    template_id: int | None = None,
    template_given: bool = False,
    now: datetime,
) -> tuple[NotificationSettings, NotificationTemplate]:
    """Change what is given; leave the rest. The template changes only when `template_given`
    (then no id resets it to the default)."""
    policy.require(viewer, policy.Operation.NOTIFICATION_SETTINGS)
    await _managed_reseller(session, viewer, reseller_id)
    if template_given and template_id is not None:
        if await session.get(NotificationTemplate, template_id) is None:
            raise NotFound("template not found", field=("orderNotificationTemplateId",))
    row = await session.get(NotificationSettings, reseller_id)
    if row is None:
        row = NotificationSettings(reseller_id=reseller_id, updated_at=now)
    if notify_reseller is not None:
        row.notify_reseller = notify_reseller
    if notify_customer is not None:
        row.notify_customer = notify_customer
    if template_given:
        row.template_id = template_id
    row.updated_at = now
    await saved(session, row)
    return await read_settings(session, viewer=viewer, reseller_id=reseller_id)


async def list_templates(session: AsyncSession, *, viewer: Viewer) -> list[NotificationTemplate]:
    policy.require(viewer, policy.Operation.LIST_TEMPLATES)
    rows = await session.exec(select(NotificationTemplate).order_by(col(NotificationTemplate.id)))
    return list(rows.all())


def _validated(name: str, subject: str, body: str) -> tuple[str, str, str]:
    try:
        validate_template(name=name, subject=subject, body=body)
    except TemplateError as exc:
        raise BadInput(exc.message, field=(exc.field,)) from exc
    return name.strip(), subject, body


async def _name_taken(session: AsyncSession, name: str, except_id: int | None = None) -> bool:
    query = select(NotificationTemplate.id).where(col(NotificationTemplate.name) == name)
    if except_id is not None:
        query = query.where(col(NotificationTemplate.id) != except_id)
    return (await session.exec(query)).first() is not None


async def create_template(
    session: AsyncSession, *, viewer: Viewer, name: str, subject: str, body: str, now: datetime
) -> NotificationTemplate:
    policy.require(viewer, policy.Operation.MANAGE_TEMPLATES)
    name, subject, body = _validated(name, subject, body)
    if await _name_taken(session, name):
        raise Conflict("a template with this name exists", field=("name",))
    row = NotificationTemplate(
        name=name, subject=subject, body=body, created_at=now, updated_at=now
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise Conflict("a template with this name exists", field=("name",)) from exc
    return row


async def update_template(
    session: AsyncSession,
    *,
    viewer: Viewer,
    template_id: int,
    name: str | None,
    subject: str | None,
    body: str | None,
    now: datetime,
) -> NotificationTemplate:
    policy.require(viewer, policy.Operation.MANAGE_TEMPLATES)
    row = await session.get(NotificationTemplate, template_id)
    if row is None:
        raise NotFound("template not found", field=("id",))
    new_name, new_subject, new_body = _validated(
        row.name if name is None else name,
        row.subject if subject is None else subject,
        row.body if body is None else body,
    )
    if row.is_builtin and new_name != row.name:
        raise BadInput("a built-in template keeps its name", field=("name",))
    if await _name_taken(session, new_name, except_id=template_id):
        raise Conflict("a template with this name exists", field=("name",))
    row.name, row.subject, row.body, row.updated_at = new_name, new_subject, new_body, now
    return await saved(session, row)


async def retry_notification(
    session: AsyncSession, *, viewer: Viewer, notification_id: int, now: datetime
) -> Notification:
    """Queue a FAILED notification again (same Message-ID), with a fresh attempt budget."""
    policy.require(viewer, policy.Operation.RETRY_NOTIFICATION)
    row = await session.get(Notification, notification_id)
    if row is None:
        raise NotFound("notification not found", field=("id",))
    if row.status != DeliveryStatus.FAILED:
        raise BadInput(
            f"only a FAILED notification can be retried; this one is {row.status}", field=("id",)
        )
    row.status = DeliveryStatus.PENDING.value
    row.attempts = 0
    row.next_attempt_at = now
    row.lease_until = None
    await saved(session, row)
    await record_notification_event(session, notification=row, at=now)
    mark_notifications_written(session)
    return row
