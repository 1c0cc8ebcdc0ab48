"""Relay connections over keyset pagination (the cursor is the last row's id)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import strawberry
from sqlalchemy import ColumnElement, Select, func, tuple_
from sqlmodel import SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.db import Database
from app.graphql.context import bad_input
from app.graphql.ids import parse_cursor, to_cursor
from app.graphql.loaders import Loaders

MAX_PAGE = 100
DEFAULT_PAGE = 20

T = TypeVar("T")

First = Annotated[
    int | None, strawberry.argument(description="How many items, at most 100 (default 20).")
]
After = Annotated[
    str | None, strawberry.argument(description="Continue after this cursor (from `pageInfo`).")
]
M = TypeVar("M", bound=SQLModel)
Q = TypeVar("Q", bound=Select[Any])


@strawberry.type(description="Where a page stands in its list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether more items follow this page.")
    has_previous_page: bool = strawberry.field(description="Whether items precede this page.")
    start_cursor: str | None = strawberry.field(description="The cursor of the first edge.")
    end_cursor: str | None = strawberry.field(
        description="The cursor of the last edge; pass it as `after` for the next page."
    )


@strawberry.type(description="One item of a connection with its cursor.")
class Edge(Generic[T]):
    cursor: str = strawberry.field(description="Pass as `after` to continue after this item.")
    node: T = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, Relay style.")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(description="The items of this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many items the whole list has, for this viewer.")
    async def total_count(self) -> int:
        return await self.count()


@dataclass
class Page(Generic[M]):
    rows: Sequence[M]
    has_next: bool
    has_previous: bool
    count: Callable[[], Awaitable[int]]


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 0 or first > MAX_PAGE:
        raise bad_input(f"`first` must be between 0 and {MAX_PAGE}")
    return first


def keyset_page(
    query: Q,
    pk: ColumnElement[int],
    *,
    size: int,
    after: str | None,
    kind: str,
    newest_first: bool,
    held: Sequence[tuple[ColumnElement[Any], Any]] = (),
    limit: Any = None,
) -> Q:
    """`query` narrowed to the page after the cursor `after`: `size + 1` rows, the extra one
    telling whether more follow. Shared by `fetch_page` and the read planner.

    `held` names columns that `query`'s conditions hold equal to one value each (a tenant), with
    that value: the page is ordered by them and then `pk`, and the cursor compares the row
    `(held..., pk)`, which gives the same rows in the same order and lets an index on
    `(held..., pk)` bound the read on both sides (a cursor on `pk` alone also fits the primary
    key). `limit` is the LIMIT's expression (default: `size + 1` as a parameter)."""
    columns = [column for column, _ in held]
    if after is not None:
        after_pk = parse_cursor(after, kind)
        if after_pk is None:
            raise bad_input("`after` is not a cursor of this list")
        if columns:
            position = tuple_(*columns, pk)
            cursor = tuple_(*(value for _, value in held), after_pk)
            query = query.where(position < cursor if newest_first else position > cursor)
        else:
            query = query.where(pk < after_pk if newest_first else pk > after_pk)
    order = [*columns, pk]
    page: Q = query.order_by(
        *(column.desc() if newest_first else column.asc() for column in order)
    ).limit(size + 1 if limit is None else limit)
    return page


@functools.cache
def _count_all(model: type[SQLModel]) -> SelectOfScalar[int]:
    return select(func.count()).select_from(model)  # built once: func.count() is costly


def count_query(model: type[SQLModel], where: Sequence[ColumnElement[bool]]) -> SelectOfScalar[int]:
    """How many rows of `model` match `where` (a connection's `totalCount`)."""
    return _count_all(model).where(*where)


@dataclass(frozen=True)
class Listing(Generic[M]):
    """A list the API pages through: its rows, the kind its cursors name, its order, and the
    GraphQL object each row becomes (given the loaders of its request or event)."""

    model: type[M]
    kind: str
    newest_first: bool
    node: Callable[[M, Loaders], Any]

    async def connection(
        self,
        db: Database,
        loaders: Loaders,
        *,
        where: Sequence[ColumnElement[bool]],
        first: int | None,
        after: str | None,
    ) -> Connection[Any]:
        """The page of this list's rows matching `where` after the cursor `after`."""
        page = await fetch_page(db, self, where=where, first=first, after=after)
        return to_connection(page, self.kind, lambda row: self.node(row, loaders))


async def fetch_page(
    db: Database,
    listing: Listing[M],
    *,
    where: Sequence[ColumnElement[bool]],
    first: int | None,
    after: str | None,
) -> Page[M]:
    """One page of the listing's rows matching `where`, after the cursor `after`."""
    model = listing.model
    size = page_size(first)
    pk: ColumnElement[int] = col(model.id)  # type: ignore[attr-defined,assignment]
    query = keyset_page(
        select(model).where(*where),
        pk,
        size=size,
        after=after,
        kind=listing.kind,
        newest_first=listing.newest_first,
    )
    async with db.read() as session:
        rows = list((await session.exec(query)).all())

    async def count() -> int:
        async with db.read() as session:
            total = await session.exec(count_query(model, where))
            return int(total.one())

    return Page(
        rows=rows[:size], has_next=len(rows) > size, has_previous=after is not None, count=count
    )


def page_info(cursors: Sequence[str], *, has_next: bool, has_previous: bool) -> PageInfo:
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=has_previous,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )


def to_connection(page: Page[M], kind: str, wrap: Callable[[M], Any]) -> Connection[Any]:
    edges = [Edge(cursor=to_cursor(kind, row.id), node=wrap(row)) for row in page.rows]  # type: ignore[attr-defined]
    cursors = [edge.cursor for edge in edges]
    return Connection(
        edges=edges,
        page_info=page_info(cursors, has_next=page.has_next, has_previous=page.has_previous),
        count=page.count,
    )
