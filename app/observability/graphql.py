"""Counting and timing GraphQL operations: a schema extension, so every transport that runs an
operation through the schema (HTTP POST and GET, a query sent over the websocket) is measured the
same way, from parsing to the result."""

from __future__ import annotations

import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from app.observability import metrics


class OperationMetrics(SchemaExtension):
    """Records `orderpulse_graphql_requests_total` and `..._request_duration_seconds`."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        completed = False
        try:
            yield
            completed = True
        finally:
            self._record(time.perf_counter() - started, completed=completed)

    def _record(self, seconds: float, *, completed: bool) -> None:
        """One operation; `completed` is False when an error (a document that does not parse,
        raised by the parser cache) ended it before a result was made."""
        context = self.execution_context
        try:
            operation_type = context.operation_type.value
        except RuntimeError:  # it did not parse, or names no operation
            operation_type = "unknown"
        result = context.result
        errors = (result.errors if result is not None else None) or context.pre_execution_errors
        if not completed:
            operation_type, outcome = "unknown", "rejected"
        elif not errors:
            outcome = "success"
        elif result is not None and (
            result.data is not None or any(e.path is not None for e in errors)
        ):
            outcome = "error"  # executed: resolvers ran and reported errors
        else:
            outcome = "rejected"  # did not parse, failed validation or a guard
        metrics.graphql_request(
            operation_type=operation_type,
            outcome=outcome,
            seconds=seconds,
        )
