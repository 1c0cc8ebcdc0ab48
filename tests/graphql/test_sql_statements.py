"""A page of orders with customer, reseller and items costs a fixed number of SQL statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pytest
from sqlalchemy import event

from app.services import Services
from tests.support.api import Factory, GraphQLClient

PANEL = """{ orders(first: 100) { totalCount edges { node { number status
    total { amount currency } customer { name } reseller { name } items { quantity }
    failure { reason } } } } }"""


# Set only in the test's own context (which the request and its dataloader tasks inherit), so the
# background workers' statements (fan-out, outbox, escalations) are not counted.
_IN_REQUEST: ContextVar[bool] = ContextVar("in_request", default=False)


@contextmanager
def counting(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _IN_REQUEST.get():
            statements.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    reset = _IN_REQUEST.set(True)
    try:
        yield statements
    finally:
        _IN_REQUEST.reset(reset)
        event.remove(engine, "before_cursor_execute", record)


# Planned (app/graphql/planner): token, page (joined with customers and resellers, the count as
# a scalar subquery), items. Executor: token, page, count, customers, resellers, items.
@pytest.mark.parametrize(
    ("settings_overrides", "expected"),
    [({"read_planner": True}, 3), ({"read_planner": False}, 6)],
    ids=["planned", "executor"],
)
async def test_statements_do_not_grow_with_the_page(
    api: GraphQLClient, factory: Factory, services: Services, expected: int
) -> None:
    token = await factory.token("SUPPORT")
    client = api.as_(token)
    resellers = [await factory.reseller() for _ in range(3)]
    customers = [await factory.customer(resellers[i % 3]) for i in range(6)]
    for i in range(10):
        await factory.order(customers[i % 6])
    with counting(services) as small:
        data = await client.data(PANEL)
    assert len(data["orders"]["edges"]) == 10
    for i in range(90):
        await factory.order(customers[i % 6], status="PF" if i % 10 == 0 else "PR")
    with counting(services) as large:
        data = await client.data(PANEL)
    assert len(data["orders"]["edges"]) == 100
    assert len(small) == len(large) == expected, large
