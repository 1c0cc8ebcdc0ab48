"""A page of orders with customer, reseller and items costs a fixed number of SQL statements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import orjson
import pytest
from sqlalchemy import event
from sqlalchemy.util import await_only

from app.orders.models import SalesOrder
from app.services import Services
from tests.support.api import Factory, GraphQLClient, gid

PANEL = """{ orders(first: 100) { totalCount edges { node { number status
    total { amount currency } customer { name } reseller { name } items { quantity }
    failure { reason } } } } }"""


# Set only in the test's own context (which the request and its dataloader tasks inherit), so the
# background workers' statements (fan-out, outbox, escalations) are not counted.
_IN_REQUEST: ContextVar[bool] = ContextVar("in_request", default=False)
_CONTROL = {"", "BEGIN", "COMMIT", "ROLLBACK"}


@asynccontextmanager
async def counting(services: Services, *, control: bool = False) -> AsyncIterator[list[str]]:
    """The statements run for requests in this context, as the database driver sees them.

    On PostgreSQL: what SQLAlchemy executes, and what runs on asyncpg's connection directly
    (`app.db.CompiledStatement`: the token of every request, a planned page), seen by asyncpg's query
    loggers. (Those see no prepared statement, which is how SQLAlchemy runs its own, so nothing is
    counted twice.) On SQLite: every statement the sqlite3 connection runs (its trace callback),
    on connections a request checked out. `control` (PostgreSQL): instead, only what is not
    counted otherwise: transaction control (BEGIN, COMMIT, ROLLBACK) as asyncpg sends it."""
    statements: list[str] = []
    active = [True]

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _IN_REQUEST.get():
            statements.append(statement)

    def logged(query: Any) -> None:  # asyncpg calls it in the context of the query's task
        # not counted (as SQLAlchemy's events do not): transaction control, the pool's pre-ping
        is_control = query.query.strip(" ;").split(" ")[0] in _CONTROL
        if _IN_REQUEST.get() and is_control == control:
            statements.append(query.query)

    drivers: list[Any] = []
    traced: set[Any] = set()

    def checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        driver = connection_record.driver_connection
        if not services.db.is_sqlite:
            driver.add_query_logger(logged)  # a set: added once
            drivers.append(driver)
            return
        # sqlite3 calls the trace callback in aiosqlite's thread, where the request's context is
        # not: the connection's record says whether a request holds it
        info = connection_record.info
        info["in_request"] = _IN_REQUEST.get()
        if driver not in traced:
            traced.add(driver)

            def traced_sql(statement: str) -> None:
                verb = statement.strip(" ;").split(" ")[0].upper()
                if active[0] and info.get("in_request") and verb not in _CONTROL | {"PRAGMA"}:
                    statements.append(statement)

            await_only(driver.set_trace_callback(traced_sql))  # checkout runs in a greenlet

    engine = services.db.engine.sync_engine
    if not services.db.is_sqlite and not control:
        event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "checkout", checkout)
    reset = _IN_REQUEST.set(True)
    try:
        yield statements
        # asyncpg calls its query loggers with `call_soon`, after the query: let them run
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        _IN_REQUEST.reset(reset)
        active[0] = False
        if not services.db.is_sqlite and not control:
            event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "checkout", checkout)
        for driver in drivers:
            driver.remove_query_logger(logged)


# Planned (app/graphql/planner): on PostgreSQL the token and one statement that builds the page
# as JSON (edges with their customers, resellers and items, and the count); on SQLite the token,
# the page (joined with customers and resellers, the count as a scalar subquery) and the items.
# Executor: token, page, count, customers, resellers, items.
@pytest.mark.parametrize(
    ("settings_overrides", "expected"),
    [({"read_planner": True}, {"postgresql": 2, "sqlite": 3}), ({"read_planner": False}, 6)],
    ids=["planned", "executor"],
)
async def test_statements_do_not_grow_with_the_page(
    api: GraphQLClient, factory: Factory, services: Services, expected: Any
) -> None:
    if isinstance(expected, dict):
        expected = expected[services.db.engine.dialect.name]
    token = await factory.token("SUPPORT")
    client = api.as_(token)
    resellers = [await factory.reseller() for _ in range(3)]
    customers = [await factory.customer(resellers[i % 3]) for i in range(6)]
    for i in range(10):
        await factory.order(customers[i % 6])
    async with counting(services) as small:
        data = await client.data(PANEL)
    assert len(data["orders"]["edges"]) == 10
    for i in range(90):
        await factory.order(customers[i % 6], status="PF" if i % 10 == 0 else "PR")
    async with counting(services) as large:
        data = await client.data(PANEL)
    assert len(data["orders"]["edges"]) == 100
    assert len(small) == len(large) == expected, large
    if expected == 2:  # the page really was built by PostgreSQL
        assert sum("json_agg" in statement for statement in large) == 1


NO_ITEMS = """{ orders(first: 50) { totalCount edges { node { id number status
    total { amount currency } failure { reason } customer { name contactEmail } reseller { name }
    } } } }"""


@pytest.mark.parametrize("settings_overrides", [{"read_planner": True}])
async def test_a_panel_page_is_the_token_and_one_statement_that_builds_its_json(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    """The issue's panel page (no items): on both databases the page's edges come built as JSON
    by the database, in one statement with the count (PostgreSQL: one row for the page; SQLite:
    a row per edge, its ids, money and datetimes by the functions `json_sql` registers)."""
    token = await factory.token("SUPPORT")
    for i in range(60):
        await factory.order(status="PF" if i % 5 == 0 else "PR")
    async with counting(services) as statements:
        data = await api.as_(token).data(NO_ITEMS)
    assert len(data["orders"]["edges"]) == 50 and data["orders"]["totalCount"] == 60
    assert len(statements) == 2, statements
    page = statements[1]
    expected = "json_agg" if services.db.engine.dialect.name == "postgresql" else "json_object"
    assert expected in page and "count(" in page.lower(), page


PAGES = """query($after: String) { orders(first: 2, after: $after) { totalCount
    pageInfo { endCursor } edges { node { number customer { name } } } } }"""


async def _planned_pages(services: Services, client: GraphQLClient) -> tuple[Any, Any, list[Any]]:
    """A reseller's first and second page (`PAGES`) through the planner, and the page statements
    asyncpg ran for them (each with `.query` and `.args`)."""
    pages: list[Any] = []

    def logged(query: Any) -> None:
        if _IN_REQUEST.get() and "json_agg" in query.query:
            pages.append(query)

    def checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        connection_record.driver_connection.add_query_logger(logged)

    engine = services.db.engine.sync_engine
    event.listen(engine, "checkout", checkout)
    reset = _IN_REQUEST.set(True)
    try:
        first = (await client.data(PAGES))["orders"]
        after = first["pageInfo"]["endCursor"]
        second = (await client.data(PAGES, {"after": after}))["orders"]
        for _ in range(3):
            await asyncio.sleep(0)  # asyncpg calls its query loggers with `call_soon`
    finally:
        _IN_REQUEST.reset(reset)
        event.remove(engine, "checkout", checkout)
    return first, second, pages


@pytest.mark.parametrize("settings_overrides", [{"read_planner": True}])
async def test_a_postgresql_page_is_planned_once_per_connection(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    """On PostgreSQL a planned page's statement keeps the viewer's tenant a parameter (one
    statement for every tenant) and its page size a literal, so after its first runs the server
    runs one generic plan instead of planning each run anew (as it did with the LIMIT a
    parameter); the next page adds the cursor."""
    if services.db.is_sqlite:
        pytest.skip("PostgreSQL's prepared statements")
    import asyncpg

    from app.events.transport import asyncpg_dsn

    reseller = await factory.reseller()
    for _ in range(3):
        await factory.order(await factory.customer(reseller))
    await factory.order()  # another reseller's: never counted
    client = api.as_(await factory.token("RESELLER", reseller=reseller))
    first, second, pages = await _planned_pages(services, client)
    assert first["totalCount"] == second["totalCount"] == 3
    assert len(first["edges"]) == 2 and len(second["edges"]) == 1
    assert len(pages) == 2, [q.query for q in pages]
    assert set(pages[0].args) == {reseller.id} and reseller.id in pages[1].args
    assert len(set(pages[1].args)) == 2  # the tenant and the cursor
    assert "LIMIT 3" in pages[0].query and "LIMIT 3" in pages[1].query
    conn = await asyncpg.connect(asyncpg_dsn(services.db.url))
    try:
        page = await conn.prepare(pages[1].query)
        runs = 12
        for _ in range(runs):
            assert len(await page.fetch(*pages[1].args)) == 1
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            pages[1].query,
        )
    finally:
        await conn.close()
    # PostgreSQL plans the first five runs for their values, then settles on the generic plan
    assert plans is not None and (plans["custom_plans"], plans["generic_plans"]) == (5, runs - 5)


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of an EXPLAIN (FORMAT JSON) plan that read `sales_order`."""
    return [node for node in _nodes(plan) if node.get("Relation Name") == "sales_order"]


@pytest.mark.parametrize("settings_overrides", [{"read_planner": True}])
async def test_a_small_tenants_generic_plan_reads_its_own_index(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    """A small reseller's next page, when one other reseller holds 100,000 newer orders: the
    page statement's generic plan (made for no tenant in particular, the one PostgreSQL reuses)
    reads the page from the index on (reseller, id), a page's worth of rows; and the plan
    PostgreSQL runs after many runs reads only the small reseller's rows (its count too: a
    generic plan would count an average reseller's third of the table, so the server keeps
    planning this tenant's runs)."""
    if services.db.is_sqlite:
        pytest.skip("PostgreSQL's generic plans")
    import asyncpg

    from app.events.transport import asyncpg_dsn

    small = await factory.reseller()
    for _ in range(3):
        await factory.order(await factory.customer(small))
    template = await factory.order()  # the big reseller's
    table = SalesOrder.__table__  # type: ignore[attr-defined]
    copied = ", ".join(c.name for c in table.c if c.name not in ("id", "number"))
    conn = await asyncpg.connect(asyncpg_dsn(services.db.url))
    try:
        await conn.execute(
            f"INSERT INTO sales_order (number, {copied}) SELECT 'BIG-' || g, {copied}"
            " FROM sales_order, generate_series(1, 100000) AS g WHERE id = $1",
            template.id,
        )
        await conn.execute("ANALYZE sales_order")
        client = api.as_(await factory.token("RESELLER", reseller=small))
        first, second, pages = await _planned_pages(services, client)
        assert first["totalCount"] == second["totalCount"] == 3
        assert len(first["edges"]) == 2 and len(second["edges"]) == 1
        query, args = pages[1].query, pages[1].args
        assert all(type(value) is int for value in args)
        values = ", ".join(str(value) for value in args)
        await conn.execute(f"PREPARE page AS {query}")
        for _ in range(12):  # past the five runs after which PostgreSQL may choose a generic plan
            await conn.execute(f"EXECUTE page({values})")
        chosen = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({values})")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        generic = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({values})")
    finally:
        await conn.close()
    # Whichever plan PostgreSQL runs for the small reseller reads its rows only.
    for scan in _scans(orjson.loads(chosen)[0]["Plan"]):
        assert scan["Actual Rows"] <= 3 and scan.get("Rows Removed by Filter", 0) == 0, scan
    # The generic plan reads the page from the reseller's index, from the cursor on.
    plan = orjson.loads(generic)[0]["Plan"]
    (page,) = [node for node in _nodes(plan) if node["Node Type"] == "Limit"]
    scans = _scans(page)
    assert [scan.get("Index Name") for scan in scans] == ["ix_sales_order_reseller_id_id"], page
    assert scans[0]["Actual Rows"] == 1 and "$1" in scans[0]["Index Cond"], scans[0]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


@pytest.mark.parametrize("settings_overrides", [{"read_planner": True}])
async def test_a_planned_sqlite_page_makes_no_trip_to_a_connection_thread(
    api: GraphQLClient, factory: Factory, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the token and the page run on the event loop's thread (`app.db`, through
    `app.kernel.aiosqlite.sqlite3_connection`), and the connection goes back to the pool without a
    rollback of nothing: the request hands aiosqlite's threads no work at all. (Under load, those
    trips and the GIL passed between the threads cost several times SQLite's own work.)"""
    if not services.db.is_sqlite:
        pytest.skip("aiosqlite's threads")
    import aiosqlite

    token = await factory.token("SUPPORT")
    for _ in range(3):
        await factory.order()
    trips: list[Any] = []
    original = aiosqlite.Connection._execute

    async def execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if _IN_REQUEST.get():
            trips.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", execute)
    reset = _IN_REQUEST.set(True)
    try:
        first = await api.as_(token).data(NO_ITEMS)  # the plan and its statement are made here
        trips.clear()
        again = await api.as_(token).data(NO_ITEMS)
    finally:
        _IN_REQUEST.reset(reset)
    assert first == again and again["orders"]["totalCount"] == 3
    assert trips == []


@pytest.mark.parametrize("settings_overrides", [{"read_planner": True}, {"read_planner": False}])
async def test_a_request_never_waits_for_a_connection_while_holding_its_shared_one(
    api: GraphQLClient, factory: Factory, services: Services, settings_overrides: Any
) -> None:
    """A planned page reads its token and its page on one checked-out connection; when the
    executor answers instead, the request returns that connection before its resolvers open
    sessions of their own (otherwise a full pool could deadlock requests against each other)."""
    token = await factory.token("SUPPORT")
    reseller = await factory.reseller()
    for _ in range(3):
        await factory.order(await factory.customer(reseller))
    pool: list[str] = []  # "out" and "in", in order

    def checkout(*args: Any) -> None:
        if _IN_REQUEST.get():
            pool.append("out")

    def checkin(*args: Any) -> None:
        if _IN_REQUEST.get():
            pool.append("in")

    engine = services.db.engine.sync_engine
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    reset = _IN_REQUEST.set(True)
    try:
        data = await api.as_(token).data(PANEL)
    finally:
        _IN_REQUEST.reset(reset)
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)
    assert data["orders"]["totalCount"] == 3
    if settings_overrides["read_planner"]:
        assert pool == ["out", "in"]
    else:  # the token's connection comes back first; then the resolvers' sessions
        assert pool[:2] == ["out", "in"] and pool.count("out") > 1
        assert pool.count("out") == pool.count("in")


FAIL = """mutation($id: ID!) { reportProvisioningResult(input: {orderId: $id, outcome: FAILED,
    reason: EXTERNAL_SYSTEM_ERROR}) { order { status } userErrors { code } } }"""
RESUBMIT = """mutation($id: ID!) { performOrderAction(input: {orderId: $id, action: RESUBMIT}) {
    order { status } userErrors { code } } }"""


@pytest.mark.parametrize("recipients", [1, 3], ids=["support only", "support, reseller, customer"])
async def test_a_status_change_costs_a_fixed_number_of_statements(
    api: GraphQLClient, factory: Factory, services: Services, recipients: int
) -> None:
    """A failure: token, then on PostgreSQL the order with its mail's facts (customer, reseller,
    settings and template, joined LATERAL: app/notifications/recipients.py with_failure_mail)
    and one write: the order's version-checked UPDATE (announcing the event-log writer,
    app/events/log.py), the notifications and every event, in CTEs of one statement
    (app/notifications/recipients.py failed_order_statement); on SQLite the order, the update,
    the mail's facts, and each notification and event a row at a time (no ordered multi-row
    RETURNING). A resubmit: token, order, then the update with its event (one statement on
    PostgreSQL, two on SQLite). On PostgreSQL neither grows with the recipients.

    SPEC 10 (incidents): whether the failure opens or joins an incident is asked inside that one
    statement on PostgreSQL (`incidents.unless_involved`), and in one statement more on SQLite."""
    client = api.as_(await factory.token("SUPPORT"))
    reseller = await factory.reseller()
    if recipients == 3:
        await factory.notify(reseller, reseller_mail=True, customer_mail=True)
    order = await factory.order(await factory.customer(reseller), status="PR")
    sqlite = services.db.is_sqlite
    async with counting(services) as failing:
        data = await client.data(FAIL, {"id": gid("Order", order)})
    assert data["reportProvisioningResult"] == {"order": {"status": "PF"}, "userErrors": []}
    assert len(failing) == (6 + 2 * recipients if sqlite else 3), failing
    async with counting(services) as resubmitting:
        data = await client.data(RESUBMIT, {"id": gid("Order", order)})
    assert data["performOrderAction"] == {"order": {"status": "PR"}, "userErrors": []}
    assert len(resubmitting) == (4 if sqlite else 3), resubmitting


async def test_a_status_change_sends_no_begin_or_commit_on_postgresql(
    api: GraphQLClient, factory: Factory, services: Services
) -> None:
    """A failure and a resubmit each write one statement, on an autocommit connection
    (`Database.one_statement_write`): no BEGIN and COMMIT round trips around it, and no second
    checkout from the pool."""
    if services.db.is_sqlite:
        pytest.skip("SQLite writes take Database.write() (its one-writer lock)")
    client = api.as_(await factory.token("SUPPORT"))
    order = await factory.order(await factory.customer(await factory.reseller()), status="PR")
    checkouts: list[str] = []

    def checkout(*args: Any) -> None:
        if _IN_REQUEST.get():
            checkouts.append("out")

    engine = services.db.engine.sync_engine
    event.listen(engine, "checkout", checkout)
    try:
        async with counting(services, control=True) as control:
            failed = await client.data(FAIL, {"id": gid("Order", order)})
            resubmitted = await client.data(RESUBMIT, {"id": gid("Order", order)})
    finally:
        event.remove(engine, "checkout", checkout)
    assert failed["reportProvisioningResult"] == {"order": {"status": "PF"}, "userErrors": []}
    assert resubmitted["performOrderAction"] == {"order": {"status": "PR"}, "userErrors": []}
    assert control == []
    # each on one connection: the one its token was read on (`Database.request_reads`)
    assert checkouts == ["out", "out"]
    async with counting(services, control=True) as control:  # the counter sees them elsewhere
        async with services.transaction() as session:
            await (await session.connection()).exec_driver_sql("SELECT 1")
    assert [c.strip(" ;").split(" ")[0] for c in control] == ["BEGIN", "COMMIT"]
