"""The per-process fan-out: one reader of the event log, many subscribers.

One task per process waits for the bus (plus a slow poll, for a cross-process wake-up that was
lost), reads the events committed after the last one it handed out, in id order and in batches,
and hands each batch to every audience that may see some of its events. The rows are read once per
batch, whatever the number of subscribers, and each `Batch` carries a scratch space its audiences
share (the GraphQL layer keeps one set of dataloaders there, so a row is fetched once per batch).

An audience is whatever delivers to subscribers: a `Subscriber` (one subscription, read through a
bounded queue) or a group of websocket subscriptions that see the same events the same way. An
audience never blocks the reader: it queues what it cannot deliver at once, and a subscriber whose
queue is full is dropped, told to resume after the last event it got (`SubscriberTooSlow`).

Resuming: a subscriber given `after_id` registers live first, then replays the log after that id
(`replay`), then continues live, skipping what the replay already gave (ids only grow), so nothing
is missed or repeated at the seam.

While no audience is registered, a wake-up reads nothing (a process with no subscriber pays no
statement per commit, anywhere): the reader only notes that it is behind, and the next audience
to `join` first moves the position to the end of the log, so a new live subscription starts
from the moment it joined, as when every wake-up was read.

Every read of the log (live and replay) stops at `readable_horizon` (app/events/log.py): on
PostgreSQL, transactions commit events in any order, and the horizon is the highest id below which
no open transaction can still add one. So what is handed out is always a prefix of the log in id
order, and an id once passed is never needed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, false, func
from sqlmodel import col, select

from app.access import policy
from app.access.viewer import Viewer
from app.db import Database
from app.events.bus import EventBus
from app.events.log import readable_horizon
from app.events.models import Event, EventTenancy
from app.outages import log_failure

log = logging.getLogger("orderpulse.fanout")

T = TypeVar("T")

POLL_SECONDS = 1.0
"""How often the reader looks at the log without a wake-up (a lost cross-process wake-up)."""
BATCH_SIZE = 200
"""Events read (and dispatched) together."""
REPLAY_PAGE_SIZE = 100
"""Events read together while replaying after a cursor."""
CURSOR_CACHE_SIZE = 4096
"""Events whose tenancy `CursorChecks` keeps (the most recently used)."""


class Batch:
    """Events read together, plus a scratch space every audience of this batch shares."""

    __slots__ = ("_shared", "events")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """The value stored under `key` for this batch, made by `factory` on first use."""
        if key not in self._shared:
            self._shared[key] = factory()
        value: T = self._shared[key]
        return value


@dataclass(frozen=True)
class EventFilter:
    """Which events of one topic a subscription gets: what its viewer may see, narrowed by a filter.

    `matches_nothing` stands for a filter that can match no event (e.g. a malformed id), so that
    such a filter answers exactly like one naming another tenant's object.
    """

    viewer: Viewer
    topic: str
    statuses: frozenset[str] | None = None
    reseller_id: int | None = None
    customer_id: int | None = None
    matches_nothing: bool = False

    def accepts(self, event: Event) -> bool:
        """Whether this subscription gets `event` (the same rule as `conditions`, in memory)."""
        if event.topic != self.topic or self.matches_nothing:
            return False
        if self.statuses is not None and event.to_status not in self.statuses:
            return False
        if self.reseller_id is not None and event.reseller_id != self.reseller_id:
            return False
        if self.customer_id is not None and event.customer_id != self.customer_id:
            return False
        return policy.may_see_event(self.viewer, event)

    def conditions(self) -> list[ColumnElement[bool]]:
        """The same rule as `accepts`, as SQL conditions on the event table."""
        if self.matches_nothing:
            return [false()]
        conditions = [col(Event.topic) == self.topic, policy.event_scope(self.viewer, self.topic)]
        if self.statuses is not None:
            conditions.append(col(Event.to_status).in_(sorted(self.statuses)))
        if self.reseller_id is not None:
            conditions.append(col(Event.reseller_id) == self.reseller_id)
        if self.customer_id is not None:
            conditions.append(col(Event.customer_id) == self.customer_id)
        return conditions


class Audience(Protocol):
    """Subscribers that see the same events: the reader hands it the events its filter accepts."""

    @property
    def event_filter(self) -> EventFilter: ...

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        """Take `events` (in id order, all accepted by the filter); must not wait on a consumer."""
        ...


class Backlog:
    """The queue rules of every subscriber, whoever delivers to it (a `Subscriber` here, a member
    of a websocket group in `app.graphql.ws.groups`).

    At most `limit` events wait for the consumer (`pending`); one more ends the subscription,
    which resumes after `last_id`, the last event given (`SubscriberTooSlow`, SLOW_CONSUMER).
    After a replay, an event at or before `last_id` was already given and is skipped.
    """

    __slots__ = ("last_id", "limit", "pending")

    def __init__(self, *, limit: int, after_id: int | None) -> None:
        self.limit = limit
        self.last_id = after_id
        self.pending = 0

    def is_full(self) -> bool:
        return self.pending >= self.limit

    def is_given(self, event_id: int) -> bool:
        """Whether `event_id` was given already (a replay gave it)."""
        return self.last_id is not None and event_id <= self.last_id

    def take(self, event_id: int) -> bool | None:
        """Give `event_id` (the caller then queues it, counting it in `pending`): True; None if
        it was given already; False if the queue is full."""
        if self.is_given(event_id):
            return None
        if self.is_full():
            return False
        self.last_id = event_id
        return True


class SubscriberTooSlow(Exception):
    """A subscriber's queue overflowed; it should resubscribe after `resume_after_id`."""

    def __init__(self, resume_after_id: int | None) -> None:
        super().__init__("the subscriber fell too far behind")
        self.resume_after_id = resume_after_id


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscriber, with the batch it was read in."""

    event: Event
    batch: Batch


async def read_event_tenancy(db: Database, event_id: int) -> EventTenancy | None:
    """The columns of event `event_id` that decide who may see it (None: no such event)."""
    async with db.read() as session:
        query = select(
            col(Event.topic),
            col(Event.reseller_id),
            col(Event.customer_id),
            col(Event.recipient_role),
        ).where(col(Event.id) == event_id)
        row = (await session.exec(query)).first()
    return None if row is None else EventTenancy(*row)


class CursorChecks:
    """Whether a cursor is a place a viewer may resume from, with the events' tenancy kept by id.

    A reconnect storm resumes thousands of subscriptions from the same few cursors; an event row
    never changes, so its tenancy columns are read once and the rule (`policy.may_see_event`, the
    in-memory form of the rule the log's SQL reads use) is applied in memory. An id not found is
    not remembered: it may be an event still being committed.
    """

    def __init__(self, db: Database, *, capacity: int = CURSOR_CACHE_SIZE) -> None:
        self.db = db
        self.capacity = capacity
        self._tenancy: OrderedDict[int, EventTenancy] = OrderedDict()
        self.reads = 0
        """Events whose tenancy was read from the database (a figure for tests)."""

    async def is_visible(self, *, event_id: int, event_filter: EventFilter) -> bool:
        """Whether `event_id` is an event of the filter's topic that its viewer may see.

        The filter's own conditions (status, customer, reseller) do not apply: any event of the
        stream's topic that the viewer may see is a place to resume from.
        """
        tenancy = self._tenancy.get(event_id)
        if tenancy is None:
            self.reads += 1
            tenancy = await read_event_tenancy(self.db, event_id)
            if tenancy is None:
                return False
            self._tenancy[event_id] = tenancy
            if len(self._tenancy) > self.capacity:
                self._tenancy.popitem(last=False)
        else:
            self._tenancy.move_to_end(event_id)
        return tenancy.topic == event_filter.topic and policy.may_see_event(
            event_filter.viewer, tenancy
        )


async def replay(
    db: Database, event_filter: EventFilter, *, after_id: int, page_size: int = REPLAY_PAGE_SIZE
) -> AsyncIterator[Batch]:
    """Every event the filter accepts after `after_id`, in id order, a page at a time."""
    conditions = event_filter.conditions()
    while True:
        async with db.read() as session:
            horizon = await readable_horizon(session)
            query = (
                select(Event)
                .where(col(Event.id) > after_id, *conditions, *_up_to(horizon))
                .order_by(col(Event.id))
                .limit(page_size)
            )
            events = list((await session.exec(query)).all())
        if not events:
            return
        yield Batch(events)
        after_id = events[-1].id or after_id


def _up_to(horizon: int | None) -> list[ColumnElement[bool]]:
    """The condition that keeps a read of the log within `horizon` (none for no limit)."""
    return [] if horizon is None else [col(Event.id) <= horizon]


class Fanout:
    """One reader of the event log per process, dispatching to every registered audience."""

    def __init__(
        self,
        *,
        db: Database,
        bus: EventBus,
        queue_size: int,
        poll_seconds: float = POLL_SECONDS,
        batch_size: int = BATCH_SIZE,
        replay_page_size: int = REPLAY_PAGE_SIZE,
    ) -> None:
        self.db = db
        self.bus = bus
        self.queue_size = queue_size
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.replay_page_size = replay_page_size
        self.position = 0
        """The id of the last event handed out (or seen at start)."""
        self.replay_reads = 0
        """Pages of the log read for replays so far (each one SQL statement)."""
        self.cursors = CursorChecks(db)
        """Where a subscription may resume (`after`), checked by every transport."""
        self._audiences: dict[int, Audience] = {}  # by identity
        self._behind = False
        """Whether a wake-up was left unread because no audience was registered."""
        self._task: asyncio.Task[None] | None = None

    # --- registration ---------------------------------------------------------------------------

    def add(self, audience: Audience) -> None:
        """Deliver every batch read after `position` (from now on) to `audience`, the events
        its filter accepts. A live audience joins with `join` (or `prepare_to_add` first)."""
        was_empty = not self._audiences
        self._audiences[id(audience)] = audience
        if was_empty and self._behind:
            # Wake-ups came after `prepare_to_add` read the end (their events are later than
            # the audience's start) and found no one to read for: read them now.
            self._behind = False
            self.bus.wake_local()

    async def prepare_to_add(self) -> None:
        """Before the first audience is added: if wake-ups were left unread while nobody
        listened, move `position` to the end of the log (`_last_event_id`), so the audience
        gets what commits from now on, not what was committed while no one listened. What
        commits after this read is above it, and is read once the audience is added."""
        if self._audiences or not self._behind:
            return
        self._behind = False
        self.position = max(self.position, await self._last_event_id())

    async def join(self, audience: Audience) -> None:
        """`add` a live audience, starting from the end of the log as it is now."""
        await self.prepare_to_add()
        self.add(audience)

    def remove(self, audience: Audience) -> None:
        self._audiences.pop(id(audience), None)

    @property
    def audience_count(self) -> int:
        return len(self._audiences)

    def subscribe(self, event_filter: EventFilter, *, after_id: int | None = None) -> Subscriber:
        """One subscription with its own queue (replaying after `after_id` first, if given)."""
        return Subscriber(self, event_filter, after_id=after_id)

    async def replay(self, event_filter: EventFilter, *, after_id: int) -> AsyncIterator[Batch]:
        """The log after `after_id` as `event_filter` sees it, a page at a time (see `replay`)."""
        self.replay_reads += 1
        async for batch in replay(
            self.db, event_filter, after_id=after_id, page_size=self.replay_page_size
        ):
            yield batch
            self.replay_reads += 1

    # --- the reader -----------------------------------------------------------------------------

    async def seek_end(self) -> None:
        """Move the position after the last event already readable (see `readable_horizon`)."""
        self.position = await self._last_event_id()

    async def start(self) -> asyncio.Task[None]:
        """Start after the last event already in the log; return the reader task."""
        await self.seek_end()
        self._task = asyncio.create_task(self._run(self.bus.listen()), name="orderpulse-fanout")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, wake: asyncio.Event) -> None:
        try:
            while True:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes
                # while `wake` is being set (as a rolled-back writer does at shutdown).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await wake.wait()
                wake.clear()
                try:
                    await self.catch_up()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the database may be away a while; retry on the poll
                    log_failure(log, "the fan-out could not read the event log", error)
        finally:
            self.bus.unlisten(wake)

    async def catch_up(self) -> None:
        """Read and dispatch every event committed after `position` (with no audience: read
        nothing, and let the next audience's `join` find the end of the log)."""
        while True:
            if not self._audiences:
                self._behind = True
                return
            events = await self._read_after(self.position)
            if not events:
                return
            await self.dispatch(events)
            self.position = events[-1].id or self.position
            if len(events) < self.batch_size:
                return

    async def dispatch(self, events: Sequence[Event]) -> None:
        """Hand one batch to the audiences registered now, each audience its accepted events."""
        batch = Batch(events)
        work = []
        for audience in list(self._audiences.values()):
            accepts = audience.event_filter.accepts
            accepted = [event for event in events if accepts(event)]
            if accepted:
                work.append(audience.deliver(accepted, batch))
        for outcome in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("an audience failed to take events", exc_info=outcome)

    async def _last_event_id(self) -> int:
        """Where the final part of the log ends (see `readable_horizon`): the horizon itself
        where there is one (every id up to it is final, whether or not it was committed; two
        statements outside any transaction), else the last id."""
        async with self.db.read_connection() as conn:
            horizon = await readable_horizon(conn)
            if horizon is not None:
                return horizon
            return (await conn.execute(select(func.max(col(Event.id))))).scalar() or 0

    async def _read_after(self, position: int) -> list[Event]:
        async with self.db.read() as session:
            horizon = await readable_horizon(session)
            if horizon is not None and horizon <= position:
                return []
            query = (
                select(Event)
                .where(col(Event.id) > position, *_up_to(horizon))
                .order_by(col(Event.id))
                .limit(self.batch_size)
            )
            return list((await session.exec(query)).all())


class Subscriber:
    """One subscription with its own bounded queue, read as an async iterator of deliveries.

    Reading `deliveries()` registers it live, replays after `after_id` (if given), then yields
    the live deliveries not already replayed. When the queue overflows, the deliveries already
    queued are still yielded, then `SubscriberTooSlow` names the last one, to resume after it.
    The queue follows `Backlog`'s rules: `pending` counts what is queued, `last_id` what was read.
    """

    def __init__(self, fanout: Fanout, event_filter: EventFilter, *, after_id: int | None) -> None:
        self.fanout = fanout
        self.event_filter = event_filter
        self.after_id = after_id
        self.backlog = Backlog(limit=fanout.queue_size, after_id=after_id)
        self._queue: deque[Delivery] = deque()
        self._wake = asyncio.Event()
        self._overflowed = False

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        backlog = self.backlog
        for event in events:
            if self._overflowed:
                return
            if backlog.is_full():
                self._overflowed = True
                self.fanout.remove(self)
            else:
                backlog.pending += 1
                self._queue.append(Delivery(event, batch))
        self._wake.set()

    async def deliveries(self) -> AsyncGenerator[Delivery, None]:
        """The deliveries, in id order (close it with `contextlib.aclosing` to unsubscribe)."""
        await self.fanout.join(self)
        backlog = self.backlog
        try:
            if backlog.last_id is not None:
                async for batch in self.fanout.replay(self.event_filter, after_id=backlog.last_id):
                    for event in batch.events:
                        yield Delivery(event, batch)
                        backlog.last_id = event.id
            while True:
                while self._queue:
                    delivery = self._queue.popleft()
                    backlog.pending -= 1
                    if backlog.is_given(delivery.event.id or 0):
                        continue
                    yield delivery
                    backlog.last_id = delivery.event.id
                if self._overflowed:
                    raise SubscriberTooSlow(backlog.last_id)
                self._wake.clear()
                await self._wake.wait()
        finally:
            self.fanout.remove(self)
