"""The order desk's use cases: resellers, customers, placing orders, actions and outcomes.

Each function runs inside the caller's transaction (a session from `Database.write()`), checks
what the viewer may do, writes the rows plus their event-log and outbox rows, and raises a
`DomainError` -- before writing anything -- when the request cannot be done.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from sqlalchemy import Update, bindparam, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access import policy
from app.access.viewer import Viewer
from app.db import (
    CompiledStatement,
    NeedsTransaction,
    detached_instance,
    saved,
    writes_one_statement,
)
from app.errors import BadInput, Conflict, Forbidden, InvalidTransition, NotFound
from app.events.log import (
    WROTE_EVENTS,
    EventRow,
    announcing,
    event_params,
    insert_events_from,
    mark_notifications_written,
    order_event,
    record_event,
    record_events,
    self_committing_announcement,
)
from app.incidents import rules as incidents
from app.notifications.addresses import AddressError, plain_address
from app.notifications.models import NotificationKind
from app.notifications.recipients import (
    ORDER_FAILED_MAIL_PARAMS,
    FailureMail,
    failed_order_params,
    failed_order_statement,
    failure_mail,
    failure_mail_of,
    notify_order_failed,
    with_failure_mail,
)
from app.orders import flow
from app.orders.flow import Action, Check, FailureReason, PaymentMethod, ProvisioningOutcome, Status
from app.orders.models import Customer, OrderItem, Reseller, SalesOrder

R = TypeVar("R")

CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_ITEMS = 100
MAX_QUANTITY = 1_000_000
MAX_AMOUNT = Decimal("1e12")


@dataclass(frozen=True)
class OrderDeskConfig:
    """The configuration the flow needs, narrowed from Settings."""

    approval_threshold: Decimal
    blocked_email_domains: frozenset[str]
    support_email: str
    sla_deadline: Callable[[datetime], datetime]
    incidents: incidents.IncidentConfig


@dataclass(frozen=True)
class ItemInput:
    description: str
    quantity: int
    unit_price: Decimal


# --- validation helpers ---------------------------------------------------------------------------


def clean_name(value: str, *, field: tuple[str, ...], max_length: int = 200) -> str:
    name = value.strip()
    if not name:
        raise BadInput("must not be blank", field=field)
    if len(name) > max_length:
        raise BadInput(f"must be at most {max_length} characters", field=field)
    return name


def clean_email(value: str, *, field: tuple[str, ...]) -> str:
    """The address to store: one plain address (app/notifications/addresses.py), as given, with
    its domain lower-cased; anything else is refused, surrounding spaces included."""
    try:
        return plain_address(value)
    except AddressError as exc:
        raise BadInput("is not a valid e-mail address", field=field) from exc


def clean_money(value: Decimal, *, field: tuple[str, ...], allow_zero: bool = True) -> Decimal:
    try:
        if not value.is_finite():
            raise BadInput("must be a finite number", field=field)
        exponent = value.as_tuple().exponent
    except InvalidOperation as exc:  # pragma: no cover - Decimal parsing guards this
        raise BadInput("must be a number", field=field) from exc
    if value < 0 or (value == 0 and not allow_zero):
        raise BadInput("must not be negative", field=field)
    if value >= MAX_AMOUNT:
        raise BadInput("is too large", field=field)
    if isinstance(exponent, int) and exponent < -4:
        raise BadInput("must have at most 4 decimal places", field=field)
    return value


# --- lookups that respect tenancy ---------------------------------------------------------------


async def visible_row(
    session: AsyncSession, model: type[R], pk: int, visible: Callable[[R], bool], *, field: str
) -> R:
    """The `model` row `pk` if it exists and is `visible`; NotFound (on `field`) otherwise, the
    same answer either way, so a refusal never tells that another tenant's row exists."""
    row = await session.get(model, pk)
    if row is None or not visible(row):
        raise NotFound(f"{model.__name__.lower()} not found", field=(field,))
    return row


async def get_visible_reseller(session: AsyncSession, viewer: Viewer, reseller_id: int) -> Reseller:
    def visible(_: Reseller) -> bool:
        return policy.may_see_reseller(viewer, reseller_id)

    return await visible_row(session, Reseller, reseller_id, visible, field="resellerId")


async def get_visible_customer(session: AsyncSession, viewer: Viewer, customer_id: int) -> Customer:
    def visible(customer: Customer) -> bool:
        return policy.may_see_customer(viewer, customer)

    return await visible_row(session, Customer, customer_id, visible, field="customerId")


_ORDER_TABLE = SalesOrder.__table__  # type: ignore[attr-defined]
_ORDER_KEYS: tuple[str, ...] = tuple(_ORDER_TABLE.columns.keys())
_ORDER_READ = sa_select(*_ORDER_TABLE.columns).where(_ORDER_TABLE.c.id == bindparam("order_id"))
_ORDER_BY_ID = CompiledStatement(_ORDER_READ)
_ORDER_AND_FAILURE_MAIL = CompiledStatement(
    with_failure_mail(_ORDER_READ, _ORDER_TABLE.c.customer_id)
)
_CUSTOMER_ID, _RESELLER_ID = _ORDER_KEYS.index("customer_id"), _ORDER_KEYS.index("reseller_id")


async def get_visible_order(session: AsyncSession, viewer: Viewer, order_id: int) -> SalesOrder:
    """The order if the viewer may see it (`policy.may_see_order`, the in-memory form of
    `policy.order_scope`); NotFound otherwise. Read with a `CompiledStatement` (compiled once,
    run on the driver's connection), not the ORM: the order comes back detached from the
    session, which the order desk's writes never need (they write with statements of their own)."""
    order, _ = await _visible_order(session, viewer, order_id, failure_mail=False)
    return order


async def _visible_order(
    session: AsyncSession, viewer: Viewer, order_id: int, *, failure_mail: bool
) -> tuple[SalesOrder, FailureMail | None]:
    """`get_visible_order`; with `failure_mail` on PostgreSQL, also the mail its failure would
    send (`with_failure_mail`: in the same statement), for a change that moves it to PF."""
    connection = await session.connection()
    with_mail = failure_mail and connection.dialect.name == "postgresql"
    params: dict[str, object] = {"order_id": order_id}
    if with_mail:
        row = await _ORDER_AND_FAILURE_MAIL.first(connection, params | ORDER_FAILED_MAIL_PARAMS)
    else:
        row = await _ORDER_BY_ID.first(connection, params)
    if row is None or not policy.may_see_order(
        viewer, reseller_id=row[_RESELLER_ID], customer_id=row[_CUSTOMER_ID]
    ):
        raise NotFound("order not found", field=("orderId",))
    order = detached_instance(SalesOrder, _ORDER_KEYS, row[: len(_ORDER_KEYS)])
    if not with_mail:
        return order, None
    return order, failure_mail_of(row, kind=NotificationKind.ORDER_PROVISIONING_FAILED)


# --- resellers and customers --------------------------------------------------------------------


async def create_reseller(
    session: AsyncSession, *, viewer: Viewer, name: str, email: str, now: datetime
) -> Reseller:
    policy.require(viewer, policy.Operation.CREATE_RESELLER)
    return await saved(
        session,
        Reseller(
            name=clean_name(name, field=("name",)),
            email=clean_email(email, field=("email",)),
            created_at=now,
        ),
    )


async def create_customer(
    session: AsyncSession,
    *,
    viewer: Viewer,
    reseller_id: int,
    name: str,
    contact_email: str,
    payment_method: PaymentMethod = PaymentMethod.AUTOMATIC,
    on_hold: bool = False,
    requires_verification: bool = False,
    credit_limit: Decimal = Decimal(0),
    now: datetime,
) -> Customer:
    policy.require(viewer, policy.Operation.CREATE_CUSTOMER)
    await get_visible_reseller(session, viewer, reseller_id)
    return await saved(
        session,
        Customer(
            reseller_id=reseller_id,
            name=clean_name(name, field=("name",)),
            contact_email=clean_email(contact_email, field=("contactEmail",)),
            payment_method=payment_method.value,
            on_hold=on_hold,
            requires_verification=requires_verification,
            credit_limit=clean_money(credit_limit, field=("creditLimit",)),
            created_at=now,
        ),
    )


async def update_customer_contact(
    session: AsyncSession, *, viewer: Viewer, customer_id: int, email: str
) -> Customer:
    policy.require(viewer, policy.Operation.UPDATE_CUSTOMER_CONTACT)
    customer = await get_visible_customer(session, viewer, customer_id)
    customer.contact_email = clean_email(email, field=("email",))
    return await saved(session, customer)


# --- orders ---------------------------------------------------------------------------------------


def _check_facts(
    customer: Customer, order_total: Decimal, config: OrderDeskConfig
) -> flow.CheckFacts:
    return flow.CheckFacts(
        customer_on_hold=customer.on_hold,
        customer_requires_verification=customer.requires_verification,
        payment_method=PaymentMethod(customer.payment_method),
        contact_email=customer.contact_email,
        credit_limit=customer.credit_limit,
        total=order_total,
        approval_threshold=config.approval_threshold,
        blocked_email_domains=config.blocked_email_domains,
    )


def _settled(order: SalesOrder) -> frozenset[Check]:
    return frozenset(Check(c) for c in order.settled_checks.split(",") if c)


def validate_items(items: Sequence[ItemInput]) -> list[ItemInput]:
    if not items:
        raise BadInput("an order needs at least one item", field=("items",))
    if len(items) > MAX_ITEMS:
        raise BadInput(f"an order has at most {MAX_ITEMS} items", field=("items",))
    cleaned = []
    for index, item in enumerate(items):
        path = ("items", str(index))
        if not 0 < item.quantity <= MAX_QUANTITY:
            raise BadInput(f"must be between 1 and {MAX_QUANTITY}", field=(*path, "quantity"))
        cleaned.append(
            ItemInput(
                description=clean_name(
                    item.description, field=(*path, "description"), max_length=500
                ),
                quantity=item.quantity,
                unit_price=clean_money(item.unit_price, field=(*path, "unitPrice")),
            )
        )
    return cleaned


async def place_order(
    session: AsyncSession,
    *,
    viewer: Viewer,
    customer_id: int,
    order_type: flow.OrderType,
    currency: str,
    items: Sequence[ItemInput],
    config: OrderDeskConfig,
    now: datetime,
) -> SalesOrder:
    """Place an order, run the automatic checks, and record one event (None -> resting status)."""
    policy.require(viewer, policy.Operation.PLACE_ORDER)
    customer = await get_visible_customer(session, viewer, customer_id)
    currency = currency.strip().upper()
    if not CURRENCY.match(currency):
        raise BadInput("must be a three-letter currency code", field=("currency",))
    cleaned = validate_items(items)
    total = sum((i.unit_price * i.quantity for i in cleaned), Decimal(0))
    if total >= MAX_AMOUNT:
        raise BadInput("the order total is too large", field=("items",))
    status, _ = flow.run_checks(_check_facts(customer, total, config), settled=frozenset())
    order = SalesOrder(
        number=f"pending-{uuid.uuid4().hex[:24]}",  # fits String(32)
        type=order_type.value,
        customer_id=customer_id,
        reseller_id=customer.reseller_id,
        currency=currency,
        total=total,
        status=status.value,
        created_at=now,
        updated_at=now,
    )
    session.add(order)
    await session.flush()
    assert order.id is not None
    order.number = f"{order_type.value}-{order.id:06d}"
    for position, item in enumerate(cleaned):
        session.add(
            OrderItem(
                order_id=order.id,
                position=position,
                description=item.description,
                quantity=item.quantity,
                unit_price=item.unit_price,
            )
        )
    await session.flush()
    await record_event(
        session,
        order_event(
            order,
            from_status=None,
            to_status=status.value,
            action="PLACE_ORDER",
            actor=viewer.actor,
            reason=None,
            comment=None,
            at=now,
        ),
    )
    return order


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
    order: SalesOrder,
    values: dict[str, object],
    now: datetime,
    *,
    event: EventRow,
    config: OrderDeskConfig,
    mail: FailureMail | None,
    unless_incident: dict[str, object] | None = None,
) -> bool:
    """PostgreSQL: the order's move to PF, its `event`, its failure notifications and their
    events as one statement (`failed_order_statement`), after one read of who is told (unless
    `mail` was read with the order). False if it wrote nothing: the order changed meanwhile, or
    (given `unless_incident`, `incidents.unless_involved_params`) an incident is involved."""
    if mail is None:
        mail = await failure_mail(
            session, customer_id=order.customer_id, kind=NotificationKind.ORDER_PROVISIONING_FAILED
        )
    values = {**values, "version": order.version + 1, "updated_at": now}
    announced_before = session.info.get(WROTE_EVENTS)
    keys, announced = tuple(values), bool(announcing(session))
    params = order_change_params(order, values)
    as_read = {key: getattr(order, key) for key in values}
    for key, value in values.items():  # what the mail is rendered from
        set_committed_value(order, key, value)
    params |= failed_order_params(
        order=order,
        mail=mail,
        notifications=mail.order_failed(support_email=config.support_email),
        event=event,
        now=now,
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


async def _move(
    session: AsyncSession,
    *,
    order: SalesOrder,
    to: Status,
    action: str,
    viewer: Viewer,
    config: OrderDeskConfig,
    now: datetime,
    reason: FailureReason | None = None,
    details: str | None = None,
    comment: str | None = None,
    extra: dict[str, object] | None = None,
    mail: FailureMail | None = None,
) -> None:
    """Move the order to `to`, record the event, and raise the failure notifications on PF
    (from `mail` if it was read with the order)."""
    source = order.status
    values: dict[str, object] = {"status": to.value, **(extra or {})}
    if to is Status.PF:
        failure = reason or FailureReason.SERVICE_CREATION_FAILED
        values.update(
            failure_reason=failure.value,
            failure_details=details,
            failed_at=now,
            sla_deadline=config.sla_deadline(now),
            escalated_at=None,
        )
    event = order_event(
        order,
        from_status=source,
        to_status=to.value,
        action=action,
        actor=viewer.actor,
        reason=str(values["failure_reason"]) if to is Status.PF else None,
        comment=comment,
        at=now,
    )
    if to is Status.PF:
        await _fail(
            session,
            order=order,
            values=values,
            event=event,
            viewer=viewer,
            config=config,
            now=now,
            mail=mail,
        )
    else:
        await _save_change(session, order, values, now, event=event)


_VERSION_NOW = CompiledStatement(
    sa_select(_ORDER_TABLE.c.version).where(_ORDER_TABLE.c.id == bindparam("order_id"))
)


async def _version_now(session: AsyncSession, order_id: int) -> int | None:
    row = await _VERSION_NOW.first(await session.connection(), {"order_id": order_id})
    return None if row is None else int(row[0])


async def _fail(
    session: AsyncSession,
    *,
    order: SalesOrder,
    values: dict[str, object],
    event: EventRow,
    viewer: Viewer,
    config: OrderDeskConfig,
    now: datetime,
    mail: FailureMail | None,
) -> None:
    """The move to PF, its notifications and events, and the incident it may open or join
    (SPEC 10, `app.incidents.rules`). On PostgreSQL an ordinary failure stays one statement,
    which asks `incidents.unless_involved` under the reason's lock; when an incident is
    involved it writes nothing, and the failure is made again here in a transaction."""
    assert order.id is not None
    reason = str(values["failure_reason"])
    values["incident_id"] = None
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres and writes_one_statement(await session.connection()):
        unless = incidents.unless_involved_params(reason=reason, now=now, config=config.incidents)
        if await _save_failure(
            session,
            order,
            values,
            now,
            event=event,
            config=config,
            mail=mail,
            unless_incident=unless,
        ):
            return  # an ordinary failure: one statement
        if await _version_now(session, order.id) != order.version:
            raise _conflict()  # changed meanwhile, as on any path
        raise NeedsTransaction  # an incident: nothing was written; again, in a transaction
    joining = await incidents.join_failure(
        session, order_id=order.id, reason=reason, now=now, config=config.incidents
    )
    if joining is None and postgres:
        if not await _save_failure(
            session, order, values, now, event=event, config=config, mail=mail
        ):
            raise _conflict()
        return
    incident = joining.incident if joining is not None else None
    values["incident_id"] = incident.id if incident is not None else None
    await _save_change(session, order, values, now)
    after = []
    if joining is not None and not joining.opened:
        after.append(
            await incidents.joined(
                session, incident=joining.incident, order=order, actor=viewer.actor, now=now
            )
        )
    # The order's event, its notifications' (support's suppressed when the order joined an
    # incident), then the incident's, in one INSERT.
    await notify_order_failed(
        session,
        order=order,
        support_email=config.support_email,
        now=now,
        events_before=[event],
        incident_id=incident.id if incident is not None else None,
        events_after=after,
        mail=mail,
    )
    if joining is not None and joining.opened:
        await incidents.record_opening(
            session, joining=joining, actor=viewer.actor, config=config.incidents, now=now
        )


def clean_comment(value: str | None, *, field: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > 2000:
        raise BadInput("must be at most 2000 characters", field=(field,))
    return value or None


async def perform_order_action(
    session: AsyncSession,
    *,
    viewer: Viewer,
    order_id: int,
    action: Action,
    reason: FailureReason | None = None,
    comment: str | None = None,
    expected_version: int | None = None,
    config: OrderDeskConfig,
    now: datetime,
) -> SalesOrder:
    """Apply one row of the action table to the order."""
    policy.require(viewer, policy.Operation.ORDER_ACTION)
    order, mail = await _visible_order(
        session, viewer, order_id, failure_mail=action is Action.MARK_FAILED
    )
    comment = clean_comment(comment, field="comment")
    if expected_version is not None and expected_version != order.version:
        raise Conflict(
            f"the order is at version {order.version}, not {expected_version}",
            field=("expectedVersion",),
        )
    source = Status(order.status)
    transition = flow.find_transition(action, source)
    if transition is None:
        raise InvalidTransition(
            f"{action.value} is not possible from {source.value}", field=("action",)
        )
    if viewer.role not in transition.roles:
        raise Forbidden(
            f"the {viewer.role.value} role may not {action.value} from {source.value}",
            field=("action",),
        )
    if reason is not None and action is not Action.MARK_FAILED:
        raise BadInput("a reason is only given with MARK_FAILED", field=("reason",))

    extra: dict[str, object] = {}
    target = transition.target
    if target is None:  # "checks": settle one check, then continue from the next
        assert transition.settles is not None
        customer = await session.get(Customer, order.customer_id)
        assert customer is not None
        if action is Action.ACTIVATE_ACCOUNT:
            customer.requires_verification = False
            session.add(customer)
        elif action is Action.ATTACH_PAYMENT_METHOD:
            customer.payment_method = PaymentMethod.AUTOMATIC.value
            session.add(customer)
        settled = _settled(order) | {transition.settles}
        extra["settled_checks"] = ",".join(sorted(settled))
        target, _ = flow.run_checks(
            _check_facts(customer, order.total, config), settled=settled, after=transition.settles
        )
    failure_reason = None
    if target is Status.PF:
        failure_reason = reason or FailureReason.MARKED_FAILED_MANUALLY
    await _move(
        session,
        order=order,
        to=target,
        action=action.value,
        viewer=viewer,
        config=config,
        now=now,
        reason=failure_reason,
        details=comment if target is Status.PF else None,
        comment=comment,
        extra=extra,
        mail=mail,
    )
    return order


async def report_provisioning_result(
    session: AsyncSession,
    *,
    viewer: Viewer,
    order_id: int,
    outcome: ProvisioningOutcome,
    reason: FailureReason | None,
    details: str | None,
    config: OrderDeskConfig,
    now: datetime,
) -> SalesOrder:
    """The provisioning platform reports what happened to an order in PR or LO."""
    policy.require(viewer, policy.Operation.REPORT_PROVISIONING)
    order, mail = await _visible_order(
        session, viewer, order_id, failure_mail=outcome is ProvisioningOutcome.FAILED
    )
    details = clean_comment(details, field="details")
    source = Status(order.status)
    if source not in flow.OUTCOME_SOURCES:
        raise InvalidTransition(
            f"a provisioning result is only accepted in PR or LO, not {source.value}",
            field=("outcome",),
        )
    if outcome is ProvisioningOutcome.FAILED:
        if reason is None:
            raise BadInput("a failed outcome needs a reason", field=("reason",))
        if reason is FailureReason.OTHER and not details:
            raise BadInput("the OTHER reason needs details", field=("details",))
    elif reason is not None:
        raise BadInput("a reason is only given with a FAILED outcome", field=("reason",))
    target = flow.OUTCOME_TARGETS[outcome]
    if target is Status.CP:
        customer = await session.get(Customer, order.customer_id)
        assert customer is not None
        target = flow.succeeded_status(
            payment_method=PaymentMethod(customer.payment_method),
            payment_recorded=Check.PAYMENT in _settled(order),
        )
    await _move(
        session,
        order=order,
        to=target,
        action=f"REPORT_{outcome.value}",
        viewer=viewer,
        config=config,
        now=now,
        reason=reason,
        details=details,
        comment=details,
        mail=mail,
    )
    return order
