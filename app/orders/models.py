"""Tables of the order desk: resellers, customers, orders and their line items."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, Index, Numeric, String
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

MONEY = Numeric(18, 4)


class Reseller(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Customer(SQLModel, table=True):
    __table_args__ = (Index("ix_customer_reseller_id_id", "reseller_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    reseller_id: int = Field(foreign_key="reseller.id")
    name: str = Field(max_length=200)
    contact_email: str = Field(max_length=320)
    payment_method: str = Field(default="AUTOMATIC", max_length=20)
    on_hold: bool = False
    requires_verification: bool = False
    credit_limit: Decimal = Field(default=Decimal(0), sa_column=Column(MONEY, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class SalesOrder(SQLModel, table=True):
    """An order. `settled_checks` remembers which automatic checks were settled for it."""

    __tablename__ = "sales_order"
    __table_args__ = (
        Index("ix_sales_order_status_id", "status", "id"),
        Index("ix_sales_order_reseller_status_id", "reseller_id", "status", "id"),
        Index("ix_sales_order_reseller_id_id", "reseller_id", "id"),
        Index("ix_sales_order_customer_id_id", "customer_id", "id"),
        # Migration 0002: what stays fast at millions of orders.
        Index(
            "ix_sales_order_status_escalated_sla_deadline", "status", "escalated_at", "sla_deadline"
        ),
        Index("ix_sales_order_customer_status_id", "customer_id", "status", "id"),
        # Migration 0006 (incidents): recent failures by reason, an incident's orders.
        Index(
            "ix_sales_order_status_failure_reason_failed_at",
            "status",
            "failure_reason",
            "failed_at",
        ),
        Index("ix_sales_order_incident_id_id", "incident_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    type: str = Field(max_length=2)
    customer_id: int = Field(foreign_key="customer.id")
    reseller_id: int = Field(foreign_key="reseller.id")
    currency: str = Field(max_length=3)
    total: Decimal = Field(sa_column=Column(MONEY, nullable=False))
    status: str = Field(max_length=2)
    version: int = 1
    settled_checks: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    failure_reason: str | None = Field(default=None, max_length=40)
    failure_details: str | None = Field(default=None, max_length=2000)
    failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sla_deadline: datetime | None = Field(default=None, sa_type=UTCDateTime)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    incident_id: int | None = Field(default=None)  # the incident its latest failure joined


class OrderItem(SQLModel, table=True):
    __tablename__ = "order_item"

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="sales_order.id", index=True)
    position: int
    description: str = Field(max_length=500)
    quantity: int
    unit_price: Decimal = Field(sa_column=Column(MONEY, nullable=False))
