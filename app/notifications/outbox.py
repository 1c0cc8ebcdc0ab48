"""Delivering notification mail from the durable outbox (the PENDING `Notification` rows).

Each delivery takes three steps, none of which holds a transaction open across the network:

1. `claim_due` leases due rows (`lease_until = now + ORDERPULSE_DELIVERY_LEASE_SECONDS`) with one
   UPDATE ... RETURNING, its own transaction: over `SELECT ... FOR UPDATE SKIP LOCKED` on
   PostgreSQL (committed by itself, no BEGIN and COMMIT round trips), so many workers share the
   outbox; on SQLite (one writer, under the write lock) the conditional UPDATE alone is the claim.
2. The mail is sent through a `Mailer`, outside any transaction, with the notification's own
   Message-ID (made when the row was written, so every resend carries the same one). While it is
   being sent, the worker renews its lease every third of the lease time, so the lease can be
   short (15 s by default) however long a mail server takes: a worker that dies stops renewing,
   and its rows are claimed again within one lease time.
3. The outcome is recorded in a new short transaction, guarded by the lease: only the worker that
   still holds it may change the row. Sent -> SENT; a transient error (4xx, no connection, timeout)
   -> stays PENDING with `attempts`, `last_error` and an exponentially later `next_attempt_at`; a
   permanent error (5xx) or the last allowed attempt -> FAILED.

A process killed at any point loses nothing: a row is only ever changed from PENDING by step 3,
after the mail server answered. A row whose worker died is claimed again once its lease expires,
so delivery is at least once, and exactly once when the crash came before the SMTP transaction.

Every change of delivery status (to SENT or FAILED) writes a notification event, so
`notificationChanged` subscribers see it. A failed attempt that leaves the row PENDING changes only
`attempts`, `last_error` and `next_attempt_at` and writes no event: the delivery status did not
change (SPEC 4), and a mail server that is down for an hour should not flood every panel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Update,
    and_,
    bindparam,
    case,
    func,
    or_,
    update,
)
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Clock, CompiledStatement, Database
from app.events.log import (
    EventRow,
    announcing,
    event_params,
    insert_events_from,
    notification_event,
    record_events,
    self_committing_announcement,
)
from app.notifications.mailer import DeliveryError, FileMailer, Mailer, OutgoingMail, SmtpMailer
from app.notifications.models import DeliveryStatus, Notification
from app.observability import metrics
from app.outages import is_outage, log_failure
from app.settings import Settings

log = logging.getLogger("orderpulse.outbox")

PENDING, SENT, FAILED = (
    DeliveryStatus.PENDING.value,
    DeliveryStatus.SENT.value,
    DeliveryStatus.FAILED.value,
)

# How many mails one process sends at the same time.
DEFAULT_CONCURRENCY = 8
# The longest wait between two attempts, however many attempts were made.
MAX_BACKOFF = timedelta(hours=6)
# The loop never waits less than this between passes (a guard against a hot loop).
MIN_WAIT_SECONDS = 0.01
MAX_ERROR_LENGTH = 1000


UnitOfWork = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""A write transaction that, after commit, wakes whoever reads what it wrote."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """The delivery settings, narrowed from Settings."""

    mail_from: str
    lease_seconds: float
    retry_seconds: float
    max_attempts: int
    poll_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            mail_from=settings.mail_from,
            lease_seconds=settings.delivery_lease_seconds,
            retry_seconds=settings.delivery_retry_seconds,
            max_attempts=settings.delivery_max_attempts,
            poll_seconds=settings.outbox_poll_seconds,
        )

    @property
    def renew_every_seconds(self) -> float:
        """How often a lease is renewed while its mail is being sent."""
        return self.lease_seconds / 3


async def _no_one_to_tell() -> None:
    return None


@dataclass(frozen=True)
class Outbox:
    """What delivering from the outbox needs: the database, the clock and the policy, and, for
    a write that commits events outside `transaction`, whom to tell after (the event bus)."""

    transaction: UnitOfWork
    db: Database
    clock: Clock
    policy: DeliveryPolicy
    events_committed: Callable[[], Awaitable[None]] = _no_one_to_tell


@dataclass
class Claim:
    """A notification leased to this worker until `lease_until`, with what its mail needs."""

    id: int
    attempts: int
    lease_until: datetime
    """When the lease runs out; moved on each renewal."""
    mail: OutgoingMail
    kind: str = ""

    def still_held(self) -> tuple[ColumnElement[bool], ...]:
        """The conditions under which the notification's row is still this claim's: PENDING with
        the lease this worker last wrote (another worker that took it over wrote a new one)."""
        return (
            col(Notification.id) == self.id,
            col(Notification.status) == PENDING,
            col(Notification.lease_until) == self.lease_until,
        )


class Outcome(Enum):
    """What became of one claimed delivery."""

    SENT = "sent"
    RETRYING = "retrying"  # still PENDING, with a later next_attempt_at
    FAILED = "failed"
    LEASE_LOST = "lease_lost"  # another worker took the row over; nothing was recorded


@dataclass(frozen=True)
class DeliveryReport:
    """How a `deliver_due` pass went."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    lease_lost: int = 0

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> DeliveryReport:
        return cls(
            sent=outcomes.count(Outcome.SENT),
            retrying=outcomes.count(Outcome.RETRYING),
            failed=outcomes.count(Outcome.FAILED),
            lease_lost=outcomes.count(Outcome.LEASE_LOST),
        )


def _is_due(now: datetime) -> ColumnElement[bool]:
    """PENDING, its next attempt due, and nobody holding a live lease on it."""
    return and_(
        col(Notification.status) == PENDING,
        or_(col(Notification.next_attempt_at).is_(None), col(Notification.next_attempt_at) <= now),
        or_(col(Notification.lease_until).is_(None), col(Notification.lease_until) <= now),
    )


def retry_delay(*, retry_seconds: float, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: retry_seconds, doubling, capped."""
    exponent = min(max(attempts - 1, 0), 32)
    return min(timedelta(seconds=retry_seconds * 2**exponent), MAX_BACKOFF)


class _Claimed(NamedTuple):
    id: int
    attempts: int
    message_id: str
    email: str
    subject: str
    body: str
    next_attempt_at: datetime | None
    kind: str


def _claim_statement(now: Any, lease_until: Any, limit: Any, *, skip_locked: bool) -> Update:
    """Lease up to `limit` due rows until `lease_until`, RETURNING what the mail needs."""
    due = (
        select(Notification.id)
        .where(_is_due(now))
        .order_by(col(Notification.next_attempt_at), col(Notification.id))
        .limit(limit)
    )
    if skip_locked:
        # Rows another worker is claiming right now are skipped, not waited for.
        due = due.with_for_update(skip_locked=True)
    return (
        update(Notification)
        .where(col(Notification.id).in_(due.scalar_subquery()), _is_due(now))
        .values(lease_until=lease_until)
        .returning(*(col(getattr(Notification, name)) for name in _Claimed._fields))
    )


_table = Notification.__table__  # type: ignore[attr-defined]
_CLAIM = CompiledStatement(  # PostgreSQL's claim, compiled once (see `CompiledStatement`)
    _claim_statement(
        bindparam("now", type_=_table.c.next_attempt_at.type),
        bindparam("lease_until", type_=_table.c.lease_until.type),
        bindparam("limit", type_=Integer()),
        skip_locked=True,
    )
)


async def claim_due(outbox: Outbox, *, limit: int) -> list[Claim]:
    """Lease up to `limit` due notifications to this worker (oldest due first)."""
    if limit <= 0:
        return []
    now = outbox.clock.now()
    lease_until = now + timedelta(seconds=outbox.policy.lease_seconds)
    if outbox.db.is_sqlite:  # one writer at a time: the conditional UPDATE alone is the claim
        claim = _claim_statement(now, lease_until, limit, skip_locked=False)
        async with outbox.transaction() as session:
            claimed = [tuple(r) for r in (await (await session.connection()).execute(claim))]
    else:  # one statement: it commits on its own
        async with outbox.db.autocommit() as conn:
            params = {"now": now, "lease_until": lease_until, "limit": limit}
            claimed = await _CLAIM.all(conn, params)
    rows = [_Claimed(*row) for row in sorted(claimed, key=lambda r: (r[6], r[0]))]
    sender = outbox.policy.mail_from
    return [
        Claim(
            id=row.id,
            attempts=row.attempts,
            lease_until=lease_until,
            kind=row.kind,
            mail=OutgoingMail(
                message_id=row.message_id,
                sender=sender,
                recipient=row.email,
                subject=row.subject,
                body=row.body,
            ),
        )
        for row in rows
    ]


async def renew_lease(outbox: Outbox, claim: Claim) -> bool:
    """Extend the claim's lease by a lease time from now; False if it is no longer this worker's."""
    lease_until = outbox.clock.now() + timedelta(seconds=outbox.policy.lease_seconds)
    async with outbox.transaction() as session:
        result = await session.exec(
            update(Notification).where(*claim.still_held()).values(lease_until=lease_until)
        )
    if result.rowcount != 1:
        return False
    claim.lease_until = lease_until
    return True


async def _keep_leased(outbox: Outbox, claim: Claim) -> None:
    """Renew the lease every `renew_every_seconds` until cancelled or the lease is lost."""
    while True:
        await asyncio.sleep(outbox.policy.renew_every_seconds)
        try:
            if not await renew_lease(outbox, claim):
                log.warning("notification %s: another worker took the lease over", claim.id)
                return
        except Exception as error:  # the database may be away a moment; again at the next renewal
            log_failure(log, "notification %s: could not renew the lease", error, claim.id)


async def deliver_claim(outbox: Outbox, mailer: Mailer, claim: Claim) -> Outcome:
    """Send one claimed notification (renewing its lease meanwhile) and record what happened."""
    renewing = asyncio.create_task(_keep_leased(outbox, claim), name=f"lease-{claim.id}")
    error: DeliveryError | None = None
    try:
        await mailer.send(claim.mail)
    except DeliveryError as exc:
        error = exc
    except Exception as exc:  # an outage, a bug or an unforeseen library error: retry, say so
        log_failure(log, "could not send notification %s", exc, claim.id)
        error = DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
    return await _record_through_outage(outbox, claim, error=error)


RECORD_RETRY_SECONDS = 0.25
"""How often a worker tries again to record an outcome while the database is away."""


async def _record_through_outage(
    outbox: Outbox, claim: Claim, *, error: DeliveryError | None
) -> Outcome:
    """`_record`, tried again while the database is away, for up to a lease time: a mail the
    server accepted just before an outage is recorded SENT once the database is back, instead of
    waiting for its lease to end and being sent again by another worker. The UPDATE only touches
    the row while this claim still holds it, so a late try changes nothing once another worker
    has taken it over; an error that is not an outage is raised at once."""
    deadline = asyncio.get_running_loop().time() + outbox.policy.lease_seconds
    while True:
        try:
            return await _record(outbox, claim, error=error)
        except Exception as exc:
            if not is_outage(exc) or asyncio.get_running_loop().time() >= deadline:
                raise
            log_failure(log, "notification %s: could not record its outcome yet", exc, claim.id)
            await asyncio.sleep(RECORD_RETRY_SECONDS)


async def _record(outbox: Outbox, claim: Claim, *, error: DeliveryError | None) -> Outcome:
    policy = outbox.policy
    now = outbox.clock.now()
    attempts = claim.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "lease_until": None}
    if error is None:
        outcome = Outcome.SENT
        values.update(status=SENT, sent_at=now, next_attempt_at=None)
    else:
        values["last_error"] = error.message[:MAX_ERROR_LENGTH]
        if error.permanent or attempts >= policy.max_attempts:
            outcome = Outcome.FAILED
            values.update(status=FAILED, next_attempt_at=None)
        else:
            outcome = Outcome.RETRYING
            delay = retry_delay(retry_seconds=policy.retry_seconds, attempts=attempts)
            values["next_attempt_at"] = now + delay
    if not outbox.db.is_sqlite:
        recorded = await _record_in_one_statement(outbox, claim, values, outcome, now)
        if not recorded:
            return _lease_lost(claim, outcome)
        return _recorded(claim, values, outcome, error)
    async with outbox.transaction() as session:
        # A change of delivery status records an event: the writer's announcement rides on the
        # UPDATE (when the row is no longer this claim's, nothing is locked and nothing follows).
        announced = announcing(session) if outcome is not Outcome.RETRYING else ()
        record = (
            update(Notification)
            .where(*claim.still_held())
            .values(**values)
            .returning(
                col(Notification.order_id),
                col(Notification.reseller_id),
                col(Notification.customer_id),
                col(Notification.recipient_role),
                *announced,
            )
        )
        changed = (await (await session.connection()).execute(record)).first()
        if changed is None:
            return _lease_lost(claim, outcome)
        if outcome is not Outcome.RETRYING:
            event = notification_event(
                notification_id=claim.id,
                order_id=changed.order_id,
                reseller_id=changed.reseller_id,
                customer_id=changed.customer_id,
                recipient_role=changed.recipient_role,
                delivery_status=str(values["status"]),
                at=now,
            )
            await record_events(session, [event])
    return _recorded(claim, values, outcome, error)


async def _record_in_one_statement(
    outbox: Outbox, claim: Claim, values: dict[str, object], outcome: Outcome, now: datetime
) -> bool:
    """PostgreSQL: the outcome's UPDATE, and with a new delivery status its event, as one
    self-committing statement (no BEGIN and COMMIT round trips, one statement instead of two);
    False if the row is no longer this claim's (nothing written)."""
    params = {**status_change_params(claim, values), "claim_lease_until": claim.lease_until}
    if outcome is Outcome.RETRYING:  # no new delivery status: no event
        async with outbox.db.autocommit() as conn:
            write = _compiled(outcome_statement(tuple(values), announced=False))
            return len(await write.all(conn, params)) == 1
    try:
        async with outbox.db.autocommit() as conn:
            statement = _compiled(status_change_statement(tuple(values)))
            params |= event_params(status_change_event(claim, values, now), from_source=_OWN)
            return len(await statement.all(conn, params)) == 1
    finally:  # committed, or ended: readers held back by its lock may go on
        await outbox.events_committed()


@functools.cache
def _compiled(statement: Insert | Update) -> CompiledStatement:
    return CompiledStatement(statement)


_OWN = ("order_id", "reseller_id", "customer_id", "recipient_role")
"""The columns a notification's event copies from the notification."""


@functools.cache
def outcome_statement(keys: tuple[str, ...], *, announced: bool) -> Update:
    """The UPDATE of a claimed row's columns `keys` (parameters `new_<column>`), only while it
    is still the claim's (`claim_id`, `claim_lease_until`, as `Claim.still_held`), RETURNING
    what its event copies and, if `announced`, the writer's announcement. Built once per
    shape and reused (building a statement costs more than running it)."""
    table = Notification.__table__  # type: ignore[attr-defined]
    return (
        update(Notification)
        .where(
            col(Notification.id) == bindparam("claim_id"),
            col(Notification.status) == PENDING,
            col(Notification.lease_until) == bindparam("claim_lease_until"),
        )
        .values({key: bindparam(f"new_{key}", type_=table.c[key].type) for key in keys})
        .returning(
            *(table.c[name] for name in _OWN),
            *((self_committing_announcement(),) if announced else ()),
        )
    )


@functools.cache
def status_change_statement(keys: tuple[str, ...]) -> Insert:
    """A claimed row's new delivery status (`outcome_statement(keys)`, which sets `status`) and,
    if it was still the claim's, its notification event: one statement (app/events/log.py,
    `insert_events_from`) that RETURNS the event's id (no row: the lease was lost, nothing
    written). Parameters: `status_change_params`, `claim_lease_until` and the event's."""
    changed = outcome_statement(keys, announced=True).cte("changed")
    return insert_events_from(changed, from_source=_OWN)


def status_change_params(claim: Claim, values: dict[str, object]) -> dict[str, object]:
    """The claim's and the new values' parameters of `outcome_statement(tuple(values))`."""
    return {"claim_id": claim.id, **{f"new_{key}": value for key, value in values.items()}}


def status_change_event(claim: Claim, values: dict[str, object], now: datetime) -> EventRow:
    """The event of the claim's new delivery status (its `_OWN` columns come from the row)."""
    return notification_event(
        notification_id=claim.id,
        order_id=0,
        reseller_id=0,
        customer_id=0,
        recipient_role="",
        delivery_status=str(values["status"]),
        at=now,
    )


def _lease_lost(claim: Claim, outcome: Outcome) -> Outcome:
    log.warning(
        "notification %s: the lease ran out before the outcome (%s) was recorded; "
        "the worker that took it over records its own",
        claim.id,
        outcome.value,
    )
    return Outcome.LEASE_LOST


def _recorded(
    claim: Claim, values: dict[str, object], outcome: Outcome, error: DeliveryError | None
) -> Outcome:
    metrics.notification_attempted(kind=claim.kind, status=str(values.get("status", PENDING)))
    if error is not None:
        log.info(
            "notification %s to %s: %s (%s)",
            claim.id,
            claim.mail.recipient,
            error.message,
            outcome.value,
        )
    return outcome


async def deliver_due(
    outbox: Outbox, mailer: Mailer, *, concurrency: int = DEFAULT_CONCURRENCY
) -> DeliveryReport:
    """One pass: claim and send every notification due now, `concurrency` at a time.

    The loop of `run_outbox` does the same continuously; tests call this to drive retries after
    moving the clock.
    """
    outcomes: list[Outcome] = []
    while True:
        claims = await claim_due(outbox, limit=concurrency)
        if not claims:
            return DeliveryReport.of(outcomes)
        outcomes += await asyncio.gather(
            *(deliver_claim(outbox, mailer, claim) for claim in claims)
        )


async def seconds_until_next_due(outbox: Outbox) -> float | None:
    """How long until a PENDING notification becomes claimable (0 if one is now); None if none."""
    now = outbox.clock.now()
    leased = and_(col(Notification.lease_until).is_not(None), col(Notification.lease_until) > now)
    query = select(
        func.min(case((~leased, col(Notification.next_attempt_at)))),
        func.min(case((leased, col(Notification.lease_until)))),
    ).where(col(Notification.status) == PENDING)
    async with outbox.db.read_connection() as conn:
        next_attempt, lease_expiry = (await conn.execute(query)).one()
    moments: list[datetime] = [m for m in (next_attempt, lease_expiry) if m is not None]
    if not moments:
        return None
    return max((min(moments) - now).total_seconds(), 0.0)


def describe_mailer(mailer: Mailer) -> str:
    """Where mail goes, for the log line at start."""
    if isinstance(mailer, FileMailer):
        folder = Path(mailer.directory).resolve()
        return f"no ORDERPULSE_SMTP_URL set: writing mail as .eml files to {folder}"
    if isinstance(mailer, SmtpMailer):
        return f"sending mail by SMTP to {mailer.hostname}:{mailer.port}"
    return f"sending mail with {mailer!r}"


async def run_outbox(
    outbox: Outbox,
    *,
    mailer: Mailer,
    wake: asyncio.Event,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> None:
    """Deliver outbox mail until cancelled.

    Woken by `wake` (set after every commit that wrote notifications, so mail goes out at once);
    otherwise it looks again when the next retry or lease expiry is due, and at least every
    ORDERPULSE_OUTBOX_POLL_SECONDS (rows written by other processes). Claimed mails are sent in
    background tasks, at most `concurrency` at a time, so one slow mail server conversation does
    not hold up new mail.
    """
    log.info("outbox: %s", describe_mailer(mailer))
    poll = outbox.policy.poll_seconds
    in_flight: set[asyncio.Task[Outcome]] = set()
    saturated = False  # every slot was taken: mail may be waiting for one

    def finished(task: asyncio.Task[Outcome]) -> None:
        in_flight.discard(task)
        failed = task.cancelled() or task.exception() is not None
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        # Look again when a slot freed up for mail that may be waiting, or when a delivery left
        # work for later (a retry, a lease lost). A sent mail leaves none: new mail wakes the
        # loop by its commit, another process's by the poll.
        if saturated or failed or task.result() is not Outcome.SENT:
            wake.set()

    try:
        while True:
            wake.clear()
            wait: float | None = poll
            try:
                free = concurrency - len(in_flight)
                claims = await claim_due(outbox, limit=free)
                for claim in claims:
                    task = asyncio.create_task(deliver_claim(outbox, mailer, claim))
                    in_flight.add(task)
                    task.add_done_callback(finished)
                saturated = len(in_flight) >= concurrency
                if saturated:
                    wait = None  # full: the next finished delivery wakes the loop
                elif claims and len(claims) == free:
                    continue  # there may be more due right now
                elif in_flight:
                    pass  # see `finished`: what the deliveries leave for later wakes the loop
                else:
                    due_in = await seconds_until_next_due(outbox)
                    if due_in is not None:
                        wait = max(min(poll, due_in), MIN_WAIT_SECONDS)
            except Exception as error:
                log_failure(log, "outbox pass failed; trying again in %ss", error, poll)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
