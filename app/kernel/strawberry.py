"""strawberry's graphql-core schema, read in one place.

strawberry builds a graphql-core `GraphQLSchema` from the decorated types and keeps it in
`Schema._schema`, with no public accessor (strawberry 0.341). The read planner, the guards, the
validation cache, the persisted documents and the websocket's executor all run graphql-core
functions (`validate`, `execute`'s context, field collection) on that schema, as strawberry's own
executor does.
"""

from __future__ import annotations

from graphql import GraphQLSchema
from strawberry import Schema


def graphql_schema(schema: Schema) -> GraphQLSchema:
    """The graphql-core schema strawberry built for `schema` and executes against (private:
    `Schema._schema`; there is no public accessor)."""
    built: GraphQLSchema = schema._schema
    return built
