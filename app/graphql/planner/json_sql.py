"""The database builds a page's edges as JSON: the plan's fastest form.

For an `orders` connection whose `edges` selection is covered here, the page statement returns the
edges already in their response shape and Python only parses them: no row objects, no per-field
assemblers. Each covered field is written as the SQL expression of what the schema's serializer
would return for the resolver's value (global ids, enum names, money as people write it, ISO
datetimes), so the response equals the executor's; `tests/graphql/test_read_planner.py` requires
that for random documents and for every covered field alone, on the suite's database. A field's
form is part of its declaration (`app.graphql.reads`); this module has the serializers in SQL
and walks a selection through the forms.

Each database has its `JsonSql`: PostgreSQL (`json_build_object` per edge, `json_agg` over the
page) writes every serializer in SQL; SQLite (`json_object`, one edge per row) has no base64 and
keeps money as REAL, so its ids, money and datetimes are SQL functions registered on each
connection (`SQLITE_FUNCTIONS`) that run the same Python the row path runs. SQLite before 3.44
cannot order an aggregate, so an order's `items` leave the document to the row plan there.
A field not covered here (a message rendered by Python, an e-mail the policy decides per viewer)
leaves the document to the row plan (`planner.run`), never to a guess.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
)
from sqlalchemy import Numeric, Text, case, cast, func, literal, literal_column, null, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from app.db import SQLITE_FUNCTIONS, UTCDateTime
from app.graphql.ids import to_global_id
from app.kernel.sqlalchemy import result_processor
from app.orders import flow
from app.orders.flow import Role
from app.orders.models import Customer, OrderItem, Reseller, SalesOrder

if TYPE_CHECKING:
    from app.graphql.planner.compile import Grouped

ORDER = SalesOrder.__table__  # type: ignore[attr-defined]
CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
RESELLER = Reseller.__table__  # type: ignore[attr-defined]
ITEM = OrderItem.__table__  # type: ignore[attr-defined]

Sql = ColumnElement[Any]
Build = Callable[[Role, "JsonSql"], Sql]
"""An expression, built for one role (`availableActions` depends on it) and one database."""


class NotInSql(Exception):
    """This selection has a field PostgreSQL does not build here: the row plan answers."""


# --- the serializers, in SQL ----------------------------------------------------------------------


def global_id(prefix: str, pk: Sql) -> Sql:
    """`ids.to_global_id`/`to_cursor`: base64url of "prefix:pk", without padding."""
    raw = func.encode(func.convert_to(literal(prefix + ":") + cast(pk, Text), "UTF8"), "base64")
    return func.rtrim(func.translate(raw, "+/", "-_"), "=")


def amount(value: Decimal) -> Decimal:
    """Money as people write it: cents always shown, finer digits only when there are any. (The
    API's form of money; `money` below is the same rule in SQL.)"""
    cents = value.quantize(flow.CENTS)
    return cents if cents == value else value.normalize()


def money(value: Sql) -> Sql:
    """`amount` then str(): cents always shown, finer digits only when there are any."""
    cents = func.round(value, 2)
    return case((value == cents, cast(cents, Text)), else_=func.rtrim(cast(value, Text), "0"))


def iso_datetime(value: Sql) -> Sql:
    """datetime.isoformat() of the stored UTC time: microseconds only when not zero."""
    seconds = func.to_char(value, 'YYYY-MM-DD"T"HH24:MI:SS')
    micro = func.to_char(value, "US")
    fraction = case((micro == "000000", literal("")), else_=literal(".") + micro)
    return seconds + fraction + literal("+00:00")


def enum_name(enum: type[Enum], value: Sql) -> Sql:
    """The GraphQL name of a stored enum value (the column itself when names are values)."""
    if all(member.name == member.value for member in enum):
        return value
    return case({member.value: literal(member.name) for member in enum}, value=value)


def json_list(values: list[str]) -> Sql:
    return func.json_build_array(*(literal(v) for v in values))


class JsonSql:
    """How PostgreSQL writes JSON and the serializers."""

    object_function = "json_build_object"

    def object(self, pairs: list[tuple[str, Sql]]) -> Sql:
        arguments: list[Any] = []
        for key, value in pairs:  # keys are GraphQL names (`_KEY`), safe as SQL literals
            arguments += [literal_column(f"'{key}'"), value]
        return getattr(func, self.object_function)(*arguments)  # type: ignore[no-any-return]

    def json(self, value: Sql) -> Sql:
        """A CASE or subquery whose value is JSON, as a JSON value (not a string)."""
        return value

    def array(self, values: list[str]) -> Sql:
        return json_list(values)

    def empty_array(self) -> Sql:
        return func.json_build_array()

    def boolean(self, value: Sql) -> Sql:
        return value

    def global_id(self, prefix: str, pk: Sql) -> Sql:
        return global_id(prefix, pk)

    def money(self, value: Sql) -> Sql:
        return money(value)

    def datetime(self, value: Sql) -> Sql:
        return iso_datetime(value)

    def items(self, item: Sql) -> Sql:
        agg = func.json_agg(aggregate_order_by(item, ITEM.c.position))
        rows = select(agg).where(ITEM.c.order_id == ORDER.c.id).scalar_subquery()
        return func.coalesce(rows, func.json_build_array())


class SqliteJson(JsonSql):
    """SQLite's JSON functions; ids, money and datetimes by `SQLITE_FUNCTIONS`."""

    object_function = "json_object"

    def json(self, value: Sql) -> Sql:
        return func.json(value)  # a CASE or subquery loses the JSON subtype: json() restores it

    def array(self, values: list[str]) -> Sql:
        return func.json_array(*(literal(v) for v in values))

    def empty_array(self) -> Sql:
        return func.json_array()

    def boolean(self, value: Sql) -> Sql:  # SQLite's booleans are 0 and 1
        written = case((value.is_(None), null()), (value, literal("true")), else_=literal("false"))
        return func.json(written)

    def global_id(self, prefix: str, pk: Sql) -> Sql:
        return func.op_global_id(literal(prefix), pk)

    def money(self, value: Sql) -> Sql:
        scale = getattr(value.type, "scale", None)
        assert isinstance(scale, int), value  # money columns are Numeric(18, scale)
        return func.op_money(value, literal(scale))

    def datetime(self, value: Sql) -> Sql:
        return func.op_datetime(value)

    def items(self, item: Sql) -> Sql:
        raise NotInSql("items: SQLite before 3.44 cannot order json_group_array")


JSON_SQL: Mapping[str, JsonSql] = {"postgresql": JsonSql(), "sqlite": SqliteJson()}
"""By dialect name; a database not here runs the row plan."""


# SQLite's serializers: what the row path computes from the same stored values (SQLAlchemy's own
# result processors of the columns' types), then the GraphQL serialization.
_SQLITE_DIALECT = sqlite.dialect()
_DATETIME = result_processor(UTCDateTime(), _SQLITE_DIALECT)


@functools.cache
def _numeric(scale: int) -> Callable[[Any], Decimal | None]:
    processor = result_processor(Numeric(18, scale), _SQLITE_DIALECT)
    assert processor is not None
    return processor


def _sqlite_global_id(prefix: str, pk: int | None) -> str | None:
    return None if pk is None else str(to_global_id(prefix, pk))


def _sqlite_money(value: Any, scale: int) -> str | None:
    stored = None if value is None else _numeric(scale)(value)
    return None if stored is None else str(amount(stored))


def _sqlite_datetime(value: Any) -> str | None:
    parsed = value if value is None or _DATETIME is None else _DATETIME(value)
    return None if parsed is None else str(parsed.isoformat())


SQLITE_FUNCTIONS.update(
    {
        "op_global_id": (2, _sqlite_global_id),
        "op_money": (2, _sqlite_money),
        "op_datetime": (1, _sqlite_datetime),
    }
)


# --- the SQL forms a field declaration gives (`app.graphql.reads`) ------------------------------


@dataclass(frozen=True)
class Leaf:
    build: Build


@dataclass(frozen=True)
class Child:
    """An object field (its type's fields read the tables in scope), or the order's `items`."""

    items: bool = False
    absent: Callable[[], Sql] | None = None  # when true, the object is null


def plain(column: Sql) -> Build:
    """A string or integer column, as it is."""
    return lambda _role, _sql: column


def global_id_of(prefix: str, pk: Sql) -> Build:
    return lambda _role, sql: sql.global_id(prefix, pk)


def money_of(column: Sql) -> Build:
    return lambda _role, sql: sql.money(column)


def datetime_of(column: Sql) -> Build:
    return lambda _role, sql: sql.datetime(column)


def enum_of(enum: type[Enum], column: Sql) -> Build:
    return lambda _role, _sql: enum_name(enum, column)


def boolean_of(column: Sql) -> Build:
    return lambda _role, sql: sql.boolean(column)


Forms = Callable[[GraphQLObjectType], Mapping[str, "Leaf | Child | None"] | None]
"""The SQL form of each field of a type (None: the type is not built in SQL); the planner reads
them from the fields' declarations (`app.graphql.reads`)."""
_KEY = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")  # a GraphQL name, safe to write as a SQL literal
_MAX_PAIRS = 50  # json_build_object takes at most 100 arguments


def edge_builder(
    object_type: GraphQLObjectType,
    nodes: list[FieldNode],
    collect: Callable[[GraphQLObjectType, list[Any]], Grouped],
    forms: Forms,
) -> Build:
    """The JSON of one `OrderEdge` for the page's row (ORDER, and CUSTOMER and RESELLER when joined,
    in scope), or `NotInSql`."""
    return _object(object_type, nodes, collect, forms)


def _object(
    object_type: GraphQLObjectType,
    nodes: list[FieldNode],
    collect: Callable[[GraphQLObjectType, list[Any]], Grouped],
    forms: Forms,
) -> Build:
    table = forms(object_type)
    if table is None:
        raise NotInSql(object_type.name)
    grouped = collect(object_type, [n.selection_set for n in nodes if n.selection_set])
    if len(grouped) > _MAX_PAIRS:
        raise NotInSql("too many fields")
    parts: list[tuple[str, Build]] = []
    for key, field_nodes in grouped.items():
        if not _KEY.match(key):
            raise NotInSql(key)
        name = field_nodes[0].name.value
        if name == "__typename":
            type_name = object_type.name
            parts.append((key, lambda _role, _sql, n=type_name: literal(n)))  # type: ignore[misc]
            continue
        spec = table.get(name)
        if spec is None:  # a field with no SQL form (the policy decides it, Python renders it)
            raise NotInSql(f"{object_type.name}.{name}")
        field_type = object_type.fields[name].type
        if isinstance(spec, Leaf):
            _check_leaf(field_type)
            parts.append((key, spec.build))
        else:
            parts.append((key, _child(spec, field_type, field_nodes, collect, forms)))

    def build(role: Role, sql: JsonSql) -> Sql:
        return sql.object([(key, part(role, sql)) for key, part in parts])

    return build


def _child(
    spec: Child,
    field_type: GraphQLOutputType,
    nodes: list[FieldNode],
    collect: Callable[[GraphQLObjectType, list[Any]], Grouped],
    forms: Forms,
) -> Build:
    inner = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if spec.items:  # [OrderItem!]!: the order's items, in their order
        assert isinstance(inner, GraphQLList)
        item_type = inner.of_type.of_type if isinstance(inner.of_type, GraphQLNonNull) else None
        assert isinstance(item_type, GraphQLObjectType)
        item = _object(item_type, nodes, collect, forms)

        def items(role: Role, sql: JsonSql) -> Sql:
            return sql.items(item(role, sql))

        return items
    assert isinstance(inner, GraphQLObjectType)
    built = _object(inner, nodes, collect, forms)
    absent = spec.absent
    if absent is None:
        return built
    return lambda role, sql: sql.json(case((absent(), null()), else_=built(role, sql)))


def _check_leaf(field_type: GraphQLOutputType) -> None:
    named: Any = field_type
    while isinstance(named, GraphQLNonNull | GraphQLList):
        named = named.of_type
    if isinstance(named, GraphQLObjectType):
        raise NotInSql(str(named))
    if isinstance(named, GraphQLEnumType) and getattr(named, "wrapped_cls", None) is None:
        raise NotInSql(str(named))


def page_statement(page: Any, total: Any | None) -> Any:
    """From the page subquery (columns `id`, `edge`; newest first, one row more than the page):
    its edges as one JSON text and their ids, in page order, and the total when counted (a
    statement of its own, as a scalar subquery: one round trip, even past the last page)."""
    columns: list[Any] = [
        cast(func.json_agg(aggregate_order_by(page.c.edge, page.c.id.desc())), Text),
        # their ids as JSON text too: an int[] would make asyncpg look its type up on every new
        # connection
        cast(func.json_agg(aggregate_order_by(page.c.id, page.c.id.desc())), Text),
    ]
    if total is not None:
        columns.append(total.scalar_subquery())
    return select(*columns).select_from(page)
