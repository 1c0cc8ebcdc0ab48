"""Per-request (and, for subscriptions, per-event) dataloaders: one SQL statement per batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from typing import Any, TypeVar

from sqlmodel import SQLModel, col, select
from strawberry.dataloader import DataLoader

from app.db import Database
from app.events.log import readable_horizon
from app.events.models import TOPIC_ORDER_STATUS, Event
from app.incidents.models import Incident
from app.notifications.models import Notification, NotificationTemplate
from app.orders.models import Customer, OrderItem, Reseller, SalesOrder

Row = TypeVar("Row", bound=SQLModel)


class _ById(DataLoader[int, Any]):
    model: type[SQLModel]

    def __init__(self, db: Database) -> None:
        self.db = db
        super().__init__(load_fn=self._load)

    async def _load(self, keys: Sequence[int]) -> list[Any]:
        pk = self.model.id  # type: ignore[attr-defined]
        async with self.db.read() as session:
            rows = (await session.exec(select(self.model).where(col(pk).in_(keys)))).all()
        by_id = {row.id: row for row in rows}  # type: ignore[attr-defined]
        return [by_id.get(key) for key in keys]


class ResellerByIdLoader(_ById):
    model = Reseller


class CustomerByIdLoader(_ById):
    model = Customer


class OrderByIdLoader(_ById):
    model = SalesOrder


class NotificationByIdLoader(_ById):
    model = Notification


class TemplateByIdLoader(_ById):
    model = NotificationTemplate


class IncidentByIdLoader(_ById):
    model = Incident


class _ManyByOrderId(DataLoader[int, list[Any]]):
    def __init__(self, db: Database) -> None:
        self.db = db
        super().__init__(load_fn=self._load)

    async def _fetch(self, session: Any, keys: Sequence[int]) -> Sequence[Any]:
        raise NotImplementedError

    async def _load(self, keys: Sequence[int]) -> list[list[Any]]:
        async with self.db.read() as session:
            rows = await self._fetch(session, keys)
        grouped: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            grouped[row.order_id].append(row)
        return [grouped.get(key, []) for key in keys]


def items_query(order_ids: Sequence[int]) -> Any:
    """The line items of these orders as rows (no ORM objects), in their order on the order.
    Shared by the loader and the read planner."""
    return (
        select(
            col(OrderItem.order_id),
            col(OrderItem.description),
            col(OrderItem.quantity),
            col(OrderItem.unit_price),
        )
        .where(col(OrderItem.order_id).in_(order_ids))
        .order_by(col(OrderItem.position))
    )


class ItemsByOrderIdLoader(_ManyByOrderId):
    async def _fetch(self, session: Any, keys: Sequence[int]) -> Sequence[Any]:
        return list((await session.exec(items_query(keys))).all())


class HistoryByOrderIdLoader(_ManyByOrderId):
    """An order's status changes, up to the log's readable horizon: a history entry's cursor is
    a place to resume `orderStatusChanged` from, so it must never lie beyond an event another
    transaction may still commit with a smaller id (see `app.events.log`)."""

    async def _fetch(self, session: Any, keys: Sequence[int]) -> Sequence[Any]:
        horizon = await readable_horizon(session)
        query = select(Event).where(
            col(Event.order_id).in_(keys), col(Event.topic) == TOPIC_ORDER_STATUS
        )
        if horizon is not None:
            query = query.where(col(Event.id) <= horizon)
        return list((await session.exec(query.order_by(col(Event.id)))).all())


class NotificationsByOrderIdLoader(_ManyByOrderId):
    async def _fetch(self, session: Any, keys: Sequence[int]) -> Sequence[Any]:
        query = select(Notification).where(col(Notification.order_id).in_(keys))
        return list((await session.exec(query.order_by(col(Notification.id)))).all())


class Loaders:
    """One set per HTTP request or per subscription event; never reused across them.

    Each loader is made on first use: a planned query (app/graphql/planner) uses none."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # values read once per request or event batch that are not rows by key (an incident's
        # counts for one viewer: app/graphql/incidents.py)
        self.scratch: dict[Any, Any] = {}

    @cached_property
    def reseller(self) -> ResellerByIdLoader:
        return ResellerByIdLoader(self.db)

    @cached_property
    def customer(self) -> CustomerByIdLoader:
        return CustomerByIdLoader(self.db)

    @cached_property
    def order(self) -> OrderByIdLoader:
        return OrderByIdLoader(self.db)

    @cached_property
    def notification(self) -> NotificationByIdLoader:
        return NotificationByIdLoader(self.db)

    @cached_property
    def template(self) -> TemplateByIdLoader:
        return TemplateByIdLoader(self.db)

    @cached_property
    def items(self) -> ItemsByOrderIdLoader:
        return ItemsByOrderIdLoader(self.db)

    @cached_property
    def history(self) -> HistoryByOrderIdLoader:
        return HistoryByOrderIdLoader(self.db)

    @cached_property
    def notifications(self) -> NotificationsByOrderIdLoader:
        return NotificationsByOrderIdLoader(self.db)

    @cached_property
    def incident(self) -> IncidentByIdLoader:
        return IncidentByIdLoader(self.db)
