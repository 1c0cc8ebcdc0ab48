"""The schema, with its guards (`app.graphql.guards`) and masked unexpected errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    OperationType,
    get_operation_ast,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.base import BaseSchema
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import validate_document

from app.documents.cache import LRU
from app.documents.store import sha256_of
from app.graphql.guards import Guards, GuardsExtension, is_unexpected
from app.graphql.impossible_input import RefuseImpossibleInput
from app.graphql.incidents import Incident
from app.graphql.mutations import Mutation
from app.graphql.planner.extension import PlanCache, ReadPlanner
from app.graphql.queries import Query
from app.graphql.reads import require_declarations
from app.graphql.subscriptions import Subscription, require_live_streams
from app.graphql.types import Customer, Notification, NotificationTemplate, Order, Reseller
from app.kernel.strawberry import graphql_schema
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


class DocumentCache:
    """Parsed documents and their validation errors, keyed by the document's SHA-256 (never its
    text, which can be `max_document_bytes` long), at most `maxsize` of each."""

    def __init__(self, maxsize: int) -> None:
        self.parsed: LRU[tuple[str, tuple[tuple[str, Any], ...]], DocumentNode] = LRU(maxsize)
        self.validated: LRU[tuple[str, tuple[Any, ...]], list[GraphQLError]] = LRU(maxsize)

    def validate(self, context: Any) -> list[GraphQLError]:
        """The validation errors of the operation's document with its rules, from the cache
        when the same document met the same rules before. Each caller gets its own copies of
        the errors (later hooks, such as HideSuggestionsFromStrangers, edit them in place)."""
        schema, document = graphql_schema(context.schema), context.graphql_document
        assert document is not None
        rules = tuple(context.validation_rules)
        if context.query is None:
            errors = validate_document(schema, document, rules)
        else:
            key = (sha256_of(context.query), rules)
            cached = self.validated.get(key)
            if cached is None:
                cached = validate_document(schema, document, rules)
                self.validated.put(key, cached)
            errors = cached
        return [_copy_error(e) for e in errors]


class CachedDocuments(SchemaExtension):
    """A document seen before is neither parsed nor validated again (strawberry's ParserCache
    and ValidationCache, keyed by hash). It runs after `GuardsExtension`, which refuses a
    document over the size limit before it is hashed."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            key = (sha256_of(context.query), tuple(sorted(context.parse_options.items())))
            document = self.cache.parsed.get(key)
            if document is None:
                document = parse(context.query, **context.parse_options)
                self.cache.parsed.put(key, document)
            context.graphql_document = document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None:  # GuardsExtension may have validated it
            context.pre_execution_errors = self.cache.validate(context)
        yield


INTROSPECTION_ROOT_FIELDS = frozenset({"__schema", "__type", "__typename"})
INTROSPECTION_CACHE_SIZE = 8


class CachedIntrospection(SchemaExtension):
    """An introspection query's answer depends on the schema alone, not on the viewer: a query
    without variables whose root fields are all `__schema`, `__type` or `__typename` is
    answered from the last answer to the same document (by hash), at most `maxsize` of them.
    GraphiQL and code generators send the same one or two documents; each costs tens of
    milliseconds of CPU to execute, and nothing to look up. Only answers without errors are
    kept; every guard has run before this (it answers in `on_execute`)."""

    def __init__(self, answers: LRU[tuple[str, str | None], dict[str, Any]]) -> None:
        self.answers = answers

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        key = _introspection_key(context)
        if key is not None and context.result is None:
            data = self.answers.get(key)
            if data is not None:
                context.result = ExecutionResult(data=data)
                key = None
        yield
        result = context.result
        if (
            key is not None
            and isinstance(result, ExecutionResult)
            and result.data is not None
            and not result.errors
        ):
            self.answers.put(key, result.data)


def _introspection_key(context: Any) -> tuple[str, str | None] | None:
    """(hash, operation name) of a query that only introspects, with no variables; else None."""
    document = context.graphql_document
    if context.query is None or document is None or context.variables:
        return None
    operation = get_operation_ast(document, context.operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        return None
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return None
        if selection.name.value not in INTROSPECTION_ROOT_FIELDS:
            return None
    return (sha256_of(context.query), context.operation_name)


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
        self.documents = documents = DocumentCache(DOCUMENT_CACHE_SIZE)
        self.introspection_answers: LRU[tuple[str, str | None], dict[str, Any]] = LRU(
            INTROSPECTION_CACHE_SIZE
        )
        introspection = self.introspection_answers
        plans = PlanCache(DOCUMENT_CACHE_SIZE)
        planner = [lambda: ReadPlanner(plans)] if read_planner else []
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            types=[Order, Customer, Reseller, Notification, NotificationTemplate, Incident],
            extensions=[
                lambda: GuardsExtension(guards, validate=documents.validate),
                RefuseImpossibleInput,  # a NUL in any text: BAD_USER_INPUT, nothing runs
                # A document seen before is neither parsed nor validated again (an LRU look-up
                # by hash; the guards' rules are built once, so the validation cache hits).
                lambda: CachedDocuments(documents),
                HideSuggestionsFromStrangers,
                guards.make_mask_errors,
                OperationMetrics,  # counts and times every operation (app.observability)
                lambda: CachedIntrospection(introspection),
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
    require_declarations()
    settings = settings or get_settings()
    return OrderPulseSchema(Guards.from_settings(settings), read_planner=settings.read_planner)


def export_schema() -> str:
    return build_schema().as_str() + "\n"
