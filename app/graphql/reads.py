"""One declaration per read field: its value, the columns it reads and its SQL form, written once.

A planned type (`@planned`) is one the read planner (`app.graphql.planner`) answers: `Order`,
`Customer`, `Reseller` and the objects they hold. Each of its fields is declared in one of four
ways, and both the strawberry resolver and the planner are made from that declaration:

- `read(type, column)` or `read(type, function, reads=..., sql=...)`: a value of the type's row.
  The resolver and the planner's row plan call the same function; a plan's page selects the
  columns it `reads`; `sql` is how the database writes it as JSON (`planner.json_sql`; None: the
  row plan answers, e.g. a value the policy decides per viewer).
- `relation(join)`: an async resolver through the request's loaders; the planner reads the same
  rows from its page statement's `join` ("customer", "reseller", "items").
- `stored(sql)`: a field of a plain object built by its parent field (`Money`, `OrderFailure`).
- `metadata=EXECUTOR_ONLY` on a `strawberry.field`: the planner leaves any document selecting it
  to the executor.

`Node.id` is declared once for every node type (`NODE_ID`): a planned node type's id is the global
id of its table's `id`. The schema is not built (`require_declarations`) while a planned type has a
field declared none of these ways; the error names the field.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from operator import attrgetter
from types import NoneType, UnionType
from typing import Any, TypeVar, get_args

import strawberry
from graphql import GraphQLField, GraphQLObjectType
from sqlalchemy import Column, Table
from strawberry.types.private import is_private
from strawberry.utils.str_converters import to_camel_case

from app.graphql.context import Info, viewer_of
from app.graphql.planner.json_sql import (
    Build,
    Child,
    Leaf,
    amount,
    boolean_of,
    datetime_of,
    enum_of,
    money_of,
    plain,
)

DECLARED = "orderpulse.read"
"""The key of a field's declaration in its strawberry `metadata`."""

Sql = Leaf | Child | None
"""A field's SQL form: a JSON value, an object whose fields have their own, or none."""


@dataclass(frozen=True)
class Read:
    """A value of the type's row (and of the viewer, when `by_viewer`)."""

    value: Callable[..., Any]
    columns: tuple[Column[Any], ...]
    sql: Sql
    by_viewer: bool = False
    attribute: str | None = None  # `value` is this attribute of the row, as it is


@dataclass(frozen=True)
class Relation:
    """Rows of another table: a loader for the resolver, a join or a query for the planner."""

    join: str
    value: Callable[[Any], Any] | None  # from the joined rows; None: the row is the object
    sql: Child


@dataclass(frozen=True)
class Stored:
    """An attribute of a plain object that its parent field built."""

    sql: Leaf | None


class NodeId:
    """`Node.id`: the global id of the row's `id`."""


Declaration = Read | Relation | Stored | NodeId | None
NODE_ID: Mapping[str, Declaration] = {DECLARED: NodeId()}
EXECUTOR_ONLY: Mapping[str, Declaration] = {DECLARED: None}


def read(
    type_: Any,
    source: Column[Any] | Callable[..., Any],
    *,
    description: str,
    reads: tuple[Column[Any], ...] = (),
    sql: Sql = None,
    by_viewer: bool = False,
) -> Any:
    """A field whose resolver returns `source` of the row: a column (its value and SQL form follow
    from `type_`), or a function of the row (and the viewer) that reads the columns `reads`."""
    if isinstance(source, Column):
        declared = _column(type_, source)
    else:
        declared = Read(source, reads, sql, by_viewer)
    value = declared.value
    resolve: Callable[..., Any]
    if declared.by_viewer:

        def resolve(root: Any, info: Info) -> Any:
            return value(root.row, viewer_of(info))

    else:

        def resolve(root: Any) -> Any:
            return value(root.row)

    resolve.__annotations__ = {**resolve.__annotations__, "return": type_}
    return strawberry.field(
        resolver=resolve, description=description, metadata={DECLARED: declared}
    )


def _column(type_: Any, column: Column[Any]) -> Read:
    """A column as the type's value: enums by member, money as `amount`, the rest as stored;
    `X | None` as X, with None as None."""
    named = _not_none(type_)
    get = attrgetter(column.key)
    if isinstance(named, type) and issubclass(named, Enum):
        value = _converted(get, named, nullable=named is not type_)
        return Read(value, (column,), Leaf(enum_of(named, column)))
    if named is Decimal:
        value = _converted(get, amount, nullable=named is not type_)
        return Read(value, (column,), Leaf(money_of(column)))
    forms: dict[Any, Callable[[Column[Any]], Build]] = {
        str: plain,
        int: plain,
        bool: boolean_of,
        datetime: datetime_of,
    }
    if named not in forms:
        raise TypeError(f"read({type_!r}, {column}): give the function and its SQL form")
    return Read(get, (column,), Leaf(forms[named](column)), attribute=column.key)


def _not_none(type_: Any) -> Any:
    if isinstance(type_, UnionType):
        others = [t for t in get_args(type_) if t is not NoneType]
        if len(others) == 1:
            return others[0]
    return type_


def _converted(
    get: Callable[[Any], Any], convert: Callable[[Any], Any], *, nullable: bool
) -> Callable[[Any], Any]:
    if not nullable:
        return lambda row: convert(get(row))

    def value(row: Any) -> Any:
        stored = get(row)
        return None if stored is None else convert(stored)

    return value


def relation(
    join: str, *, description: str, value: Callable[[Any], Any] | None = None, sql: Child = Child()
) -> Any:
    """Decorates the field's async resolver: the planner reads the rows its page statement
    `join`s instead, and makes the field's value of them with `value` (None: the row is the
    related object)."""
    return strawberry.field(
        description=description, metadata={DECLARED: Relation(join, value, sql)}
    )


def stored(sql: Build | None, *, description: str) -> Any:
    """A field of a plain object type, with the SQL form of its value (None: not in SQL)."""
    leaf = None if sql is None else Leaf(sql)
    return strawberry.field(description=description, metadata={DECLARED: Stored(leaf)})


# --- planned types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    table: Table | None  # a node type's rows; None: a plain object type


PLANNED: dict[type, Planned] = {}
T = TypeVar("T", bound=type)


def planned(table: Table | None = None) -> Callable[[T], T]:
    """Registers a strawberry type for the read planner (`require_declarations` checks it)."""

    def register(cls: T) -> T:
        PLANNED[cls] = Planned(table)
        return cls

    return register


def require_declarations() -> None:
    """Refuse a planned type with a field declared none of the ways above, naming the field (at
    schema build, when every annotation resolves)."""
    for cls in PLANNED:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            if DECLARED not in field.metadata and not is_private(field.type):
                name = field.graphql_name or to_camel_case(field.python_name)
                raise TypeError(
                    f"{definition.name}.{name} has no read declaration: a field of a planned "
                    "type is declared with read(), relation() or stored() (app/graphql/reads.py), "
                    "or marked metadata=EXECUTOR_ONLY (see docs/EXTENDING.md)"
                )


def planned_type(object_type: GraphQLObjectType) -> Planned | None:
    definition = object_type.extensions.get("strawberry-definition")
    return PLANNED.get(getattr(definition, "origin", None))  # type: ignore[arg-type]


def declaration(field: GraphQLField) -> Declaration:
    """The field's declaration (None: the executor answers it)."""
    definition = field.extensions.get("strawberry-definition")
    declared: Declaration = getattr(definition, "metadata", {}).get(DECLARED)
    return declared
