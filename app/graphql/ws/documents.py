"""What a socket sends, checked once per document: parsed, guarded, validated.

Subscriptions over the socket are executed by graphql-core directly (for the fan-out), around
strawberry's pipeline; so this module runs the schema's own guards (`OrderPulseSchema.guards`):
the size and token limits while parsing, the depth, alias and list rules beside graphql-core's
(and strawberry's) validation rules, the list sizes and cost with each subscriber's variables,
and the same error logging and masking (`OrderPulseSchema.process_errors`). Prepared documents
are cached by hash, never by text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    VariableNode,
    get_operation_ast,
    specified_rules,
)
from graphql.language import FieldNode, Visitor, visit
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema import validate_document

from app.documents.cache import LRU
from app.documents.store import sha256_of
from app.graphql.context import Context
from app.graphql.schema import OrderPulseSchema
from app.kernel.strawberry import graphql_schema

PREPARED_CACHE_SIZE = 512


@dataclass(frozen=True)
class Prepared:
    """A document parsed and validated once, however many subscribers send it."""

    document: DocumentNode | None = None
    operation: OperationDefinitionNode | None = None
    close_reason: str | None = None
    """Set when the protocol says to close the socket (a syntax error, no operation to run)."""
    errors: tuple[GraphQLError, ...] = ()
    """Guard and validation errors, answered with an `error` message."""
    after_variables: frozenset[str] = frozenset()
    """Variables used only as the root field's `after`: they do not change what live events
    render to, so subscribers differing only in them share a group."""

    @property
    def after_variable(self) -> str | None:
        """The variable that alone is the root field's `after`, if any (there is one root field,
        so at most one)."""
        return next(iter(self.after_variables), None)


class Documents:
    """Checks and runs documents for every socket of the process, against one schema."""

    def __init__(self, schema: OrderPulseSchema) -> None:
        self.schema = schema
        self.guards = schema.guards
        self.rules = (*specified_rules, *self.guards.validation_rules)
        self._prepared: LRU[tuple[str, str | None], Prepared] = LRU(PREPARED_CACHE_SIZE)

    def prepare(self, query: str, operation_name: str | None) -> Prepared:
        """The document checked once: a later subscriber sending it finds it by hash."""
        size_error = self.guards.document_size_error(query)
        if size_error is not None:  # neither hashed nor kept
            return Prepared(errors=(size_error,))
        key = (sha256_of(query), operation_name)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepare(query, operation_name)
            self._prepared.put(key, prepared)
        return prepared

    def _prepare(self, query: str, operation_name: str | None) -> Prepared:
        try:
            document = self.guards.parse(query)
        except GraphQLSyntaxError as error:
            if error.extensions:  # a guard's refusal, not a document the protocol rejects
                return Prepared(errors=(error,))
            return Prepared(close_reason=error.message)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return Prepared(close_reason="Can't get GraphQL operation type")
        errors = validate_document(graphql_schema(self.schema), document, self.rules)
        if errors:
            return Prepared(document, operation, errors=tuple(errors))
        return Prepared(
            document, operation, after_variables=_after_only_variables(document, operation)
        )

    def cost_errors(
        self, prepared: Prepared, operation_name: str | None, variables: dict[str, Any] | None
    ) -> list[GraphQLError]:
        """The guards that depend on this subscriber's variables: list sizes, then the cost."""
        assert prepared.document is not None
        return self.guards.request_errors(
            graphql_schema(self.schema), prepared.document, operation_name, variables
        )

    def build_executor(
        self,
        document: DocumentNode,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> Any:
        """graphql-core's executor for `document` (or the list of variable errors)."""
        return self.schema.execution_context_class.build(
            graphql_schema(self.schema),
            document,
            None,
            context,
            variables,
            operation_name,
            is_awaitable=cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable),
        )

    def formatted(self, errors: Sequence[GraphQLError]) -> list[dict[str, Any]]:
        """Errors as sent: coded, logged and masked exactly as strawberry's pipeline does it (the
        schema's `process_errors`: an outage's as SERVICE_UNAVAILABLE, a bug at ERROR with its
        traceback, an error the client caused once at WARNING without one), once per error
        however many subscribers share it."""
        sent = list(errors)
        self.schema.process_errors(sent)
        return [dict(error.formatted) for error in sent]

    def payload_json(self, result: ExecutionResult) -> str:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = self.formatted(result.errors)
        return json.dumps(payload)


class _VariableUses(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.counts[node.name.value] = self.counts.get(node.name.value, 0) + 1


def _after_only_variables(
    document: DocumentNode, operation: OperationDefinitionNode
) -> frozenset[str]:
    """The variables that appear nowhere but as the value of the root field's `after`."""
    root = operation.selection_set.selections
    if len(root) != 1 or not isinstance(root[0], FieldNode):
        return frozenset()
    after = [
        a.value.name.value
        for a in root[0].arguments or ()
        if a.name.value == "after" and isinstance(a.value, VariableNode)
    ]
    uses = _VariableUses()
    visit(document, uses)  # uses everywhere, fragments included, and every declaration
    declared = Counter(
        definition.variable.name.value
        for node in document.definitions
        if isinstance(node, OperationDefinitionNode)
        for definition in node.variable_definitions or ()
    )
    return frozenset(name for name in after if uses.counts[name] - declared[name] == 1)
