"""A subscription must return a LiveStream: a field that does not is refused when the schema is built."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import strawberry

from app.graphql import schema as schema_module
from app.graphql.context import Info
from app.graphql.schema import build_schema
from app.graphql.subscriptions import (
    NotificationChange,
    Subscription,
    live_subscription,
    require_live_streams,
)
from app.settings import Settings


@strawberry.type
class PlainGeneratorSubscription:
    @strawberry.subscription(description="Counts; a plain strawberry async generator.")
    async def ticks(self, info: Info) -> AsyncGenerator[int, None]:
        yield 1


@strawberry.type
class MisdeclaredSubscription:
    @live_subscription(NotificationChange, description="Declared live, but returns an iterator.")
    async def changes(self, info: Info) -> AsyncIterator[NotificationChange]:  # type: ignore[misc]
        raise AssertionError("never resolved")


def test_the_real_subscriptions_keep_the_contract(settings: Settings) -> None:
    require_live_streams(Subscription)
    built = build_schema(settings)
    sdl = built.as_str()
    assert "orderStatusChanged(" in sdl and "): OrderStatusChange!" in sdl
    assert "notificationChanged(" in sdl and "): NotificationChange!" in sdl


def test_a_plain_async_generator_is_refused_naming_the_field() -> None:
    with pytest.raises(TypeError) as refused:
        require_live_streams(PlainGeneratorSubscription)
    message = str(refused.value)
    assert message.startswith("Subscription.ticks must be declared with @live_subscription")
    assert "return a LiveStream" in message and "docs/EXTENDING.md" in message


def test_a_live_subscription_that_does_not_return_a_stream_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^Subscription\.changes must be declared"):
        require_live_streams(MisdeclaredSubscription)


def test_build_schema_refuses_a_subscription_without_a_live_stream(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema_module, "Subscription", PlainGeneratorSubscription)
    with pytest.raises(TypeError, match=r"^Subscription\.ticks must be declared"):
        build_schema(settings)
