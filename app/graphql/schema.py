"""The schema, with its guards (`app.graphql.guards`) and masked unexpected errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.schema.base import BaseSchema
from strawberry.schema.config import StrawberryConfig

from app.graphql.guards import Guards, GuardsExtension, is_unexpected
from app.graphql.mutations import Mutation
from app.graphql.planner.extension import PlanCache, ReadPlanner
from app.graphql.queries import Query
from app.graphql.subscriptions import Subscription, require_live_streams
from app.graphql.types import Customer, Notification, NotificationTemplate, Order, Reseller
from app.observability.graphql import OperationMetrics
from app.outages import is_outage, unavailable_graphql_error
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


log = logging.getLogger("orderpulse.graphql")

DOCUMENT_CACHE_SIZE = 1024


class CachedValidation(ValidationCache):
    """Strawberry's ValidationCache, but each request gets its own copies of the cached errors
    (later hooks, such as HideSuggestionsFromStrangers, edit error messages in place)."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        errors = self.cached_validate_document(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        context.pre_execution_errors = [_copy_error(e) for e in errors]
        yield


def _copy_error(error: GraphQLError) -> GraphQLError:
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
    )


class OrderPulseSchema(strawberry.Schema):
    """The schema and the guards it runs: a transport that executes documents itself (the
    websocket's fan-out) takes this type and runs `schema.guards`, never a lookup by type."""

    def __init__(self, guards: Guards, *, read_planner: bool = True) -> None:
        self.guards = guards
        plans = PlanCache(DOCUMENT_CACHE_SIZE)
        planner = [lambda: ReadPlanner(plans)] if read_planner else []
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            types=[Order, Customer, Reseller, Notification, NotificationTemplate],
            extensions=[
                lambda: GuardsExtension(guards),
                # A document seen before is neither parsed nor validated again (an LRU look-up;
                # the guards' rules are built once, so the validation cache hits).
                lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
                lambda: CachedValidation(maxsize=DOCUMENT_CACHE_SIZE),
                HideSuggestionsFromStrangers,
                guards.make_mask_errors,
                OperationMetrics,  # counts and times every operation (app.observability)
                *planner,  # last: answers covered queries after every guard has run
            ],
            config=StrawberryConfig(),
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: Any | None = None
    ) -> None:
        """Log each error once, and mask an unexpected one in place.

        Strawberry calls this for every result with errors, before the extensions' after-parts,
        and also for an exception raised by an extension itself, which no extension can mask (it
        ends the operation): masking here covers both, on every transport. A bug is logged at
        ERROR with its traceback; an error the client caused (a document that does not validate,
        a refused token) once at WARNING, without one.
        """
        for index, error in enumerate(errors):
            if is_outage(error.original_error):  # not a bug: the client may try again later
                log.warning("operation failed, a dependency is down: %s", error.message)
                errors[index] = unavailable_graphql_error(error)
            elif is_unexpected(error):
                log.error("unexpected error: %s", error.message, exc_info=error.original_error)
                errors[index] = self.guards.mask.anonymise_error(error)
            else:
                log.warning("GraphQL error: %s", error.message)


def build_schema(settings: Settings | None = None) -> OrderPulseSchema:
    require_live_streams(Subscription)
    settings = settings or get_settings()
    return OrderPulseSchema(Guards.from_settings(settings), read_planner=settings.read_planner)


def export_schema() -> str:
    return build_schema().as_str() + "\n"
