"""What a socket's subscription groups need of the documents they execute again for each event.

Every operation a socket sends runs through strawberry's pipeline (`Schema.stream`), with the same
extensions as HTTP: the guards, the document caches, error masking, metrics. A subscription's
stream and document are then handed to its group (`app.graphql.subscriptions.StreamHandoff`),
which executes the document once per event for all of its members: `build_executor` and
`payload_json` here, with the schema's `process_errors` for the errors of an event (logged and
masked as the pipeline's are).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeGuard, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    VariableNode,
    get_operation_ast,
)
from graphql.language import FieldNode, Visitor, visit
from strawberry.execution import optimized_is_awaitable

from app.documents.cache import LRU
from app.documents.store import sha256_of
from app.graphql.context import Context
from app.graphql.schema import OrderPulseSchema
from app.kernel.strawberry import graphql_schema

AFTER_VARIABLES_CACHE_SIZE = 512


class Documents:
    """Runs subscription documents for every socket of the process, against one schema."""

    def __init__(self, schema: OrderPulseSchema) -> None:
        self.schema = schema
        self._after_variables: LRU[tuple[str, str | None], frozenset[str]] = LRU(
            AFTER_VARIABLES_CACHE_SIZE
        )

    def after_variables(
        self, query: str, operation_name: str | None, document: DocumentNode
    ) -> frozenset[str]:
        """Variables used only as the root field's `after`: they do not change what live events
        render to, so subscribers differing only in them share a group (found once per
        document, by hash)."""
        key = (sha256_of(query), operation_name)
        found = self._after_variables.get(key)
        if found is None:
            operation = get_operation_ast(document, operation_name)
            found = frozenset() if operation is None else _after_only(document, operation)
            self._after_variables.put(key, found)
        return found

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
        """Errors the pipeline did not answer (an event's, the socket's own), sent as the
        pipeline sends them: coded, logged and masked by the schema's `process_errors` (an
        outage's as SERVICE_UNAVAILABLE, a bug at ERROR with its traceback, an error the client
        caused once at WARNING without one), once per error however many subscribers share it."""
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


def _after_only(document: DocumentNode, operation: OperationDefinitionNode) -> frozenset[str]:
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
