"""Notification records (also the durable mail outbox), templates and per-reseller settings.

The values a notification takes (its kind, recipient role and delivery status) are enums here, as
the order values are in `app/orders/flow.py`; the columns store their string values, and the
GraphQL layer registers these same classes under their API names.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, String, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class NotificationKind(StrEnum):
    """Why a notification was sent."""

    ORDER_PROVISIONING_FAILED = "ORDER_PROVISIONING_FAILED"
    FAILED_ORDER_UNRESOLVED = "FAILED_ORDER_UNRESOLVED"
    # Incidents (SPEC 10, app/incidents): to support when one opens, then bounded digests; to
    # each reseller once per incident at the SLA deadline, instead of one mail per order.
    PROVISIONING_INCIDENT_OPENED = "PROVISIONING_INCIDENT_OPENED"
    PROVISIONING_INCIDENT_DIGEST = "PROVISIONING_INCIDENT_DIGEST"
    FAILED_ORDERS_UNRESOLVED = "FAILED_ORDERS_UNRESOLVED"


class RecipientRole(StrEnum):
    """Whom a notification is addressed to."""

    SUPPORT = "SUPPORT"
    RESELLER = "RESELLER"
    CUSTOMER = "CUSTOMER"


class DeliveryStatus(StrEnum):
    """Where a notification's mail stands: PENDING rows form the outbox."""

    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    # recorded, never mailed: support's per-order notice of an order that joined an incident
    SUPPRESSED = "SUPPRESSED"


class NotificationTemplate(SQLModel, table=True):
    __tablename__ = "notification_template"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    subject: str = Field(max_length=500)
    body: str = Field(sa_column=Column(Text, nullable=False))
    is_builtin: bool = False
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class NotificationSettings(SQLModel, table=True):
    """A reseller's choices; a reseller without a row uses the defaults.

    Reseller and customer mail are off until the reseller (or support) turns them on (SPEC 3);
    support is always told, whatever this row says.
    """

    __tablename__ = "notification_settings"

    reseller_id: int = Field(foreign_key="reseller.id", primary_key=True)
    notify_reseller: bool = False
    notify_customer: bool = False
    template_id: int | None = Field(default=None, foreign_key="notification_template.id")
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Notification(SQLModel, table=True):
    """One message to one recipient. PENDING rows form the outbox, claimed by lease."""

    __table_args__ = (
        Index("ix_notification_order_id", "order_id"),
        Index("ix_notification_reseller_id_id", "reseller_id", "id"),
        Index("ix_notification_customer_id_id", "customer_id", "id"),
        Index("ix_notification_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="sales_order.id")
    reseller_id: int
    customer_id: int
    kind: str = Field(max_length=40)
    recipient_role: str = Field(max_length=10)
    email: str = Field(max_length=320)
    subject: str = Field(max_length=1000)
    body: str = Field(sa_column=Column(Text, nullable=False))
    message_id: str = Field(max_length=300)
    status: str = Field(default=DeliveryStatus.PENDING.value, max_length=10)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    incident_id: int | None = Field(default=None, index=True)
