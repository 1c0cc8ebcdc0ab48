"""Subscription root: live order status changes and notification changes.

The contract of a subscription here: it is declared with `@live_subscription(PayloadType, ...)`
and its resolver returns a `LiveStream[PayloadType]` (made by `open_stream`), never a plain async
generator. `build_schema` calls `require_live_streams`, so a field that breaks the contract stops
the schema from being built, naming the field (the websocket endpoint could not serve it: it
groups subscribers by their stream and would answer "Unexpected error."). docs/EXTENDING.md walks
through adding a topic.

A resolver checks the viewer and the cursor and returns a `LiveStream`: which events it gets (an
`EventFilter` made with `access.policy`), where it resumes (`after_id`), and the payload each event
becomes. The websocket endpoint (`app/graphql/ws/`) runs every operation through strawberry's
pipeline (`Schema.stream`: the same extensions as HTTP) with a `StreamHandoff` in the context: the
stream is handed to it there, and it puts subscribers that see the same events the same way into
one group, which executes each event once. Any other transport iterates the stream, one
subscriber at a time. Either way each event is read from the
durable log after its commit, and its payload's loaders are those of the batch the event was read
in, never the connection's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, TypeVar, get_origin, get_type_hints

import strawberry
from graphql import DocumentNode, GraphQLError

from app.access import policy
from app.access.viewer import Viewer
from app.events.fanout import Batch, EventFilter, SubscriberTooSlow
from app.events.models import TOPIC_INCIDENT, TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.graphql.changes import EVENT_CURSOR_KIND, EventChange, event_cursor
from app.graphql.context import Info, forbidden, viewer_of
from app.graphql.ids import parse_cursor, parse_pk
from app.graphql.incidents import IncidentChange
from app.graphql.loaders import Loaders
from app.graphql.types import Notification, OrderStatus, OrderStatusChange
from app.kernel.strawberry import executed_document
from app.services import Services

CURSOR_KIND = EVENT_CURSOR_KIND
INVALID_CURSOR_MESSAGE = "Invalid cursor: `after` takes a cursor this subscription gave you."
SLOW_CONSUMER_CODE = "SLOW_CONSUMER"
LOADERS_KEY = "graphql.loaders"

Payload = TypeVar("Payload")
ResumeAfter = Annotated[
    str | None,
    strawberry.argument(description="Resume after this cursor (from an earlier change)."),
]


@strawberry.input(description="Which status changes to receive; all given conditions must hold.")
class OrderStatusChangeFilter:
    reseller_id: strawberry.ID | None = strawberry.field(
        default=None, description="This reseller's."
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="This customer's."
    )
    status: list[OrderStatus] | None = strawberry.field(
        default=None, description="Changes into any of these statuses."
    )


@strawberry.type(description="A notification was created or changed delivery status.")
class NotificationChange(EventChange):
    @strawberry.field(description="The notification, as it is now.")
    async def notification(self) -> Notification:
        row = await self.loaders.notification.load(self.event.notification_id or 0)
        return Notification.wrap(row, self.loaders)


def invalid_cursor() -> GraphQLError:
    """The one error for an unknown, malformed, foreign or wrong-topic cursor."""
    return GraphQLError(INVALID_CURSOR_MESSAGE, extensions={"code": "BAD_USER_INPUT"})


def too_slow(resume_after_id: int | None) -> GraphQLError:
    """Ends a subscription whose subscriber fell behind; it resubscribes after the cursor given."""
    cursor = event_cursor(resume_after_id) if resume_after_id is not None else None
    return GraphQLError(
        "Events came faster than this subscription read them, so it was ended. Subscribe again "
        "with `after` set to the cursor in `extensions.after` (the last change you received).",
        extensions={"code": SLOW_CONSUMER_CODE, "after": cursor},
    )


def interrupted(resume_after_id: int | None) -> GraphQLError:
    """Ends a subscription the server could not continue; it resubscribes after the cursor given."""
    cursor = event_cursor(resume_after_id) if resume_after_id is not None else None
    return GraphQLError(
        "Unexpected error. Subscribe again with `after` set to the cursor in `extensions.after`.",
        extensions={"code": "INTERNAL_SERVER_ERROR", "after": cursor},
    )


class LiveStream(AsyncIterator[Payload]):
    """What a subscription resolver returns: which events, from where, and what each becomes.

    The websocket endpoint reads these to group its subscribers and never iterates the stream.
    Iterated (by any other transport), it is one subscriber of the fan-out with its own queue.
    """

    def __init__(
        self,
        services: Services,
        event_filter: EventFilter,
        after_id: int | None,
        make_payload: Callable[[Event, Loaders], Payload],
    ) -> None:
        self.services = services
        self.event_filter = event_filter
        self.after_id = after_id
        self.make_payload = make_payload
        self._payloads: AsyncGenerator[Payload, None] | None = None

    def payload(self, event: Event, batch: Batch) -> Payload:
        """The payload of `event`, with the loaders every subscriber of its batch shares."""
        db = self.services.db
        return self.make_payload(event, batch.shared(LOADERS_KEY, lambda: Loaders(db)))

    def hand_over(self) -> None:
        """Iterated from now on, it ends at once: its subscriber is served by whoever took it."""
        self._payloads = _nothing()

    async def __anext__(self) -> Payload:
        if self._payloads is None:
            self._payloads = self._subscribe()
        return await anext(self._payloads)

    async def aclose(self) -> None:
        """Unsubscribe."""
        if self._payloads is not None:
            await self._payloads.aclose()

    async def _subscribe(self) -> AsyncGenerator[Payload, None]:
        subscriber = self.services.fanout.subscribe(self.event_filter, after_id=self.after_id)
        try:
            async with aclosing(subscriber.deliveries()) as deliveries:
                async for delivery in deliveries:
                    yield self.payload(delivery.event, delivery.batch)
        except SubscriberTooSlow as exc:
            raise too_slow(exc.resume_after_id) from None


async def _nothing() -> AsyncGenerator[Any, None]:
    return
    yield


class StreamHandoff:
    """Given in the context by a transport that serves subscribers itself (the websocket's
    groups): the stream a subscription's resolver opens is handed over here, with the document
    the pipeline executed, instead of being iterated, so the pipeline ends at once."""

    def __init__(self) -> None:
        self.stream: LiveStream[Any] | None = None
        self.document: DocumentNode | None = None

    def take(self, stream: LiveStream[Any], info: Info) -> None:
        stream.hand_over()
        self.stream = stream
        self.document = executed_document(info)


LiveResolver = Callable[..., Awaitable[LiveStream[Payload]]]
"""A subscription resolver: (self, info, arguments...) -> the LiveStream it opened."""


def live_subscription(
    payload: type[Payload], *, description: str
) -> Callable[[LiveResolver[Payload]], Any]:
    """Declare a subscription field whose resolver returns a `LiveStream[payload]`.

    The field's GraphQL type is `payload`; the resolver's return annotation says it is a stream.
    """

    def declare(resolver: LiveResolver[Payload]) -> Any:
        return strawberry.subscription(resolver, description=description, graphql_type=payload)

    return declare


def require_live_streams(subscription_type: type) -> None:
    """Refuse to build a schema with a subscription whose resolver does not return a LiveStream."""
    for field in subscription_type.__strawberry_definition__.fields:  # type: ignore[attr-defined]
        resolver = field.base_resolver
        returns = get_type_hints(resolver.wrapped_func).get("return") if resolver else None
        if get_origin(returns) is not LiveStream:
            raise TypeError(
                f"Subscription.{field.name} must be declared with @live_subscription and return a "
                f"LiveStream (from open_stream), not {returns!r}: the websocket endpoint serves "
                "only LiveStreams. See docs/EXTENDING.md, 'A subscription topic'."
            )


def order_event_filter(viewer: Viewer, filter: OrderStatusChangeFilter | None) -> EventFilter:
    """The viewer's order events narrowed by `filter`; a malformed id matches nothing."""
    if filter is None:
        return EventFilter(viewer=viewer, topic=TOPIC_ORDER_STATUS)
    reseller_id = parse_pk(filter.reseller_id, "Reseller")
    customer_id = parse_pk(filter.customer_id, "Customer")
    malformed = (filter.reseller_id is not None and reseller_id is None) or (
        filter.customer_id is not None and customer_id is None
    )
    return EventFilter(
        viewer=viewer,
        topic=TOPIC_ORDER_STATUS,
        statuses=frozenset(s.value for s in filter.status) if filter.status is not None else None,
        reseller_id=reseller_id,
        customer_id=customer_id,
        matches_nothing=malformed,
    )


async def open_stream(
    info: Info,
    event_filter: EventFilter,
    after: str | None,
    make_payload: Callable[[Event, Loaders], Payload],
) -> LiveStream[Payload]:
    """Check the cursor, then describe the stream (nothing is registered until it is read), or
    hand it to the transport's `StreamHandoff`."""
    services = info.context.services
    after_id = await resume_point(services, event_filter, after)
    stream = LiveStream(services, event_filter, after_id, make_payload)
    handoff = info.context.stream_handoff
    if handoff is not None:
        handoff.take(stream, info)
    return stream


async def resume_point(
    services: Services, event_filter: EventFilter, after: str | None
) -> int | None:
    """The event id `after` names, if it is a cursor of an event this stream's viewer may see and
    of its topic; otherwise `invalid_cursor()` is raised."""
    if after is None:
        return None
    after_id = parse_cursor(after, CURSOR_KIND)
    if after_id is None or not await services.fanout.cursors.is_visible(
        event_id=after_id, event_filter=event_filter
    ):
        raise invalid_cursor()
    return after_id


def _order_status_change(event: Event, loaders: Loaders) -> OrderStatusChange:
    return OrderStatusChange(event=event, loaders=loaders)


def _notification_change(event: Event, loaders: Loaders) -> NotificationChange:
    return NotificationChange(event=event, loaders=loaders)


def _incident_change(event: Event, loaders: Loaders) -> IncidentChange:
    return IncidentChange(event=event, loaders=loaders)


@strawberry.type(
    description="Live changes over websockets (graphql-transport-ws): each event after its "
    "commit; with `after`, the events since that cursor first."
)
class Subscription:
    @live_subscription(
        OrderStatusChange,
        description="Every status change the viewer may see, in commit order; with `after`, "
        "first replays every later one.",
    )
    async def order_status_changed(
        self,
        info: Info,
        filter: Annotated[
            OrderStatusChangeFilter | None,
            strawberry.argument(description="Only the changes that match this filter."),
        ] = None,
        after: ResumeAfter = None,
    ) -> LiveStream[OrderStatusChange]:
        event_filter = order_event_filter(viewer_of(info), filter)
        return await open_stream(info, event_filter, after, _order_status_change)

    @live_subscription(
        NotificationChange,
        description="Every notification the viewer may see that is created or changes delivery "
        "status, in commit order; `after` replays as above.",
    )
    async def notification_changed(
        self,
        info: Info,
        after: ResumeAfter = None,
    ) -> LiveStream[NotificationChange]:
        event_filter = EventFilter(viewer=viewer_of(info), topic=TOPIC_NOTIFICATION)
        return await open_stream(info, event_filter, after, _notification_change)

    @live_subscription(
        IncidentChange,
        description="Every change of a provisioning incident (support only), in commit order: "
        "OPENED, JOINED, RESUBMITTED, RESOLVED; `after` replays as above.",
    )
    async def incident_changed(
        self,
        info: Info,
        after: ResumeAfter = None,
    ) -> LiveStream[IncidentChange]:
        viewer = viewer_of(info)
        if viewer.role not in policy.Operation.MANAGE_INCIDENTS:
            raise forbidden(f"the {viewer.role.value} role may not follow incidents")
        event_filter = EventFilter(viewer=viewer, topic=TOPIC_INCIDENT)
        return await open_stream(info, event_filter, after, _incident_change)
