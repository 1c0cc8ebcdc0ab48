"""The incident rules of SPEC 10, in one place: when an incident opens, who joins it, which
notifications are suppressed, when support gets a digest, how escalations are grouped, when an
incident resolves itself, and the bulk resubmit.

Every function runs in the caller's transaction and takes the time as `now` (the clock is the
caller's). At most one OPEN incident per reason, also across processes and hosts: whoever
decides about a reason (a failure, a resolution) first takes the reason's transaction-scoped
advisory lock on PostgreSQL (`lock_reason`), so the decisions about one reason run one after
another, each reading what the previous one committed (READ COMMITTED: a statement after the
lock sees every commit before it); SQLite has one writer at a time. The partial unique index
`ux_incident_open_reason` stands behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    text,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access import policy
from app.access.viewer import Viewer
from app.db import UTCDateTime, execute
from app.errors import InvalidTransition, NotFound
from app.events.log import EventRow, incident_event, order_event, record_events
from app.incidents.mail import (
    MAX_LISTED_ORDERS,
    ListedOrder,
    incident_number,
    listed_orders,
    write_incident_mail,
)
from app.incidents.models import Incident, IncidentChangeKind, IncidentStatus
from app.incidents.templates import (
    INCIDENT_DIGEST_TEMPLATE_NAME,
    INCIDENT_OPENED_TEMPLATE_NAME,
    INCIDENT_UNRESOLVED_TEMPLATE_NAME,
)
from app.notifications.models import NotificationKind, RecipientRole
from app.orders import flow
from app.orders.flow import Action, FailureReason, Status
from app.orders.models import Reseller, SalesOrder

INCIDENT_LOCK_CLASS = 0x4950  # "IP": the first key of the per-reason advisory locks
_LOCK = text("SELECT pg_advisory_xact_lock(:lock_class, :reason_key)")
_REASON_KEYS = {reason.value: index for index, reason in enumerate(FailureReason)}
SYSTEM_ACTOR = "SYSTEM"
PF = Status.PF.value
_INCIDENT_COLUMNS = tuple(Incident.__table__.columns)  # type: ignore[attr-defined]
_INCIDENT_KEYS = tuple(c.key for c in _INCIDENT_COLUMNS)


@dataclass(frozen=True)
class IncidentConfig:
    """What the rules need, narrowed from Settings."""

    threshold: int
    window: timedelta
    digest_every: timedelta
    support_email: str


@dataclass(frozen=True)
class Joining:
    """A failure that joins an incident (`opened`: it opened it; `others`: the earlier recent
    failures that join with it)."""

    incident: Incident
    opened: bool
    others: tuple[int, ...] = ()


async def lock_reason(session: AsyncSession, reason: str) -> None:
    """PostgreSQL: wait for, then hold until commit, the right to decide about `reason`'s
    incident. (A text statement: `Database.one_statement_write`'s guard refuses it.)"""
    if session.get_bind().dialect.name == "postgresql":
        connection = await session.connection()
        params = {"lock_class": INCIDENT_LOCK_CLASS, "reason_key": _REASON_KEYS[reason]}
        await connection.execute(_LOCK, params)


# --- the question of every failure on PostgreSQL, inside its one statement -----------------------

INVOLVED_FUNCTION = "orderpulse_incident_involved"
"""PostgreSQL (migration 0006): takes the reason's lock, then answers whether this failure opens
or joins an incident. PL/pgSQL, VOLATILE: its query reads a snapshot taken after the lock (READ
COMMITTED), so it sees every failure committed by the previous holder, in the same statement."""


def unless_involved() -> ColumnElement[bool]:
    """PostgreSQL: a condition for the version-checked UPDATE of an order's move to PF: true
    when no incident is involved (`INVOLVED_FUNCTION`, evaluated once, under the reason's lock).
    The order change then writes nothing when one is, and the caller takes `join_failure`'s way.
    Parameters: `order_id` (the change's own) and `unless_involved_params`. As one self-committing
    statement, the lock lasts until the failure it let through has committed."""
    involved = sa_select(
        getattr(func, INVOLVED_FUNCTION)(
            bindparam("incident_reason", type_=String()),
            bindparam("order_id"),
            bindparam("incident_since", type_=UTCDateTime()),
            bindparam("incident_threshold", type_=Integer()),
            INCIDENT_LOCK_CLASS,
            bindparam("incident_reason_key", type_=Integer()),
        )
    ).scalar_subquery()
    return ~involved


def unless_involved_params(
    *, reason: str, now: datetime, config: IncidentConfig
) -> dict[str, object]:
    return {
        "incident_reason": reason,
        "incident_since": now - config.window,
        "incident_threshold": config.threshold,
        "incident_reason_key": _REASON_KEYS[reason],
    }


async def join_failure(
    session: AsyncSession, *, order_id: int, reason: str, now: datetime, config: IncidentConfig
) -> Joining | None:
    """An order is about to enter PF with `reason` (its change is not written yet): the incident
    it joins, opened now if this failure is the `threshold`-th with the reason within the
    window; None when it is an ordinary failure. Takes the reason's lock first."""
    await lock_reason(session, reason)
    recent = [
        col(SalesOrder.status) == PF,
        col(SalesOrder.failure_reason) == reason,
        col(SalesOrder.failed_at) >= now - config.window,
        col(SalesOrder.id) != order_id,
        col(SalesOrder.incident_id).is_(None),  # a resolved incident keeps its orders
    ]
    recent_count = sa_select(func.count()).where(*recent).scalar_subquery()
    # One statement: the open incident's row (if any) and how many recent failures there are.
    anchor = sa_select(literal(1).label("one")).subquery("anchor")
    query = (
        sa_select(*_INCIDENT_COLUMNS, recent_count)
        .select_from(anchor)
        .outerjoin(
            Incident,
            and_(
                col(Incident.reason) == reason,
                col(Incident.status) == IncidentStatus.OPEN.value,
            ),
        )
    )
    row = (await execute(session, query)).one()
    if row[0] is not None:
        values = dict(zip(_INCIDENT_KEYS, row[: len(_INCIDENT_KEYS)], strict=True))
        return Joining(incident=Incident(**values), opened=False)
    if row[-1] + 1 < config.threshold:
        return None
    found = (await execute(session, sa_select(col(SalesOrder.id)).where(*recent))).scalars()
    others = tuple(sorted(found))
    if len(others) + 1 < config.threshold:
        return None
    incident = Incident(
        reason=reason,
        status=IncidentStatus.OPEN.value,
        opened_at=now,
        last_failure_at=now,
        first_order_id=min((*others, order_id)),
        last_mailed_at=now,
        mailed_order_count=len(others) + 1,
    )
    session.add(incident)
    await session.flush()
    return Joining(incident=incident, opened=True, others=others)


async def joined(
    session: AsyncSession, *, incident: Incident, order: SalesOrder, actor: str, now: datetime
) -> EventRow:
    """An order joins an open incident: its last failure moves to now; the JOINED event (named
    for the order that joined), for the caller to write with the order's own."""
    assert incident.id is not None and order.id is not None
    await execute(
        session, update(Incident).where(col(Incident.id) == incident.id).values(last_failure_at=now)
    )
    return incident_event(
        incident_id=incident.id,
        change=IncidentChangeKind.JOINED.value,
        first_order_id=order.id,
        reseller_id=order.reseller_id,
        customer_id=order.customer_id,
        actor=actor,
        reason=incident.reason,
        comment=None,
        at=now,
    )


async def record_opening(
    session: AsyncSession,
    *,
    joining: Joining,
    actor: str,
    config: IncidentConfig,
    now: datetime,
) -> None:
    """After the move to PF of the order that opened the incident (with its `incident_id`) and
    its notifications are written: the earlier failures join, support gets the opening mail,
    and OPENED is recorded."""
    incident = joining.incident
    assert incident.id is not None and joining.opened
    if joining.others:
        await execute(
            session,
            update(SalesOrder)
            .where(col(SalesOrder.id).in_(joining.others))
            .values(incident_id=incident.id),
        )
    orders = await listed_orders(
        session,
        where=[col(SalesOrder.incident_id) == incident.id],
        newest_first=False,
        limit=MAX_LISTED_ORDERS,
    )
    count = len(joining.others) + 1
    await write_incident_mail(
        session,
        incident=incident,
        kind=NotificationKind.PROVISIONING_INCIDENT_OPENED,
        template_name=INCIDENT_OPENED_TEMPLATE_NAME,
        role=RecipientRole.SUPPORT,
        email=config.support_email,
        orders=orders,
        count=count,
        pending=count,
        new=count,
        reseller_name="",
        now=now,
    )
    await record_change(
        session, incident=incident, change=IncidentChangeKind.OPENED, actor=actor, now=now
    )


async def record_change(
    session: AsyncSession,
    *,
    incident: Incident,
    change: IncidentChangeKind,
    actor: str | None,
    now: datetime,
    comment: str | None = None,
) -> None:
    """The incident's event (published on `incidentChanged` after commit)."""
    assert incident.id is not None
    first = await session.get(SalesOrder, incident.first_order_id)
    assert first is not None
    event = incident_event(
        incident_id=incident.id,
        change=change.value,
        first_order_id=incident.first_order_id,
        reseller_id=first.reseller_id,
        customer_id=first.customer_id,
        actor=actor,
        reason=incident.reason,
        comment=comment,
        at=now,
    )
    await record_events(session, [event])


# --- what a viewer sees of an incident -----------------------------------------------------------


@dataclass(frozen=True)
class IncidentCounts:
    orders: int
    pending: int


async def incident_counts(
    session: AsyncSession, *, viewer: Viewer, incident_id: int
) -> IncidentCounts:
    """The incident's orders the viewer may see, and how many of them are still in PF."""
    query = sa_select(
        func.count(),
        func.coalesce(func.sum(case((col(SalesOrder.status) == PF, 1), else_=0)), 0),
    ).where(col(SalesOrder.incident_id) == incident_id, policy.order_scope(viewer))
    total, pending = (await execute(session, query)).one()
    return IncidentCounts(orders=int(total), pending=int(pending))


async def get_incident(session: AsyncSession, *, viewer: Viewer, incident_id: int) -> Incident:
    """The incident, for support (who manages incidents); NotFound otherwise."""
    policy.require(viewer, policy.Operation.MANAGE_INCIDENTS)
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound("incident not found", field=("incidentId",))
    return incident


# --- support's actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Resubmission:
    incident: Incident
    resubmitted: int
    skipped: int


def _clean_comment(comment: str | None) -> str | None:
    from app.orders.service import clean_comment  # the one rule for operator comments

    return clean_comment(comment, field="comment")


async def resubmit_incident_orders(
    session: AsyncSession,
    *,
    viewer: Viewer,
    incident_id: int,
    comment: str | None,
    now: datetime,
) -> Resubmission:
    """RESUBMIT every order of the incident that is still in PF, each as its own status change
    (event and history entry: actor the viewer, a comment naming the incident). One
    conditional UPDATE is the claim: an order no longer in PF when it runs (changed meanwhile,
    or resubmitted by a concurrent call, whose row lock it waits for) is skipped, never forced;
    a second run resubmits nothing."""
    incident = await get_incident(session, viewer=viewer, incident_id=incident_id)
    comment = _clean_comment(comment)
    transition = flow.find_transition(Action.RESUBMIT, Status.PF)
    assert transition is not None and transition.target is not None
    if viewer.role not in transition.roles:
        raise InvalidTransition("this role may not resubmit failed orders", field=("incidentId",))
    target = transition.target.value
    number = incident_number(incident_id)
    note = f"Resubmitted with incident {number}" + (f": {comment}" if comment else "")
    changed = (
        await execute(
            session,
            update(SalesOrder)
            .where(col(SalesOrder.incident_id) == incident_id, col(SalesOrder.status) == PF)
            .values(status=target, version=col(SalesOrder.version) + 1, updated_at=now)
            .returning(
                col(SalesOrder.id),
                col(SalesOrder.reseller_id),
                col(SalesOrder.customer_id),
            )
            .execution_options(synchronize_session=False),
        )
    ).all()
    rows = sorted(changed)
    events = [
        order_event(
            SalesOrder.model_construct(
                id=order_id, reseller_id=reseller_id, customer_id=customer_id
            ),
            from_status=PF,
            to_status=target,
            action=Action.RESUBMIT.value,
            actor=viewer.actor,
            reason=None,
            comment=note,
            at=now,
        )
        for order_id, reseller_id, customer_id in rows
    ]
    await record_events(session, events)
    counts = await incident_counts(session, viewer=viewer, incident_id=incident_id)
    if rows:
        await record_change(
            session,
            incident=incident,
            change=IncidentChangeKind.RESUBMITTED,
            actor=viewer.actor,
            now=now,
            comment=note,
        )
    return Resubmission(incident=incident, resubmitted=len(rows), skipped=counts.orders - len(rows))


async def resolve_incident(
    session: AsyncSession,
    *,
    viewer: Viewer,
    incident_id: int,
    comment: str | None,
    now: datetime,
) -> Incident:
    """Support closes an open incident: later failures with its reason count afresh."""
    incident = await get_incident(session, viewer=viewer, incident_id=incident_id)
    comment = _clean_comment(comment)
    await lock_reason(session, incident.reason)
    if not await _resolve(session, incident=incident, actor=viewer.actor, comment=comment, now=now):
        raise InvalidTransition("the incident is already resolved", field=("incidentId",))
    await session.refresh(incident)
    return incident


async def _resolve(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: str,
    comment: str | None,
    now: datetime,
    quiet_since: datetime | None = None,
) -> bool:
    """OPEN -> RESOLVED, as a conditional UPDATE (the claim), and its event. With `quiet_since`,
    only if no failure joined since then and no order of the incident is left in PF."""
    conditions = [col(Incident.id) == incident.id, col(Incident.status) == IncidentStatus.OPEN]
    if quiet_since is not None:
        pending = sa_select(col(SalesOrder.id)).where(
            col(SalesOrder.incident_id) == incident.id, col(SalesOrder.status) == PF
        )
        conditions += [col(Incident.last_failure_at) <= quiet_since, ~pending.exists()]
    result = await execute(
        session,
        update(Incident)
        .where(*conditions)
        .values(
            status=IncidentStatus.RESOLVED.value,
            resolved_at=now,
            resolved_by=actor,
            resolution_comment=comment,
        )
        .execution_options(synchronize_session=False),
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await record_change(
        session,
        incident=incident,
        change=IncidentChangeKind.RESOLVED,
        actor=actor,
        now=now,
        comment=comment,
    )
    return True


# --- the background upkeep: digests and resolving quiet incidents ---------------------------


async def open_incident_ids(session: AsyncSession) -> list[int]:
    query = sa_select(col(Incident.id)).where(col(Incident.status) == IncidentStatus.OPEN.value)
    return [int(i) for i in (await execute(session, query.order_by(col(Incident.id)))).scalars()]


async def send_digest(
    session: AsyncSession, *, incident_id: int, config: IncidentConfig, now: datetime
) -> bool:
    """Support's digest of an open incident, at most one every `digest_every`, and only when
    orders joined since the last mail. The conditional UPDATE of `last_mailed_at` is the claim
    (one digest, whatever the number of processes)."""
    incident = await session.get(Incident, incident_id)
    if incident is None or incident.status != IncidentStatus.OPEN.value:
        return False
    if incident.last_mailed_at > now - config.digest_every:
        return False
    everyone = Viewer(role=flow.Role.SUPPORT)
    counts = await incident_counts(session, viewer=everyone, incident_id=incident_id)
    if counts.orders <= incident.mailed_order_count:
        return False
    claimed = await execute(
        session,
        update(Incident)
        .where(
            col(Incident.id) == incident_id,
            col(Incident.status) == IncidentStatus.OPEN.value,
            col(Incident.last_mailed_at) == incident.last_mailed_at,
        )
        .values(last_mailed_at=now, mailed_order_count=counts.orders)
        .execution_options(synchronize_session=False),
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    orders = await listed_orders(
        session,
        where=[col(SalesOrder.incident_id) == incident_id],
        newest_first=True,
        limit=MAX_LISTED_ORDERS,
    )
    await write_incident_mail(
        session,
        incident=incident,
        kind=NotificationKind.PROVISIONING_INCIDENT_DIGEST,
        template_name=INCIDENT_DIGEST_TEMPLATE_NAME,
        role=RecipientRole.SUPPORT,
        email=config.support_email,
        orders=orders,
        count=counts.orders,
        pending=counts.pending,
        new=counts.orders - incident.mailed_order_count,
        reseller_name="",
        now=now,
    )
    return True


async def resolve_if_quiet(
    session: AsyncSession, *, incident_id: int, config: IncidentConfig, now: datetime
) -> bool:
    """Resolve an open incident with no new failure for its window and no order left in PF
    (under the reason's lock, so a failure joining at the same moment is never lost)."""
    incident = await session.get(Incident, incident_id)
    if incident is None or incident.status != IncidentStatus.OPEN.value:
        return False
    if incident.last_failure_at > now - config.window:
        return False
    await lock_reason(session, incident.reason)
    return await _resolve(
        session,
        incident=incident,
        actor=SYSTEM_ACTOR,
        comment="resolved by itself: no new failure within its window and no order left in PF",
        now=now,
        quiet_since=now - config.window,
    )


# --- escalation: one mail per reseller and incident ------------------------------------------


async def overdue_incident_groups(
    session: AsyncSession, *, now: datetime, limit: int = 100
) -> list[tuple[int, int]]:
    """(incident, reseller) pairs with orders still in PF past their deadline, not escalated."""
    query = (
        sa_select(col(SalesOrder.incident_id), col(SalesOrder.reseller_id))
        .where(
            col(SalesOrder.status) == PF,
            col(SalesOrder.sla_deadline) <= now,
            col(SalesOrder.escalated_at).is_(None),
            col(SalesOrder.incident_id).is_not(None),
        )
        .distinct()
        .limit(limit)
    )
    return [(int(i), int(r)) for i, r in (await execute(session, query)).all()]


async def escalate_incident_group(
    session: AsyncSession, *, incident_id: int, reseller_id: int, now: datetime
) -> int:
    """One "Failed Orders Unresolved" mail to the reseller, listing its orders of the incident
    still in PF past their deadline; how many orders it escalated. The conditional UPDATE of
    `escalated_at` is the claim: an order is escalated once, whatever the number of processes."""
    claimed = (
        await execute(
            session,
            update(SalesOrder)
            .where(
                col(SalesOrder.incident_id) == incident_id,
                col(SalesOrder.reseller_id) == reseller_id,
                col(SalesOrder.status) == PF,
                col(SalesOrder.sla_deadline) <= now,
                col(SalesOrder.escalated_at).is_(None),
            )
            .values(escalated_at=now)
            .returning(col(SalesOrder.id))
            .execution_options(synchronize_session=False),
        )
    ).scalars()
    ids = sorted(claimed)
    if not ids:
        return 0
    incident = await session.get(Incident, incident_id)
    reseller = await session.get(Reseller, reseller_id)
    assert incident is not None and reseller is not None
    orders: list[ListedOrder] = await listed_orders(
        session, where=[col(SalesOrder.id).in_(ids)], newest_first=False, limit=None
    )
    await write_incident_mail(
        session,
        incident=incident,
        kind=NotificationKind.FAILED_ORDERS_UNRESOLVED,
        template_name=INCIDENT_UNRESOLVED_TEMPLATE_NAME,
        role=RecipientRole.RESELLER,
        email=reseller.email,
        orders=orders,
        count=len(orders),
        pending=len(orders),
        new=len(orders),
        reseller_name=reseller.name,
        now=now,
    )
    return len(ids)
