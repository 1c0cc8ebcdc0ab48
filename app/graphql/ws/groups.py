"""Subscribers who get the same events rendered the same way, executed once for all of them.

Subscriptions that run the same document with the same variables (`after` aside) for viewers who
see the same things form one `Group`, an audience of the process's fan-out. For each event the
group accepts, it executes the document once (graphql-core, the event's payload as root value, the
loaders of the batch) and serializes the result once; every member then sends that text under its
own id. A member's messages wait in its socket's send queue, at most `ws_queue_size` of them: one
more ends that subscription with a SLOW_CONSUMER error naming the cursor to resume after (the
messages queued before it are still sent), so a stuck client never holds up the reader or the
other subscribers, and never grows memory.

Resuming: a member given `after` joins its group at once and holds what the group sends live
while it catches up from the log, then releases what the replay did not already send. Replays are
shared: the group's one replay task reads the log from the earliest cursor of the members catching
up, renders each event once, and queues it for every one of them that has not had it yet, so a
thousand panels resuming after a restart cost one read of the log per page and one execution per
event, not a thousand. A member that joins while a pass runs waits for the next pass, which
starts from its own cursor (a pass never skips an event for a member that rides it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import DocumentNode, ExecutionResult
from graphql.execution import execute_subscription_event
from strawberry.execution import optimized_is_awaitable

from app.access.viewer import Viewer
from app.events.fanout import Backlog, Batch, EventFilter, Fanout
from app.events.models import Event
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.subscriptions import LOADERS_KEY, LiveStream
from app.graphql.ws.documents import Documents
from app.observability import metrics
from app.outages import log_failure
from app.services import Services

if TYPE_CHECKING:
    from app.graphql.ws.protocol import SocketSession

log = logging.getLogger("orderpulse.websocket")

REPLAY_DRAIN_SECONDS = 5.0
"""How long a shared replay waits for a rider's socket to take what is queued before going on."""
REPLAY_SLICE_SECONDS = 0.005
"""How long a shared replay queues messages before it lets the event loop run other work: a pass
for thousands of riders would otherwise hold the loop (and every HTTP request) for all of its
length."""


@dataclass(frozen=True, eq=False)
class Selection:
    """What a group renders: a document and its variables for a viewer, over one stream."""

    documents: Documents
    services: Services
    document: DocumentNode
    operation_name: str | None
    variables: dict[str, Any] | None
    viewer: Viewer
    stream: LiveStream[Any]

    async def render(self, events: Sequence[Event], batch: Batch) -> list[str]:
        """Each event's `payload` JSON (data and errors), executed once for all who share it."""
        services = self.services
        loaders = batch.shared(LOADERS_KEY, lambda: Loaders(services.db))
        context = Context(services=services, viewer=self.viewer, loaders=loaders)
        documents = self.documents
        executor = documents.build_executor(
            self.document, context, self.variables, self.operation_name
        )
        if isinstance(executor, list):  # the variables were checked when the member subscribed
            return [documents.payload_json(ExecutionResult(None, executor))] * len(events)
        results = [
            execute_subscription_event(
                executor.build_per_event_executor(self.stream.payload(event, batch))
            )
            for event in events
        ]
        if any(optimized_is_awaitable(r) for r in results):
            results = await asyncio.gather(*(_awaited(r) for r in results))
        return [documents.payload_json(r) for r in results]  # type: ignore[arg-type]


async def _awaited(value: Any) -> Any:
    return await value if optimized_is_awaitable(value) else value


class Group:
    """Subscribers who get the same events rendered the same way: one audience of the fan-out."""

    def __init__(self, key: object, selection: Selection) -> None:
        self.key = key
        self.selection = selection
        self.members: dict[Member, None] = {}
        self.catching_up: dict[Member, None] = {}
        """Members replaying the log (in order of joining)."""
        self.replayer: asyncio.Task[None] | None = None

    @property
    def event_filter(self) -> EventFilter:
        return self.selection.stream.event_filter

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        try:
            payloads = await self.selection.render(events, batch)
        except Exception as error:
            outage = log_failure(log, "could not render events for a subscription group", error)
            for member in list(self.members):
                member.session.end_interrupted(member, outage=outage)
            return
        fallen_behind: list[Member] = []
        for event, payload in zip(events, payloads, strict=True):
            event_id = event.id or 0
            for member in self.members:
                if not member.offer(event_id, payload):
                    fallen_behind.append(member)
            metrics.events_delivered(len(self.members) - len(fallen_behind))
            metrics.event_delivery_lag(time.time() - event.occurred_at.timestamp())
            for member in fallen_behind:
                member.session.end_too_slow(member)
            fallen_behind.clear()

    def resume(self, member: Member, fanout: Fanout) -> None:
        """Catch `member` up from the log after its cursor (shared with others resuming)."""
        self.catching_up[member] = None
        if self.replayer is None:
            self.replayer = asyncio.get_running_loop().create_task(
                self._replay(fanout), name="orderpulse-ws-replay"
            )

    async def _replay(self, fanout: Fanout) -> None:
        try:
            while self.catching_up:
                riders = list(self.catching_up)
                await self._replay_pass(fanout, riders)
                for member in riders:
                    if member in self.catching_up:  # not ended or gone meanwhile
                        del self.catching_up[member]
                        member.go_live()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # an outage: the members resume with `after` once the database is back
            outage = log_failure(log, "a replay failed", error)
            for member in list(self.catching_up):
                member.session.end_interrupted(member, outage=outage)
            self.catching_up.clear()
        finally:
            self.replayer = None

    async def _replay_pass(self, fanout: Fanout, riders: list[Member]) -> None:
        """Queue every event after each rider's cursor, in order: one read and render for all."""
        start = min(member.last_id or 0 for member in riders)
        limit = riders[0].session.queue_size
        async for batch in fanout.replay(self.event_filter, after_id=start):
            riders = [member for member in riders if member in self.catching_up]
            if not riders:
                return
            payloads = await self.selection.render(batch.events, batch)
            rendered = [(e.id or 0, p) for e, p in zip(batch.events, payloads, strict=True)]
            slice_ends = time.perf_counter() + REPLAY_SLICE_SECONDS
            for member in riders:
                if time.perf_counter() > slice_ends:  # let HTTP and other sockets run
                    await asyncio.sleep(0)
                    slice_ends = time.perf_counter() + REPLAY_SLICE_SECONDS
                if member not in self.catching_up:  # ended or gone meanwhile
                    continue
                backlog = member.backlog
                texts = []
                for event_id, payload in rendered:
                    if not backlog.is_given(event_id):
                        backlog.last_id = event_id
                        texts.append(member.prefix + payload + "}")
                member.session.outgoing.put_many(texts, backlog)  # one write where it can
            # At the pace of the sockets: wait (a while) for those holding half a queue or more;
            # one still holding a full queue then is ended as too slow, told where to resume.
            slow = [m for m in riders if m.backlog.pending >= limit // 2 and m in self.catching_up]
            if slow:
                drains = [asyncio.ensure_future(m.session.outgoing.drained()) for m in slow]
                _, waiting = await asyncio.wait(drains, timeout=REPLAY_DRAIN_SECONDS)
                for drain in waiting:
                    drain.cancel()
                for member in slow:
                    if member.backlog.is_full() and member in self.catching_up:
                        self.catching_up.pop(member, None)
                        member.session.end_too_slow(member)


class Member:
    """One subscription of one socket, in a group; its queue follows `Backlog`'s rules, the
    backlog counting the member's messages in the socket's send queue."""

    __slots__ = ("backlog", "buffer", "group", "id", "prefix", "session")

    def __init__(self, session: SocketSession, id: str, group: Group, after_id: int | None) -> None:
        self.session = session
        self.id = id
        self.group = group
        self.prefix = '{"id":' + json.dumps(id) + ',"type":"next","payload":'
        self.backlog = Backlog(limit=session.queue_size, after_id=after_id)
        """`last_id`: the last event queued for this member; `pending`: its messages not sent."""
        self.buffer: list[tuple[int, str]] | None = [] if after_id is not None else None
        """While replaying: what the group sent meanwhile (bounded as the queue is)."""

    @property
    def last_id(self) -> int | None:
        return self.backlog.last_id

    def offer(self, event_id: int, payload: str) -> bool:
        """Queue one event's payload; False when the member's queue is full."""
        if self.buffer is not None:
            if len(self.buffer) >= self.backlog.limit:
                return False
            self.buffer.append((event_id, payload))
            return True
        taken = self.backlog.take(event_id)
        if taken:  # the send queue counts it in `pending` while it waits
            self.session.outgoing.put(self.prefix + payload + "}", self.backlog)
        return taken is not False

    def go_live(self) -> None:
        """The replay is done: release what the group sent meanwhile that it did not cover."""
        assert self.buffer is not None
        held, self.buffer = self.buffer, None
        for event_id, payload in held:
            if not self.offer(event_id, payload):
                self.session.end_too_slow(self)
                return


class Groups:
    """The process's subscription groups, each registered with the fan-out while it has members."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.by_key: dict[object, Group] = {}

    async def join(
        self, session: SocketSession, id: str, key: object, selection: Selection
    ) -> Member:
        # Before anything is registered (no await after it, so a leave cannot come between):
        # the first audience after an idle spell starts at the end of the log.
        await self.fanout.prepare_to_add()
        group = self.by_key.get(key)
        if group is None:
            group = self.by_key[key] = Group(key, selection)
            self.fanout.add(group)
        return self._add(session, id, group, selection.stream.after_id)

    def _add(self, session: SocketSession, id: str, group: Group, after_id: int | None) -> Member:
        member = Member(session, id, group, after_id)
        group.members[member] = None
        metrics.subscription_started()
        return member

    def leave(self, member: Member) -> None:
        group = member.group
        if member in group.members:
            del group.members[member]
            metrics.subscription_ended()
        group.catching_up.pop(member, None)
        if not group.members and self.by_key.get(group.key) is group:
            del self.by_key[group.key]
            self.fanout.remove(group)
            if group.replayer is not None:
                group.replayer.cancel()
