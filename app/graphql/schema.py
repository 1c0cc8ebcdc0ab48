"""The schema, with its guards (`app.graphql.guards`) and masked unexpected errors."""

from __future__ import annotations

from collections.abc import Iterator

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.base import BaseSchema
from strawberry.schema.config import StrawberryConfig

from app.graphql.guards import Guards, GuardsExtension
from app.graphql.mutations import Mutation
from app.graphql.queries import Query
from app.graphql.subscriptions import Subscription
from app.graphql.types import Customer, Notification, NotificationTemplate, Order, Reseller
from app.observability.graphql import OperationMetrics
from app.settings import Settings, get_settings


class HideSuggestionsFromStrangers(SchemaExtension):
    """Strip "Did you mean ...?" from validation errors unless the caller is authenticated."""

    def on_validate(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        if getattr(context, "viewer", None) is not None:
            return
        for error in self.execution_context.pre_execution_errors or []:
            BaseSchema.remove_field_suggestion(error)
            if "Did you mean" in error.message:
                error.message = error.message.split("Did you mean")[0].strip()


class OrderPulseSchema(strawberry.Schema):
    """The schema and the guards it runs: a transport that executes documents itself (the
    websocket's fan-out) takes this type and runs `schema.guards`, never a lookup by type."""

    def __init__(self, guards: Guards) -> None:
        self.guards = guards
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            types=[Order, Customer, Reseller, Notification, NotificationTemplate],
            extensions=[
                lambda: GuardsExtension(guards),
                HideSuggestionsFromStrangers,
                guards.make_mask_errors,
                OperationMetrics,  # counts and times every operation (app.observability)
            ],
            config=StrawberryConfig(),
        )


def build_schema(settings: Settings | None = None) -> OrderPulseSchema:
    return OrderPulseSchema(Guards.from_settings(settings or get_settings()))


def export_schema() -> str:
    return build_schema().as_str() + "\n"
