"""strawberry's graphql-core schema and a resolver's graphql-core info, read in one place.

strawberry builds a graphql-core `GraphQLSchema` from the decorated types and keeps it in
`Schema._schema`, with no public accessor (strawberry 0.341). The read planner, the guards, the
validation cache, the persisted documents and the websocket's executor all run graphql-core
functions (`validate`, `execute`'s context, field collection) on that schema, as strawberry's own
executor does. A subscription's resolver hands its document to the websocket's groups, which
execute it again for each event (`executed_document`).
"""

from __future__ import annotations

from typing import Any

from graphql import DocumentNode, GraphQLSchema
from strawberry import Info, Schema


def graphql_schema(schema: Schema) -> GraphQLSchema:
    """The graphql-core schema strawberry built for `schema` and executes against (private:
    `Schema._schema`; there is no public accessor)."""
    built: GraphQLSchema = schema._schema
    return built


def executed_document(info: Info[Any, Any]) -> DocumentNode:
    """The document a resolver runs in: its operation and the document's fragments, as a
    document graphql-core executes again (private: `Info._raw_info`, graphql-core's resolve
    info, which strawberry's `Info` wraps and exposes only in part: `operation`, not
    `fragments`)."""
    raw = info._raw_info
    return DocumentNode(definitions=(raw.operation, *raw.fragments.values()))
