"""Subscribers who get the same events rendered the same way, executed once for all of them.

Subscriptions that run the same document with the same variables (`after` aside) for viewers who
see the same things form one `Group`, an audience of the process's fan-out. For each event the
group accepts, it executes the document once (graphql-core, the event's payload as root value, the
loaders of the batch) and serializes the result once; every member then sends that text under its
own id. A member's messages wait in its socket's send queue, at most `ws_queue_size` of them: one
more ends that subscription with a SLOW_CONSUMER error naming the cursor to resume after (the
messages queued before it are still sent), so a stuck client never holds up the reader or the
other subscribers, and never grows memory.

Resuming: a member given `after` joins its group at once, holds what the group sends while its
replay (executed for it alone, a page at a time, at the pace its socket drains) catches up from
the log, then releases what the replay did not already send.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from app.services import Services

if TYPE_CHECKING:
    from app.graphql.ws.protocol import SocketSession

log = logging.getLogger("orderpulse.websocket")


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

    @property
    def event_filter(self) -> EventFilter:
        return self.selection.stream.event_filter

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        try:
            payloads = await self.selection.render(events, batch)
        except Exception:
            log.exception("could not render events for a subscription group")
            for member in list(self.members):
                member.session.end_interrupted(member)
            return
        fallen_behind: list[Member] = []
        for event, payload in zip(events, payloads, strict=True):
            event_id = event.id or 0
            for member in self.members:
                if not member.offer(event_id, payload):
                    fallen_behind.append(member)
            for member in fallen_behind:
                member.session.end_too_slow(member)
            fallen_behind.clear()


class Member:
    """One subscription of one socket, in a group; its queue follows `Backlog`'s rules, the
    backlog counting the member's messages in the socket's send queue."""

    __slots__ = ("backlog", "buffer", "group", "id", "prefix", "replay", "session")

    def __init__(self, session: SocketSession, id: str, group: Group, after_id: int | None) -> None:
        self.session = session
        self.id = id
        self.group = group
        self.prefix = '{"id":' + json.dumps(id) + ',"type":"next","payload":'
        self.backlog = Backlog(limit=session.queue_size, after_id=after_id)
        """`last_id`: the last event queued for this member; `pending`: its messages not sent."""
        self.buffer: list[tuple[int, str]] | None = [] if after_id is not None else None
        """While replaying: what the group sent meanwhile (bounded as the queue is)."""
        self.replay: asyncio.Task[None] | None = None

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

    async def catch_up(self, fanout: Fanout) -> None:
        """Replay the log after `last_id` at the socket's pace, then go live."""
        selection = self.group.selection
        backlog = self.backlog
        assert backlog.last_id is not None and self.buffer is not None
        async for batch in fanout.replay(selection.stream.event_filter, after_id=backlog.last_id):
            payloads = await selection.render(batch.events, batch)
            for event, payload in zip(batch.events, payloads, strict=True):
                backlog.last_id = event.id
                self.session.outgoing.put(self.prefix + payload + "}", backlog)
            await self.session.outgoing.drained()
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

    def join(self, session: SocketSession, id: str, key: object, selection: Selection) -> Member:
        group = self.by_key.get(key)
        if group is None:
            group = self.by_key[key] = Group(key, selection)
            self.fanout.add(group)
        member = Member(session, id, group, selection.stream.after_id)
        group.members[member] = None
        return member

    def leave(self, member: Member) -> None:
        group = member.group
        group.members.pop(member, None)
        if not group.members and self.by_key.get(group.key) is group:
            del self.by_key[group.key]
            self.fanout.remove(group)
