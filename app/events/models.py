"""The durable event log: every order status change and notification change, in commit order.

The id is the cursor of the live streams; `reseller_id`, `customer_id` and `recipient_role` are
copied onto each row so the fan-out can decide who may see it without a join.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

TOPIC_ORDER_STATUS = "order_status"
TOPIC_NOTIFICATION = "notification"
TOPIC_INCIDENT = "incident"
"""An incident opened, grew, was resubmitted or resolved (`action`: app/incidents/models.py's
`IncidentChangeKind`); its `order_id` (the column is required) is the order that joined, or the
incident's first order. Support alone sees these (`policy.EVENT_RULES`)."""


class Event(SQLModel, table=True):
    __table_args__ = (
        Index("ix_event_order_id_id", "order_id", "id"),
        Index("ix_event_topic_id", "topic", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=20)
    order_id: int = Field(foreign_key="sales_order.id")
    reseller_id: int
    customer_id: int
    notification_id: int | None = None
    recipient_role: str | None = Field(default=None, max_length=10)
    from_status: str | None = Field(default=None, max_length=2)
    to_status: str | None = Field(default=None, max_length=2)
    action: str | None = Field(default=None, max_length=40)
    actor: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=40)
    comment: str | None = Field(default=None, max_length=2000)
    delivery_status: str | None = Field(default=None, max_length=10)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    incident_id: int | None = None


@dataclass(frozen=True, slots=True)
class EventTenancy:
    """The columns of an event row that decide who may see it (`policy.may_see_event`).

    An event row is written once and never changed, so these can be kept in memory by id.
    """

    topic: str
    reseller_id: int
    customer_id: int
    recipient_role: str | None
