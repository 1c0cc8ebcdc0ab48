"""Writing to the event log, inside the caller's transaction, and where it may be read up to.

Subscribers read the log in id order and resume after an id, so no event may become readable
after a later id has been handed out: a reader must never pass an id that a transaction still
open may commit. SQLite has one writer at a time, so its ids commit in order.

PostgreSQL writers run concurrently and take ids from `event_id_seq` in any order relative to
their commits. Before drawing its first id, each event-writing transaction announces itself with a
transaction-scoped *shared* advisory lock whose key is the sequence's last value at that moment
(so every id it draws is above its key). Shared locks never wait for one another, and the lock
ends with the transaction, so writers never queue behind each other. A reader computes the
*horizon* in three steps, each a separate statement:

1. `L`, the last id drawn so far (read first);
2. `K`, the smallest key among the announcement locks held now;
3. the events with `id <= min(L, K)`, read with a snapshot taken after step 2.

Why nothing is skipped: take any id `h <= min(L, K)` that is not visible in step 3. It was drawn
by step 1 (`h <= L`), so its transaction announced itself before step 2. Had that transaction
been open at step 2, its key (below `h`) would make `K < h`; so it had ended by step 2: committed,
and then visible to step 3, or rolled back, and then `h` never appears. Every id up to the
horizon is final, and a reader that hands out only those never has to go back.

A writer may also be one statement whose data-modifying CTE takes the lock in its RETURNING and
whose INSERTs of events read their rows from that CTE (`insert_events_from`; a failure in
app/notifications/recipients.py, the outbox's outcome): PostgreSQL produces the CTE's row, and so
takes the lock, before the INSERT that reads it draws an id, so "announce, then draw", which the
argument needs, holds inside the statement as it does across two.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    Insert,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.events.models import TOPIC_INCIDENT, TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification
from app.orders.models import SalesOrder

WRITER_LOCK_CLASS = 0x4F50  # "OP": the first key of the announcement locks
WROTE_EVENTS = "orderpulse.wrote_events"
WROTE_NOTIFICATIONS = "orderpulse.wrote_notifications"

_LAST_DRAWN = text(
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_id_seq"
)
_ANNOUNCE = text(
    "SELECT pg_advisory_xact_lock_shared(:lock_class, "
    "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_id_seq)::int)"
)
_SMALLEST_OPEN_KEY = text(
    "SELECT min(objid::text::bigint) FROM pg_locks WHERE locktype = 'advisory' "
    "AND classid = :lock_class AND objsubid = 2 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


_ANNOUNCING = func.pg_advisory_xact_lock_shared(
    WRITER_LOCK_CLASS,
    literal_column(
        "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END"
        " FROM event_id_seq)::int"
    ),
).label("writer_announced")


def announcing(session: AsyncSession) -> tuple[ColumnElement[Any], ...]:
    """The announcement as a column to RETURN from the transaction's first write (empty when it
    is not needed: SQLite, or already announced), which saves its own round trip.

    Only for a statement that, if it changes no row (and so returns none: no lock was taken), is
    followed by no event in this transaction: the caller raises or returns instead. Every id
    the transaction draws afterwards is above the key, as with `_announce_writer`.
    """
    if session.info.get(WROTE_EVENTS) or session.get_bind().dialect.name != "postgresql":
        return ()
    session.info[WROTE_EVENTS] = True
    return (_ANNOUNCING,)


def self_committing_announcement() -> ColumnElement[Any]:
    """The announcement as a column, for a write that is one self-committing statement (no
    transaction, so nothing to remember it in): RETURN it from the statement's data-modifying
    CTE and take the events from that CTE's rows (`insert_events_from`)."""
    return _ANNOUNCING


def insert_events_from(
    source: CTE, *, from_source: Sequence[str], prefix: str = "event_"
) -> Insert:
    """One INSERT of an event per row `source` returns: the columns `from_source` taken from
    that row, every other one a parameter named `prefix` + column (`event_params`); it RETURNS
    the events' ids. Build it once per shape and reuse it (building costs more than running).

    Run as one statement (on `Database.autocommit`, it is its own transaction). `source` must
    RETURN `self_committing_announcement()`: the INSERT reads each of its rows from the CTE, so
    PostgreSQL evaluates that row's RETURNING (the lock, keyed below any id drawn later) before
    the INSERT draws the event's id, as `announcing` does with two statements; and a source that
    returns no row writes no event and takes no lock.
    """
    table = Event.__table__  # type: ignore[attr-defined]
    values = [
        source.c[name]
        if name in from_source
        else bindparam(prefix + name, type_=table.c[name].type)
        for name in EVENT_COLUMNS
    ]
    return (
        insert(Event)
        .from_select(list(EVENT_COLUMNS), select(*values).select_from(source))
        .returning(col(Event.id))
    )


def event_params(
    row: EventRow, *, from_source: Sequence[str] = (), prefix: str = "event_"
) -> dict[str, Any]:
    """The parameters of `insert_events_from` for the event `row` (its `from_source` columns
    come from the source's row, not from here)."""
    return {prefix + name: row[name] for name in EVENT_COLUMNS if name not in from_source}


async def _announce_writer(session: AsyncSession) -> None:
    """Before this transaction's first event: say, on PostgreSQL, which ids it may still commit."""
    if session.info.get(WROTE_EVENTS):
        return
    session.info[WROTE_EVENTS] = True
    if session.get_bind().dialect.name == "postgresql":
        connection = await session.connection()
        await connection.execute(_ANNOUNCE, {"lock_class": WRITER_LOCK_CLASS})


async def readable_horizon(reader: AsyncSession | AsyncConnection) -> int | None:
    """The highest event id up to which the log is final (None: no limit, as on SQLite).

    Read the events with a later statement than this one (see the module docstring). `reader`
    is a session or a connection; on an autocommit connection (`Database.read_connection`) each
    statement has its own snapshot too, and there is no BEGIN and ROLLBACK around them.
    """
    dialect = reader.dialect if isinstance(reader, AsyncConnection) else reader.get_bind().dialect
    if dialect.name != "postgresql":
        return None
    connection = reader if isinstance(reader, AsyncConnection) else await reader.connection()
    last_drawn = int((await connection.execute(_LAST_DRAWN)).scalar_one())
    open_key = (
        await connection.execute(_SMALLEST_OPEN_KEY, {"lock_class": WRITER_LOCK_CLASS})
    ).scalar_one()
    return last_drawn if open_key is None else min(last_drawn, int(open_key))


EventRow = dict[str, Any]
"""An event's columns (all but its id), as `record_events` writes them. Plain dicts, not `Event`
objects: building a SQLModel table object costs more than writing its row."""


def order_event(
    order: SalesOrder,
    *,
    from_status: str | None,
    to_status: str,
    action: str | None,
    actor: str | None,
    reason: str | None,
    comment: str | None,
    at: datetime,
) -> EventRow:
    """The event of one status change of `order` (from None for a new order), not yet written."""
    assert order.id is not None
    return {
        "topic": TOPIC_ORDER_STATUS,
        "order_id": order.id,
        "reseller_id": order.reseller_id,
        "customer_id": order.customer_id,
        "notification_id": None,
        "recipient_role": None,
        "from_status": from_status,
        "to_status": to_status,
        "action": action,
        "actor": actor,
        "reason": reason,
        "comment": comment,
        "delivery_status": None,
        "occurred_at": at,
        "incident_id": None,
    }


def notification_event(
    *,
    notification_id: int,
    order_id: int,
    reseller_id: int,
    customer_id: int,
    recipient_role: str,
    delivery_status: str,
    at: datetime,
) -> EventRow:
    """The event of a notification created or changed in delivery status, not yet written."""
    return {
        "topic": TOPIC_NOTIFICATION,
        "order_id": order_id,
        "reseller_id": reseller_id,
        "customer_id": customer_id,
        "notification_id": notification_id,
        "recipient_role": recipient_role,
        "from_status": None,
        "to_status": None,
        "action": None,
        "actor": None,
        "reason": None,
        "comment": None,
        "delivery_status": delivery_status,
        "occurred_at": at,
        "incident_id": None,
    }


def incident_event(
    *,
    incident_id: int,
    change: str,
    first_order_id: int,
    reseller_id: int,
    customer_id: int,
    actor: str | None,
    reason: str,
    comment: str | None,
    at: datetime,
) -> EventRow:
    """The event of a change of an incident (`change`: OPENED, JOINED, RESUBMITTED, RESOLVED),
    not yet written. Its order is the incident's first (the tenancy columns are that order's;
    the topic's rule lets only support see it)."""
    return {
        "topic": TOPIC_INCIDENT,
        "order_id": first_order_id,
        "reseller_id": reseller_id,
        "customer_id": customer_id,
        "notification_id": None,
        "recipient_role": None,
        "from_status": None,
        "to_status": None,
        "action": change,
        "actor": actor,
        "reason": reason,
        "comment": comment,
        "delivery_status": None,
        "occurred_at": at,
        "incident_id": incident_id,
    }


EVENT_COLUMNS: tuple[str, ...] = tuple(
    notification_event(
        notification_id=0,
        order_id=0,
        reseller_id=0,
        customer_id=0,
        recipient_role="",
        delivery_status="",
        at=datetime.min,
    )
)
"""The columns an event is written with (all but its id), in `EventRow`'s order."""


async def record_event(session: AsyncSession, row: EventRow) -> Event:
    """One event (`order_event`, `notification_event`), written in the caller's transaction."""
    (event_id,) = await record_events(session, [row])
    return Event(id=event_id, **row)


async def record_notification_event(
    session: AsyncSession, *, notification: Notification, at: datetime
) -> Event:
    """A notification was created or changed delivery status: its event, written."""
    assert notification.id is not None
    row = notification_event(
        notification_id=notification.id,
        order_id=notification.order_id,
        reseller_id=notification.reseller_id,
        customer_id=notification.customer_id,
        recipient_role=notification.recipient_role,
        delivery_status=notification.status,
        at=at,
    )
    return await record_event(session, row)


_INSERT_EVENTS = insert(Event).returning(col(Event.id), sort_by_parameter_order=True)


async def record_events(session: AsyncSession, rows: Sequence[EventRow]) -> list[int]:
    """`rows` written as events in the caller's transaction, with the writer announced first;
    their ids, drawn in the order given.

    One INSERT (of several rows: `sort_by_parameter_order` keeps their ids in the given order;
    SQLite, which cannot promise that, gets one INSERT a row), run on the session's connection
    rather than through the unit of work: the log is only appended to, never read back in the
    writing transaction, so the flush's bookkeeping buys nothing.
    """
    if not rows:
        return []
    await _announce_writer(session)
    connection = await session.connection()
    ids = (await connection.execute(_INSERT_EVENTS, list(rows))).scalars()
    return cast(list[int], list(ids))


def mark_notifications_written(session: AsyncSession) -> None:
    """Tell the unit of work to wake the outbox after commit."""
    session.info[WROTE_NOTIFICATIONS] = True
