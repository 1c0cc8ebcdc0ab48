"""Input no operation can accept, refused before anything runs: text with a NUL character.

No name, e-mail address, comment or template of OrderPulse can hold a NUL, and PostgreSQL cannot
store one (it failed deep inside a mutation as "Unexpected error.", while SQLite stored it). So a
NUL in a string literal of the document or anywhere in the variables is BAD_USER_INPUT for the
whole operation, on every database, before any resolver runs, on every transport (all go through
the schema's extensions). Ids and cursors out of range are the other
impossible input; `app.graphql.ids` refuses those where they are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import DocumentNode, GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension

NUL = "\x00"


def nul_error(
    document: DocumentNode | None, variables: Mapping[str, Any] | None
) -> GraphQLError | None:
    """BAD_USER_INPUT naming where a NUL is (a string literal, or a variable), or None."""
    for name, value in (variables or {}).items():
        if _holds_nul(value):
            return _refused(f"Variable '${name}' holds a NUL character")
    if document is not None and _may_hold_nul(document):
        found = _NulLiterals()
        visit(document, found)
        if found.node is not None:
            return _refused("A string literal holds a NUL character", found.node)
    return None


def _refused(where: str, node: StringValueNode | None = None) -> GraphQLError:
    return GraphQLError(
        f"{where}: text may not contain NUL (\\u0000)",
        nodes=node,
        extensions={"code": "BAD_USER_INPUT"},
    )


def _holds_nul(value: Any) -> bool:
    """Whether any string in a JSON value (keys too) holds a NUL; iterative, for any depth."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                return True
        elif isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _may_hold_nul(document: DocumentNode) -> bool:
    """A literal can only hold a NUL through a `\\u` escape (a raw NUL does not parse)."""
    source = document.loc.source.body if document.loc is not None else None
    return source is None or "\\u" in source


class _NulLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.node: StringValueNode | None = None

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        if NUL in node.value:
            self.node = node
            return self.BREAK
        return None


class RefuseImpossibleInput(SchemaExtension):
    """Ends an operation whose input holds a NUL (`nul_error`), as validation begins."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        error = nul_error(context.graphql_document, context.variables)
        if error is not None:
            raise error
        yield
