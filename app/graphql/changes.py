"""What a live stream yields: one change read from the event log, and the cursor after it.

`OrderStatusChange` and `NotificationChange` are `EventChange`s: the event, the loaders of the
batch it was read in (never the connection's), and the `cursor` that resumes the stream after it.
"""

from __future__ import annotations

import strawberry

from app.events.models import Event
from app.graphql.ids import to_cursor
from app.graphql.loaders import Loaders

EVENT_CURSOR_KIND = "event"


def event_cursor(event_id: int) -> str:
    """The opaque cursor that resumes a stream after the event `event_id`."""
    return to_cursor(EVENT_CURSOR_KIND, event_id)


@strawberry.type(description="A change read from the event log.")
class EventChange:
    event: strawberry.Private[Event]
    loaders: strawberry.Private[Loaders]

    @strawberry.field(description="Pass as `after` to resume the stream after this change.")
    def cursor(self) -> str:
        assert self.event.id is not None
        return event_cursor(self.event.id)
