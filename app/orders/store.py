"""The order desk's writes, and the one place that chooses how they reach the database.

A use case (app/orders/service.py) reads, applies the rules, and ends with one `OrderChange`: the
order's new values and its event; on PF its `Failure` (who is told, the incident it may open or
join); and any change of the order's customer. `OrderUnit.save` writes it, version-checked
(CONFLICT when the order changed since it was read).

In a transaction (SQLite's, or a caller's: `OrderUnit(session)`) everything is written in it.
`OrderStore.unit()` on PostgreSQL reads on an autocommit connection, and `save` chooses from the
change itself, before writing anything:
- a change of the order alone is one self-committing statement (no BEGIN and COMMIT round
  trips): the status move with its event, or a failure with its notifications and events, which
  asks `incidents.unless_involved` under the reason's lock and writes nothing when an incident is
  involved; `save` then writes the failure itself in a transaction (`incidents.join_failure`);
- a change that also changes the customer (ACTIVATE_ACCOUNT, ATTACH_PAYMENT_METHOD) is written
  in a transaction.
The use case runs once either way. `Database.one_statement_write`'s guard stays behind the choice:
a second write there is a bug, raised, never retried.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Update, bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import CompiledStatement, Database
from app.errors import Conflict
from app.events.log import (
    WROTE_EVENTS,
    EventRow,
    announcing,
    event_params,
    insert_events_from,
    mark_notifications_written,
    record_events,
    self_committing_announcement,
)
from app.incidents import rules as incidents
from app.notifications.models import NotificationKind
from app.notifications.recipients import (
    FailureMail,
    failed_order_params,
    failed_order_statement,
    failure_mail,
    notify_order_failed,
)
from app.orders.models import Customer, SalesOrder
from app.transactions import Transactions


@dataclass(frozen=True)
class Failure:
    """A move to PF: who is told and by which rules it may open or join an incident."""

    mail: FailureMail | None  # read with the order; None: read when written
    support_email: str
    incidents: incidents.IncidentConfig


@dataclass
class OrderChange:
    """What a use case writes: `values` of `order` (as read: its version is checked; updated to
    what was written), its `event`, on PF its `failure`, and `customer`: columns of the order's
    customer that change with it."""

    order: SalesOrder
    values: dict[str, object]
    event: EventRow
    actor: str
    now: datetime
    failure: Failure | None = None
    customer: dict[str, object] = field(default_factory=dict)

    @property
    def is_order_alone(self) -> bool:
        """Whether only the order changes (its notifications and events with it): one statement
        on PostgreSQL."""
        return not self.customer


class OrderUnit:
    """One use case's unit of work: `session` for its reads, `save` for its write, its last step.

    `OrderUnit(session)`: in the caller's transaction. `OrderStore.unit()` makes the others."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        one_statement: tuple[Transactions, AsyncExitStack] | None = None,
    ) -> None:
        self.session = session
        # given: `session` is a one-statement session, ended by the stack; where transactions open
        self._one_statement = one_statement

    async def save(self, change: OrderChange) -> None:
        """Write `change`: in this unit's transaction; or, on a one-statement session, as one
        statement when only the order changes, else (or when the failure's statement wrote
        nothing) in a transaction of its own."""
        if self._one_statement is None:
            await _save_in_transaction(self.session, change)
            return
        if change.is_order_alone and await _save_as_one_statement(self.session, change):
            return
        transactions, reads = self._one_statement
        # this session ends before the transaction checks out its connection: a request holds
        # one connection at a time, so a full pool cannot deadlock requests against each other
        await reads.aclose()
        async with transactions.transaction() as session:
            await _save_in_transaction(session, change)


@dataclass
class OrderStore:
    """Opens the order desk's units of work (see the module's docstring)."""

    db: Database
    transactions: Transactions
    one_statement_writes: bool = True
    """PostgreSQL: whether a change of the order alone is written as one statement."""

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[OrderUnit]:
        """A unit for one use case: on SQLite (or with `one_statement_writes` off) a
        transaction; on PostgreSQL an autocommit session whose `save` chooses."""
        if self.db.is_sqlite or not self.one_statement_writes:
            async with self.transactions.transaction() as session:
                yield OrderUnit(session)
            return
        async with AsyncExitStack() as reads:
            session = await reads.enter_async_context(
                self.transactions.transaction(one_statement=True)
            )
            yield OrderUnit(session, one_statement=(self.transactions, reads))


# --- the statements -------------------------------------------------------------------------------


@functools.cache
def order_change_statement(keys: tuple[str, ...], *, announced: bool) -> Update:
    """The version-checked UPDATE of the order columns `keys` (parameters `order_id`,
    `expected_version` and `new_<column>`, see `order_change_params`), RETURNING the id and,
    if `announced`, the event-log writer's announcement. Built once per shape and reused:
    building a statement costs more than running it."""
    table = SalesOrder.__table__  # type: ignore[attr-defined]
    return (
        update(SalesOrder)
        .where(
            col(SalesOrder.id) == bindparam("order_id"),
            col(SalesOrder.version) == bindparam("expected_version"),
        )
        .values({key: bindparam(f"new_{key}", type_=table.c[key].type) for key in keys})
        .returning(col(SalesOrder.id), *((self_committing_announcement(),) if announced else ()))
    )


def order_change_params(order: SalesOrder, values: dict[str, object]) -> dict[str, object]:
    """The parameters of `order_change_statement(tuple(values))` for `order` as it was read."""
    params = {f"new_{key}": value for key, value in values.items()}
    return {**params, "order_id": order.id, "expected_version": order.version}


@functools.cache
def _compiled_change(
    keys: tuple[str, ...], *, announced: bool, with_event: bool
) -> CompiledStatement:
    """The order change (`order_change_statement`), with its event on PostgreSQL if
    `with_event` (`insert_events_from`: one statement), compiled once."""
    change = order_change_statement(keys, announced=announced)
    if not with_event:
        return CompiledStatement(change)
    return CompiledStatement(insert_events_from(change.cte("changed"), from_source=()))


@functools.cache
def _compiled_failure(
    keys: tuple[str, ...], *, announced: bool, unless_incident: bool
) -> CompiledStatement:
    """A move to PF with its notifications and events (`failed_order_statement`), compiled once;
    `unless_incident`: it writes nothing if the failure opens or joins an incident
    (`incidents.unless_involved`)."""
    change = order_change_statement(keys, announced=announced)
    if unless_incident:
        change = change.where(incidents.unless_involved())
    return CompiledStatement(failed_order_statement(change))


def _conflict() -> Conflict:
    return Conflict("the order was changed by someone else; reload it and try again")


# --- the writes -----------------------------------------------------------------------------------


async def _save_as_one_statement(session: AsyncSession, change: OrderChange) -> bool:
    """PostgreSQL, a change of the order alone, on a one-statement session: its one statement.
    False if a failure's statement wrote nothing: an incident is involved, or the order changed
    meanwhile (the transaction's way tells which)."""
    if change.failure is None:
        await _save_change(session, change.order, change.values, change.now, event=change.event)
        return True
    reason = str(change.values["failure_reason"])
    unless = incidents.unless_involved_params(
        reason=reason, now=change.now, config=change.failure.incidents
    )
    return await _save_failure(session, change, unless_incident=unless)


async def _save_in_transaction(session: AsyncSession, change: OrderChange) -> None:
    """`change`, written in the session's transaction."""
    if change.customer:  # through the ORM: a customer this session read is kept up to date
        customer = await session.get(Customer, change.order.customer_id)
        assert customer is not None
        for key, value in change.customer.items():
            setattr(customer, key, value)
        session.add(customer)
    if change.failure is None:
        await _save_change(session, change.order, change.values, change.now, event=change.event)
    else:
        await _fail(session, change)


async def _save_change(
    session: AsyncSession,
    order: SalesOrder,
    values: dict[str, object],
    now: datetime,
    *,
    event: EventRow | None = None,
) -> None:
    """Write `values` only if nobody changed the order since it was read (else CONFLICT), and
    `event` if given: on PostgreSQL in the same statement (`insert_events_from`)."""
    assert order.id is not None
    values = {**values, "version": order.version + 1, "updated_at": now}
    # On the session's connection: the ORM's UPDATE would look for the order in the session to
    # synchronise it, which the loop below does directly.
    # The event-log writer's announcement rides on it (an order change always records an event).
    connection = await session.connection()
    keys, announced = tuple(values), bool(announcing(session))
    params = order_change_params(order, values)
    with_event = event is not None and connection.dialect.name == "postgresql"
    if event is not None and with_event:
        params |= event_params(event)
        event = None
    statement = _compiled_change(keys, announced=announced, with_event=with_event)
    if len(await statement.all(connection, params)) != 1:
        raise _conflict()
    for key, value in values.items():
        set_committed_value(order, key, value)
    if event is not None:
        await record_events(session, [event])


async def _save_failure(
    session: AsyncSession,
    change: OrderChange,
    *,
    unless_incident: dict[str, object] | None = None,
) -> bool:
    """PostgreSQL: the order's move to PF, its event, its failure notifications and their
    events as one statement (`failed_order_statement`), after one read of who is told (unless
    the mail was read with the order). False if it wrote nothing: the order changed meanwhile,
    or (given `unless_incident`, `incidents.unless_involved_params`) an incident is involved."""
    order, failure = change.order, change.failure
    assert failure is not None
    mail = failure.mail
    if mail is None:
        mail = await failure_mail(
            session, customer_id=order.customer_id, kind=NotificationKind.ORDER_PROVISIONING_FAILED
        )
    values = {**change.values, "version": order.version + 1, "updated_at": change.now}
    announced_before = session.info.get(WROTE_EVENTS)
    keys, announced = tuple(values), bool(announcing(session))
    params = order_change_params(order, values)
    as_read = {key: getattr(order, key) for key in values}
    for key, value in values.items():  # what the mail is rendered from
        set_committed_value(order, key, value)
    params |= failed_order_params(
        order=order,
        mail=mail,
        notifications=mail.order_failed(support_email=failure.support_email),
        event=change.event,
        now=change.now,
    )
    if unless_incident is not None:
        params |= unless_incident
    statement = _compiled_failure(
        keys, announced=announced, unless_incident=unless_incident is not None
    )
    if await statement.all(await session.connection(), params):
        mark_notifications_written(session)
        return True
    # Nothing was written (and no announcement taken): the order is again as it was read.
    for key, value in as_read.items():
        set_committed_value(order, key, value)
    session.info[WROTE_EVENTS] = announced_before
    return False


async def _fail(session: AsyncSession, change: OrderChange) -> None:
    """In a transaction: the move to PF, its notifications and events, and the incident it may
    open or join (SPEC 10, `app.incidents.rules`), decided under the reason's lock."""
    order, values, failure = change.order, dict(change.values), change.failure
    assert failure is not None
    assert order.id is not None
    reason = str(values["failure_reason"])
    joining = await incidents.join_failure(
        session, order_id=order.id, reason=reason, now=change.now, config=failure.incidents
    )
    if joining is None and session.get_bind().dialect.name == "postgresql":
        if not await _save_failure(session, change):
            raise _conflict()
        return
    incident = joining.incident if joining is not None else None
    values["incident_id"] = incident.id if incident is not None else None
    await _save_change(session, order, values, change.now)
    after = []
    if joining is not None and not joining.opened:
        after.append(
            await incidents.joined(
                session, incident=joining.incident, order=order, actor=change.actor, now=change.now
            )
        )
    # The order's event, its notifications' (support's suppressed when the order joined an
    # incident), then the incident's, in one INSERT.
    await notify_order_failed(
        session,
        order=order,
        support_email=failure.support_email,
        now=change.now,
        events_before=[change.event],
        incident_id=incident.id if incident is not None else None,
        events_after=after,
        mail=failure.mail,
    )
    if joining is not None and joining.opened:
        await incidents.record_opening(
            session, joining=joining, actor=change.actor, config=failure.incidents, now=change.now
        )
