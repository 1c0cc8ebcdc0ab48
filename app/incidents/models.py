"""The incident table: one provisioning outage, grouping the orders that failed for one reason.

At most one OPEN incident per reason: on PostgreSQL a partial unique index says so
(`ux_incident_open_reason`), and `app.incidents.rules` takes a per-reason advisory lock before
it decides, so concurrent failures on several processes open exactly one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class IncidentStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class IncidentChangeKind(StrEnum):
    """What happened to an incident (the `action` of its event-log rows)."""

    OPENED = "OPENED"
    JOINED = "JOINED"
    RESUBMITTED = "RESUBMITTED"
    RESOLVED = "RESOLVED"


class Incident(SQLModel, table=True):
    __table_args__ = (
        Index("ix_incident_status_id", "status", "id"),
        Index(
            "ux_incident_open_reason",
            "reason",
            unique=True,
            sqlite_where=text("status = 'OPEN'"),
            postgresql_where=text("status = 'OPEN'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    reason: str = Field(max_length=40)
    status: str = Field(default=IncidentStatus.OPEN.value, max_length=10)
    opened_at: datetime = Field(sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_failure_at: datetime = Field(sa_type=UTCDateTime)
    # the first order that joined: incident-wide notifications and events name it as their order
    first_order_id: int = Field(foreign_key="sales_order.id")
    # what support's last mail (the opening one or a digest) said, and when it was written
    last_mailed_at: datetime = Field(sa_type=UTCDateTime)
    mailed_order_count: int = 0
    resolved_by: str | None = Field(default=None, max_length=200)
    resolution_comment: str | None = Field(default=None, max_length=2000)
