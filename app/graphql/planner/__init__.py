"""The read planner: a known query document is planned once and then run from its plan.

Walking graphql-core's generic executor costs a coroutine and strawberry's resolver wrapping per
field, and an ORM object per row: most of a panel page's CPU (docs/PERFORMANCE.md has the
server CPU per page with the planner on and off). The fastest GraphQL servers (PostGraphile,
graphql-jit) instead compile a document once. This package does the same for the panel shapes:
`orders(filter, first, after)` (totalCount, pageInfo, edges, cursor, Order's own fields, its
items, failure, customer and reseller) and `orderStatusCounts(filter)`.

- `compile.py` turns a validated document into a `Plan` (cached per document text): which SQL a
  request needs and a tree of precompiled assemblers that build the response from the rows.
- `run.py` runs a plan: the same SQL conditions as the resolvers (`queries.order_conditions`,
  which asks `access.policy` for the viewer's scope), one joined page statement, the count and the
  items when selected, on one connection; values come from the fields' declarations
  (`app.graphql.reads`), which the resolvers are made from, and the schema's own serializers.
- `extension.py` hooks it into strawberry as a schema extension whose `on_execute` sets the
  result, so parsing, validation and every guard extension still run first, on every transport.

Anything the planner does not cover (other fields, directives, mutations, an error to report, a
variable that is not a plain value) goes to the normal executor, which stays the reference:
tests/graphql/test_read_planner.py requires byte-identical responses from both.
"""
