"""The order desk's use cases: resellers, customers, placing orders, actions and outcomes.

Each function checks what the viewer may do and raises a `DomainError` -- before writing
anything -- when the request cannot be done. Most run inside the caller's transaction (a session
from `Database.write()`) and write their rows plus their event-log and outbox rows. An order's
action or outcome reads and decides here, then hands its one `OrderChange` to its `OrderUnit`
(app/orders/store.py), which chooses how it is written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access import policy
from app.access.viewer import Viewer
from app.db import CompiledStatement, detached_instance, saved
from app.errors import BadInput, Conflict, Forbidden, InvalidTransition, NotFound
from app.events.log import order_event, record_event
from app.incidents import rules as incidents
from app.notifications.addresses import AddressError, plain_address
from app.notifications.models import NotificationKind
from app.notifications.recipients import (
    ORDER_FAILED_MAIL_PARAMS,
    FailureMail,
    failure_mail_of,
    with_failure_mail,
)
from app.orders import flow
from app.orders.flow import Action, Check, FailureReason, PaymentMethod, ProvisioningOutcome, Status
from app.orders.models import Customer, OrderItem, Reseller, SalesOrder
from app.orders.store import Failure, OrderChange, OrderUnit

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


def _change(
    order: SalesOrder,
    *,
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
    customer: dict[str, object] | None = None,
) -> OrderChange:
    """The order's move to `to` with its event; on PF its failure (told from `mail` if it was
    read with the order); `customer`: what changes on the order's customer with it."""
    values: dict[str, object] = {"status": to.value, **(extra or {})}
    failure = None
    if to is Status.PF:
        values.update(
            failure_reason=(reason or FailureReason.SERVICE_CREATION_FAILED).value,
            failure_details=details,
            failed_at=now,
            sla_deadline=config.sla_deadline(now),
            escalated_at=None,
            incident_id=None,  # the store sets it when the failure joins an incident
        )
        failure = Failure(mail=mail, support_email=config.support_email, incidents=config.incidents)
    event = order_event(
        order,
        from_status=order.status,
        to_status=to.value,
        action=action,
        actor=viewer.actor,
        reason=str(values["failure_reason"]) if to is Status.PF else None,
        comment=comment,
        at=now,
    )
    return OrderChange(
        order=order,
        values=values,
        event=event,
        actor=viewer.actor,
        now=now,
        failure=failure,
        customer=customer or {},
    )


def clean_comment(value: str | None, *, field: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > 2000:
        raise BadInput("must be at most 2000 characters", field=(field,))
    return value or None


async def perform_order_action(
    unit: OrderUnit,
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
    session = unit.session
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
    customer_change: dict[str, object] = {}
    target = transition.target
    if target is None:  # "checks": settle one check, then continue from the next
        assert transition.settles is not None
        customer = await session.get(Customer, order.customer_id)
        assert customer is not None
        facts = _check_facts(customer, order.total, config)
        if action is Action.ACTIVATE_ACCOUNT:
            customer_change["requires_verification"] = False
            facts = replace(facts, customer_requires_verification=False)
        elif action is Action.ATTACH_PAYMENT_METHOD:
            customer_change["payment_method"] = PaymentMethod.AUTOMATIC.value
            facts = replace(facts, payment_method=PaymentMethod.AUTOMATIC)
        settled = _settled(order) | {transition.settles}
        extra["settled_checks"] = ",".join(sorted(settled))
        target, _ = flow.run_checks(facts, settled=settled, after=transition.settles)
    failure_reason = None
    if target is Status.PF:
        failure_reason = reason or FailureReason.MARKED_FAILED_MANUALLY
    change = _change(
        order,
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
        customer=customer_change,
    )
    await unit.save(change)
    return order


async def report_provisioning_result(
    unit: OrderUnit,
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
    session = unit.session
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
    change = _change(
        order,
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
    await unit.save(change)
    return order
