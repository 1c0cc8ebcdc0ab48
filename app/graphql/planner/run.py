"""Run a plan: its arguments, its SQL (on one connection), then its assemblers.

The SQL conditions are the resolvers' own (`queries.order_conditions`: `access.policy`'s scope
plus the filter; `pagination.keyset_page`: the cursor), so both paths see the same rows. A page's
statement is built once per set of inputs and reused (`statement`). On PostgreSQL a page whose
edges `json_sql` covers is built as JSON by the database, with its count, in one statement. Else
the page's rows carry their customers and resellers (a join) and `totalCount` (a scalar subquery
on each row; a count of its own only past the last page); the items are asked only when selected.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    BooleanValueNode,
    EnumValueNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    StringValueNode,
    Undefined,
    ValueNode,
    VariableNode,
)
from graphql.utilities import type_from_ast
from sqlalchemy import ColumnElement, Integer, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from app.access.viewer import Viewer
from app.db import CompiledStatement, Database
from app.graphql.ids import to_cursor
from app.graphql.loaders import items_query
from app.graphql.pagination import count_query, keyset_page, page_info, page_size
from app.graphql.planner.compile import NotCovered, OrderSource, PageSource, Plan, Root
from app.graphql.planner.json_sql import JSON_SQL, Build, NotInSql, page_statement
from app.graphql.queries import OrderFilter, order_conditions, status_counts, status_counts_query
from app.graphql.types import ORDERS
from app.orders.flow import Role
from app.orders.models import Customer, Reseller, SalesOrder

MISSING: Any = object()
INT_RANGE = range(-(2**31), 2**31)

ORDER = SalesOrder.__table__  # type: ignore[attr-defined]
CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
RESELLER = Reseller.__table__  # type: ignore[attr-defined]
TABLES = {"order": ORDER, "customer": CUSTOMER, "reseller": RESELLER}


@dataclass(frozen=True)
class Layout:
    """The page statement of a set of needs, and how its rows split into light tuples with the ORM
    objects' attribute names (the row functions read those): only the columns the document reads,
    plus each table's id."""

    select: Select[Any]
    order: Any  # namedtuple types
    customer: Any
    reseller: Any
    joined: Any  # the FROM: orders, joined with customers and resellers when selected


@functools.cache
def layout(needs: frozenset[str]) -> Layout:
    """Built once per set of needs."""
    names: dict[str, list[str]] = {}
    for table in ("order", *(t for t in ("customer", "reseller") if t in needs)):
        wanted = {n.partition(".")[2] for n in needs if n.startswith(table + ".")} | {"id"}
        names[table] = [c.key for c in TABLES[table].c if c.key in wanted]  # the table's order
    joined = ORDER
    if "customer" in names:
        joined = joined.join(CUSTOMER, CUSTOMER.c.id == ORDER.c.customer_id)
    if "reseller" in names:
        joined = joined.join(RESELLER, RESELLER.c.id == ORDER.c.reseller_id)
    columns = [TABLES[table].c[name] for table, keys in names.items() for name in keys]
    types = {t: namedtuple(f"{t.title()}Row", keys) for t, keys in names.items()}
    return Layout(
        select(*columns).select_from(joined),
        types["order"],
        types.get("customer"),
        types.get("reseller"),
        joined,
    )


@functools.lru_cache(maxsize=4096)
def edge_expression(build: Build, role: Role, dialect: str) -> Any:
    """A plan's edge JSON for a role on a database, built once (`NotInSql` is not cached: the
    statement that falls back to rows is)."""
    return build(role, JSON_SQL[dialect])


async def run_plan(
    plan: Plan, *, schema: GraphQLSchema, db: Database, viewer: Viewer, variables: Any
) -> dict[str, Any]:
    """The response's `data`, or `NotCovered` (nothing is written either way)."""
    values = variable_values(plan, schema, variables)
    data: dict[str, Any] = {}
    async with db.read_connection() as conn:
        for root in plan.roots:
            if root.kind == "orders":
                page = await orders(conn, root, schema, viewer, values)
                assemble = root.assemble if page.edges_json is None else root.assemble_json
                assert assemble is not None
                data[root.key] = assemble(page)
            elif root.kind == "orderStatusCounts":
                filter = order_filter(schema, argument(schema, root, "filter", values))
                rows = (await conn.execute(status_counts_query(viewer, filter))).all()
                data[root.key] = root.assemble(status_counts(rows))
            else:
                data[root.key] = root.assemble(None)
    return data


@dataclass(frozen=True)
class PageStatement:
    """What a page runs, for one set of inputs (see `statement`)."""

    query: CompiledStatement  # the page's rows, or (as_json) its edges as JSON
    size: int
    after: str | None
    where: list[Any]
    counted: bool
    as_json: str | None  # "aggregate": one row, the page's edges (PostgreSQL); "rows": per edge
    shape: Layout


STATEMENTS_PER_ROOT = 256


def statement(
    conn: AsyncConnection, root: Root, schema: GraphQLSchema, viewer: Viewer, values: Any
) -> PageStatement:
    """The page's statement, built once per root and inputs (the viewer, `first`, `after`, the
    filter) and then reused: building the statement and its SQLAlchemy cache key cost more than
    running it. The key holds every input the statement is built from, so a reused statement is
    the statement those inputs build."""
    first = argument(schema, root, "first", values)
    after = argument(schema, root, "after", values)
    raw_filter = argument(schema, root, "filter", values)
    dialect = conn.dialect.name
    key = (viewer, first, after, orjson.dumps(raw_filter, option=orjson.OPT_SORT_KEYS), dialect)
    cache = root.statements
    found: PageStatement | None = cache.get(key)
    if found is not None:
        cache.move_to_end(key)
        return found
    where = order_conditions(viewer, order_filter(schema, raw_filter))
    counted = "count" in root.needs
    count = count_query(SalesOrder, where).correlate(None) if counted else None
    edge = None
    if root.edge_json is not None and dialect in JSON_SQL:
        try:
            edge = edge_expression(root.edge_json, viewer.role, dialect).label("edge")
        except NotInSql:  # on this database: the rows answer
            pass
    as_json = None if edge is None else "aggregate" if dialect == "postgresql" else "rows"
    try:
        size = page_size(first)
        shape = layout(root.needs)
        select_page = shape.select
        if edge is not None:
            select_page = select(ORDER.c.id.label("id"), edge).select_from(shape.joined)
        if count is not None and as_json != "aggregate":  # the count rides on every row
            select_page = select_page.add_columns(count.scalar_subquery())
        query = keyset_page(
            select_page.where(*where),
            ORDER.c.id,
            size=size,
            after=after,
            kind=ORDERS.kind,
            newest_first=ORDERS.newest_first,
            held=held_tenant(where),
            limit=bindparam(None, size + 1, type_=Integer, literal_execute=True),
        )
    except GraphQLError as error:  # a bad `first` or `after`: the executor reports it
        raise NotCovered(error.message) from error
    if as_json == "aggregate":
        query = page_statement(query.subquery("page"), count)
    found = PageStatement(CompiledStatement(query), size, after, where, counted, as_json, shape)
    cache[key] = found
    if len(cache) > STATEMENTS_PER_ROOT:
        cache.popitem(last=False)
    return found


TENANT_KEYS = (ORDER.c.customer_id, ORDER.c.reseller_id)
"""Columns a page may be held to one value of, each the head of an index `(column, id)`; the
narrower first."""


def held_tenant(where: Sequence[ColumnElement[bool]]) -> list[tuple[ColumnElement[Any], Any]]:
    """The first of `TENANT_KEYS` that `where` holds equal to a value, with that value: the
    page is read from the index `(column, id)`.

    The page's statement keeps the tenant a parameter and its LIMIT a literal (a page size is one
    of at most 101), so PostgreSQL can settle on one generic plan per statement and connection
    (it keeps planning a tenant's runs while the generic plan costs more than their own). A
    generic plan is costed for an average tenant; ordered by `id` with the cursor as `id < $n`,
    it may read the newest orders of every tenant by the primary key and filter out the others',
    most of the table for a small tenant. Ordered by `(tenant, id)` with the cursor as
    `(tenant, id) < ($1, $n)`, it reads the tenant's index from the cursor on, page-size rows."""
    equal: list[tuple[Any, Any]] = []
    for condition in _conjuncts(where):
        if isinstance(condition, BinaryExpression) and condition.operator is operators.eq:
            left, right = condition.left, condition.right
            if isinstance(right, BindParameter) and right.value is not None:
                equal.append((left, right.value))
    for column in TENANT_KEYS:
        for left, value in equal:
            if left.compare(column):  # (`left` may be `column` with annotations)
                return [(column, value)]
    return []


def _conjuncts(where: Sequence[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    for condition in where:
        if isinstance(condition, BooleanClauseList) and condition.operator is operators.and_:
            found += _conjuncts(list(condition.clauses))
        else:
            found.append(condition)
    return found


async def orders(
    conn: AsyncConnection, root: Root, schema: GraphQLSchema, viewer: Viewer, values: Any
) -> PageSource:
    built = statement(conn, root, schema, viewer, values)
    size, after = built.size, built.after
    if built.as_json == "aggregate":
        return await _json_page(conn, built)
    rows = await built.query.all(conn)
    has_next = len(rows) > size
    total = await _total(conn, built, rows)  # (from the rows with the one past the page)
    rows = rows[:size]
    if built.as_json == "rows":  # (id, edge JSON[, count]) per order
        ids = [row[0] for row in rows]
        edges = orjson.loads("[" + ",".join(row[1] for row in rows) + "]")  # one parse
        return PageSource([], _page_info(ids, has_next, after), total, edges_json=edges)
    page = [_order_source(row, built.shape, viewer) for row in rows]
    if "items" in root.needs and page:
        by_id = {source.row.id: source for source in page}
        for item in (await conn.execute(items_query(list(by_id)))).all():
            by_id[item.order_id].items.append(item)
    info = _page_info([source.row.id for source in page], has_next, after)
    return PageSource(orders=page, page_info=info, total=total)


async def _total(conn: AsyncConnection, built: PageStatement, rows: list[Any]) -> int | None:
    """`totalCount`, from the page's rows (it rides on each), or counted past the last page."""
    if not built.counted:
        return None
    if rows:
        return int(rows[0][-1])
    if built.after is None:  # nothing matches at all
        return 0
    return int((await conn.execute(count_query(SalesOrder, built.where))).scalar_one())


def _page_info(ids: list[int], has_next: bool, after: str | None) -> Any:
    cursors = [to_cursor(ORDERS.kind, ids[0]), to_cursor(ORDERS.kind, ids[-1])] if ids else []
    return page_info(cursors, has_next=has_next, has_previous=after is not None)


async def _json_page(conn: AsyncConnection, built: PageStatement) -> PageSource:
    """The page with its edges built by PostgreSQL (`json_sql`), with its count, in one row."""
    row = await built.query.first(conn)  # an aggregate: always one row
    assert row is not None
    edges = orjson.loads(row[0]) if row[0] is not None else []
    ids = orjson.loads(row[1]) if row[1] is not None else []
    return PageSource(
        orders=[],
        page_info=_page_info(ids[: built.size], len(ids) > built.size, built.after),
        total=int(row[2]) if built.counted else None,
        edges_json=edges[: built.size],
    )


def _order_source(row: Any, layout: Layout, viewer: Viewer) -> OrderSource:
    end = len(layout.order._fields)
    order = layout.order._make(row[:end])
    customer = reseller = None
    if layout.customer is not None:
        start, end = end, end + len(layout.customer._fields)
        customer = layout.customer._make(row[start:end])
    if layout.reseller is not None:
        start, end = end, end + len(layout.reseller._fields)
        reseller = layout.reseller._make(row[start:end])
    return OrderSource(order, customer, reseller, viewer)


# --- arguments and variables ------------------------------------------------------------------
# Only plain, well-typed values are taken; anything graphql-core would coerce (an Int given as
# 50.0, a single value for a list) or refuse goes to the executor, which says what it says.


def variable_values(plan: Plan, schema: GraphQLSchema, raw: Any) -> dict[str, Any]:
    given = raw if isinstance(raw, dict) else {}
    if raw is not None and not isinstance(raw, dict):
        raise NotCovered("variables")
    values: dict[str, Any] = {}
    for definition in plan.variables:
        name = definition.variable.name.value
        type_ = type_from_ast(schema, definition.type)
        if name in given:
            value = given[name]
        elif definition.default_value is not None:
            value = literal(definition.default_value, {})
        elif isinstance(type_, GraphQLNonNull):
            raise NotCovered(f"${name} missing")
        else:
            continue
        if type_ is None or not accepts(type_, value):  # type: ignore[arg-type]
            raise NotCovered(f"${name}")
        values[name] = value
    return values


def literal(node: ValueNode, variables: dict[str, Any]) -> Any:
    if isinstance(node, VariableNode):
        return variables.get(node.name.value, MISSING)
    if isinstance(node, NullValueNode):
        return None
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, StringValueNode | EnumValueNode | BooleanValueNode):
        return node.value
    if isinstance(node, ListValueNode):
        items = [literal(v, variables) for v in node.values]
        if any(v is MISSING for v in items):
            raise NotCovered("list item")
        return items
    if isinstance(node, ObjectValueNode):
        fields = {f.name.value: literal(f.value, variables) for f in node.fields}
        return {k: v for k, v in fields.items() if v is not MISSING}
    raise NotCovered(type(node).__name__)


def accepts(type_: GraphQLInputType, value: Any) -> bool:
    """Whether `value` is exactly of `type_` (no coercion needed)."""
    if isinstance(type_, GraphQLNonNull):
        return value is not None and accepts(type_.of_type, value)
    if value is None:
        return True
    if isinstance(type_, GraphQLList):
        return isinstance(value, list) and all(accepts(type_.of_type, v) for v in value)
    if isinstance(type_, GraphQLEnumType):
        return isinstance(value, str) and value in type_.values
    if isinstance(type_, GraphQLInputObjectType):
        if not isinstance(value, dict) or not set(value) <= set(type_.fields):
            return False
        for name, field in type_.fields.items():
            if name in value:
                if not accepts(field.type, value[name]):
                    return False
            elif isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined:
                return False
        return True
    if isinstance(type_, GraphQLScalarType):
        kind = type(value)
        if type_.name == "Int":
            return kind is int and value in INT_RANGE
        if type_.name in ("String", "ID"):
            return kind is str
        if type_.name == "Boolean":
            return kind is bool
    return False


def argument(schema: GraphQLSchema, root: Root, name: str, variables: dict[str, Any]) -> Any:
    node = root.arguments.get(name)
    if node is None:
        return None
    value = literal(node, variables)
    if value is MISSING:
        return None
    query_type = schema.query_type
    assert query_type is not None
    if not accepts(query_type.fields[root.kind].args[name].type, value):
        raise NotCovered(name)
    return value


def order_filter(schema: GraphQLSchema, raw: dict[str, Any] | None) -> OrderFilter | None:
    """The `OrderFilter` strawberry would give the resolver."""
    if raw is None:
        return None
    input_type = schema.get_type("OrderFilter")
    assert isinstance(input_type, GraphQLInputObjectType)
    options: dict[str, Any] = {}
    for name, value in raw.items():
        field = input_type.fields[name]
        python_name = field.extensions["strawberry-definition"].python_name
        named = field.type
        while isinstance(named, GraphQLNonNull | GraphQLList):
            named = named.of_type
        if isinstance(named, GraphQLEnumType) and value is not None:
            parse = named.parse_value
            value = [parse(v) for v in value] if isinstance(value, list) else parse(value)
        options[python_name] = value
    return OrderFilter(**options)
