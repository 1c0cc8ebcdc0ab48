"""Subscription root (live order status changes and notification changes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from app.graphql.context import Info
from app.graphql.types import Notification, OrderStatus, OrderStatusChange


@strawberry.input(description="Which status changes to receive; all given conditions must hold.")
class OrderStatusChangeFilter:
    reseller_id: strawberry.ID | None = strawberry.field(default=None, description="This reseller's.")
    customer_id: strawberry.ID | None = strawberry.field(default=None, description="This customer's.")
    status: list[OrderStatus] | None = strawberry.field(
        default=None, description="Changes into any of these statuses."
    )


@strawberry.type(description="A notification was created or changed delivery status.")
class NotificationChange:
    cursor: str = strawberry.field(description="Pass as `after` to resume after this change.")
    notification: Notification = strawberry.field(description="The notification, as it is now.")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every status change the viewer may see; with `after`, replays later ones first."
    )
    async def order_status_changed(
        self, info: Info, filter: OrderStatusChangeFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[OrderStatusChange, None]:
        raise NotImplementedError
        yield  # pragma: no cover

    @strawberry.subscription(
        description="Every notification change the viewer may see; `after` replays as above."
    )
    async def notification_changed(
        self, info: Info, after: str | None = None
    ) -> AsyncGenerator[NotificationChange, None]:
        raise NotImplementedError
        yield  # pragma: no cover
