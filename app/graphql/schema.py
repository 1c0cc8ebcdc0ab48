"""The schema, with its guards: depth, alias and token limits, masked unexpected errors."""

from __future__ import annotations

from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.base import BaseSchema
from strawberry.schema.config import StrawberryConfig

from app.graphql.mutations import Mutation
from app.graphql.queries import Query
from app.graphql.subscriptions import Subscription
from app.graphql.types import Customer, Notification, NotificationTemplate, Order, Reseller
from app.settings import Settings, get_settings


def is_unexpected(error: GraphQLError) -> bool:
    """Mask errors that come from a bug, not from our own GraphQLErrors or validation."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


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


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or get_settings()
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Order, Customer, Reseller, Notification, NotificationTemplate],
        extensions=[
            lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
            lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
            lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
            HideSuggestionsFromStrangers,
            lambda: MaskErrors(should_mask_error=is_unexpected, error_message="Unexpected error."),
        ],
        config=StrawberryConfig(),
    )


def export_schema() -> str:
    return build_schema().as_str() + "\n"
