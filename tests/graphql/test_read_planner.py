"""The read planner answers exactly as the executor: byte for byte, for every role and tenant.

Two apps over one database: the normal one (planner on) and one built with `read_planner=False`
(the generic executor answers everything). Hypothesis writes random documents over the covered
selection (subsets of Order's fields, aliases, repeated fields, fragments, variables or literals,
filters, first/after, good and bad) and every viewer posts each to both apps over HTTP; the
answers must be the same bytes, errors included. A second test checks the planned pages against
the rows each tenant owns, never against the executor alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from graphql import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from app.asgi import create_app
from app.graphql.ids import to_cursor, to_global_id
from app.graphql.planner.compile import compile_plan
from app.graphql.planner.extension import PlanCache, ReadPlanner
from app.graphql.reads import declaration
from app.graphql.schema import build_schema
from app.orders import service
from app.orders.flow import OrderType
from app.orders.models import Customer, Reseller, SalesOrder
from app.settings import Settings
from tests.support.api import SUPPORT, Factory, gid
from tests.support.clock import FakeClock

STATUSES = ["PR", "PF", "CP", "HL", "TM", "NP", "WA", "WP", "LO", "MO", "WZ"]  # reachable


@dataclass
class World:
    planned: httpx.AsyncClient
    executor: httpx.AsyncClient
    plans: PlanCache
    tokens: dict[str, str | None]  # viewer label -> token
    resellers: list[Reseller]
    customers: list[Customer]
    orders: list[SalesOrder]
    dialect: str  # the database's: "sqlite" or "postgresql"


def plan_cache(app: Starlette) -> PlanCache:
    """The plan cache of the app's schema (to check that plans really answered)."""
    for factory in app.state.schema.extensions:
        extension = factory() if callable(factory) else factory
        if isinstance(extension, ReadPlanner):
            return extension.plans
    raise AssertionError("the read planner is not installed")


async def seed(factory: Factory, rng: random.Random) -> tuple[list[Any], list[Any], list[Any]]:
    # Names the databases' JSON must escape as orjson does: quotes, a backslash, a tab, non-ASCII.
    tricky = 'Zoë "Q" \\ \t <b>&amp; 😀'
    resellers = [await factory.reseller(name=tricky if i == 0 else None) for i in range(3)]
    customers = [
        await factory.customer(resellers[i % 3], **({"name": tricky} if i == 1 else {}))
        for i in range(6)
    ]
    orders = []
    for _ in range(24):
        status = rng.choice(STATUSES)
        # Statuses that need a customer of their own (on hold, no payment method, ...) get one
        # of the same reseller's, made by the factory.
        customer = rng.choice(customers) if status in ("PR", "PF", "CP", "LO", "MO") else None
        total = rng.choice(["100.00", "19.5", "0.125", "1234.5678", "7"])
        orders.append(await factory.order(customer, status=status, total=total))
    async with factory.services.transaction() as session:  # an order of several items
        customer = customers[0]
        assert customer.id is not None
        items = [service.ItemInput(f"Seat {i}", i + 1, service.Decimal(f"{i}.5")) for i in range(3)]
        orders.append(
            await service.place_order(
                session,
                viewer=SUPPORT,
                customer_id=customer.id,
                order_type=OrderType.RN,
                currency="EUR",
                items=items,
                config=factory.services.desk,
                now=factory.services.clock.now(),
            )
        )
    async with factory.services.db.read() as session:  # customers the factory made on the way
        from sqlmodel import select

        customers = list((await session.exec(select(Customer))).all())
    return resellers, customers, orders


@pytest.fixture(params=[1, 2], ids=["data1", "data2"])
async def world(
    request: pytest.FixtureRequest,
    app: Starlette,
    settings: Settings,
    clock: FakeClock,
    factory: Factory,
) -> AsyncIterator[World]:
    rng = random.Random(request.param)
    resellers, customers, orders = await seed(factory, rng)
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "bad token": "not-a-token",
        "support": await factory.token("SUPPORT"),
        "system": await factory.token("SYSTEM"),
    }
    for reseller in resellers:
        tokens[f"reseller {reseller.id}"] = await factory.token("RESELLER", reseller=reseller)
    for customer in customers[:4]:
        tokens[f"customer {customer.id}"] = await factory.token("CUSTOMER", customer=customer)
    executor_app = create_app(settings.model_copy(update={"read_planner": False}), clock=clock)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as planned,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=executor_app), base_url="http://t"
        ) as executor,
    ):
        yield World(
            planned,
            executor,
            plan_cache(app),
            tokens,
            resellers,
            customers,
            list(orders),
            app.state.services.db.engine.dialect.name,
        )
    await executor_app.state.services.db.dispose()


# --- random documents ---------------------------------------------------------------------------

LEAVES = {
    "Order": [
        "id",
        "number",
        "type",
        "status",
        "version",
        "createdAt",
        "updatedAt",
        "availableActions",
        "requiresManualAction",
        "__typename",
    ],
    "Customer": [
        "id",
        "name",
        "contactEmail",
        "paymentMethod",
        "onHold",
        "requiresVerification",
        "creditLimit",
        "createdAt",
        "__typename",
    ],
    "Reseller": ["id", "name", "email", "createdAt", "__typename"],
    "Money": ["amount", "currency", "__typename"],
    "OrderItem": ["description", "quantity", "unitPrice", "__typename"],
    "OrderFailure": [
        "reason",
        "message",
        "remedy",
        "details",
        "failedAt",
        "slaDeadline",
        "escalatedAt",
        "__typename",
    ],
    "PageInfo": ["hasNextPage", "hasPreviousPage", "startCursor", "endCursor", "__typename"],
    "OrderStatusCount": ["status", "count", "__typename"],
}
OBJECTS = {
    "Order": {
        "total": "Money",
        "items": "OrderItem",
        "failure": "OrderFailure",
        "customer": "Customer",
        "reseller": "Reseller",
    },
}
ALIASES = st.sampled_from(["a", "b", "node", "id", "x1"])


@st.composite
def selection(draw: st.DrawFn, type_name: str, depth: int = 0) -> str:
    """A non-empty selection of `type_name`'s covered fields, with aliases and repeats."""
    names = LEAVES[type_name] + list(OBJECTS.get(type_name, {}))
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=6))
    parts = []
    used_aliases: set[str] = set()
    for name in chosen:
        text = name
        if name in OBJECTS.get(type_name, {}):
            text += " { " + draw(selection(OBJECTS[type_name][name], depth + 1)) + " }"
        if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
            alias = draw(ALIASES)
            if alias not in used_aliases and alias not in names:
                used_aliases.add(alias)
                text = f"{alias}: {text}"
        parts.append(text)
    if type_name == "Order" and draw(st.integers(0, 4)) == 0:
        parts.append("... on Node { id }")
    if draw(st.integers(0, 4)) == 0:
        parts = [f"... on {type_name} {{ {' '.join(parts)} }}"]
    return " ".join(parts)


@dataclass
class Request:
    query: str
    variables: dict[str, Any]


@st.composite
def arguments(
    draw: st.DrawFn, world: World, variables: dict[str, Any], declared: list[str], paged: bool
) -> str:
    """`(filter: ..., first: ..., after: ...)`, each given inline or as a variable."""
    args: list[str] = []

    def give(name: str, graphql_type: str, value: Any) -> None:
        if draw(st.booleans()):
            variable = f"v{len(declared)}"
            declared.append(f"${variable}: {graphql_type}")
            variables[variable] = value
            args.append(f"{name}: ${variable}")
        else:
            args.append(f"{name}: {literal(value, graphql_type)}")

    if draw(st.booleans()):
        order_filter: dict[str, Any] = {}
        if draw(st.booleans()):
            order_filter["status"] = draw(st.lists(st.sampled_from(STATUSES), max_size=3))
        if draw(st.integers(0, 3)) == 0:
            customer = draw(st.sampled_from(world.customers))
            order_filter["customerId"] = draw(
                st.sampled_from([gid("Customer", customer), gid("Reseller", customer), "bad"])
            )
        if draw(st.integers(0, 3)) == 0:
            reseller = draw(st.sampled_from(world.resellers))
            order_filter["resellerId"] = gid("Reseller", reseller)
        if draw(st.integers(0, 3)) == 0:
            order_filter["requiresManualAction"] = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            number = draw(st.sampled_from(world.orders)).number
            order_filter["number"] = draw(st.sampled_from([number, f" {number.lower()} "]))
        give("filter", "OrderFilter", order_filter)
    if paged and draw(st.booleans()):
        give("first", "Int", draw(st.sampled_from([None, 0, 1, 2, 5, 20, 100, 101, -1])))
    if paged and draw(st.integers(0, 2)) == 0:
        order = draw(st.sampled_from(world.orders))
        assert order.id is not None
        after = draw(
            st.sampled_from(
                [to_cursor("order", order.id), to_cursor("customer", order.id), "bad", None]
            )
        )
        give("after", "String", after)
    return f"({', '.join(args)})" if args else ""


def literal(value: Any, graphql_type: str) -> str:
    """A GraphQL literal of a JSON value (enum values bare)."""
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {literal(v, k)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"  # statuses: enum literals
    return json.dumps(value)


@st.composite
def documents(draw: st.DrawFn, world: World) -> Request:
    variables: dict[str, Any] = {}
    declared: list[str] = []
    roots = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["orders", "orders", "orderStatusCounts", "__typename"]))
        alias = f"r{len(roots)}: " if roots else ""
        if kind == "__typename":
            roots.append(alias + "__typename")
        elif kind == "orderStatusCounts":
            args = draw(arguments(world, variables, declared, paged=False))
            roots.append(
                f"{alias}orderStatusCounts{args} {{ {draw(selection('OrderStatusCount'))} }}"
            )
        else:
            args = draw(arguments(world, variables, declared, paged=True))
            node = draw(selection("Order"))
            fragments_used = draw(st.booleans())
            if fragments_used:
                node = "...OrderFields"
            parts = draw(
                st.lists(
                    st.sampled_from(["totalCount", "pageInfo", "edges", "cursor", "__typename"]),
                    min_size=1,
                    max_size=4,
                )
            )
            connection = []
            for part in parts:
                if part == "pageInfo":
                    connection.append(f"pageInfo {{ {draw(selection('PageInfo'))} }}")
                elif part in ("edges", "cursor"):
                    cursor = "cursor " if part == "cursor" or draw(st.booleans()) else ""
                    connection.append(f"edges {{ {cursor}node {{ {node} }} }}")
                else:
                    connection.append(part)
            roots.append(f"{alias}orders{args} {{ {' '.join(connection)} }}")
            if fragments_used:
                roots.append(f"__FRAGMENT__{draw(selection('Order'))}")
    fragment = ""
    body = []
    for root in roots:
        if root.startswith("__FRAGMENT__"):
            fragment = f" fragment OrderFields on Order {{ {root[len('__FRAGMENT__') :]} }}"
        else:
            body.append(root)
    if draw(st.integers(0, 5)) == 0:
        body.append("viewer { role }")  # not covered: the whole document goes to the executor
    head = f"query Q({', '.join(declared)})" if declared else "query Q"
    return Request(f"{head} {{ {' '.join(body)} }}{fragment}", variables)


async def post(client: httpx.AsyncClient, token: str | None, request: Request) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"query": request.query, "variables": request.variables}
    response = await client.post("/graphql", json=body, headers=headers)
    return response.status_code, response.content


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_planned_answers_are_the_executors_byte_for_byte(
    world: World, data: st.DataObject
) -> None:
    request = data.draw(documents(world))
    for label, token in world.tokens.items():
        planned = await post(world.planned, token, request)
        expected = await post(world.executor, token, request)
        assert planned == expected, (label, request)


PANEL = """{ orders(first: 50) { totalCount edges { node { id number status
  total { amount currency } failure { reason } customer { name contactEmail } reseller { name }
  } } } }"""


async def test_the_panel_page_is_planned_for_every_viewer(world: World) -> None:
    """The issue's panel query is answered from its plan (not by falling back) and equals."""
    authenticated = {k: v for k, v in world.tokens.items() if k not in ("anonymous", "bad token")}
    before = world.plans.answered
    for label, token in authenticated.items():
        request = Request(PANEL, {})
        planned = await post(world.planned, token, request)
        assert planned == await post(world.executor, token, request), label
        assert b'"errors"' not in planned[1]
    assert world.plans.answered - before == len(authenticated)


async def test_plans_see_only_the_viewers_own_orders(world: World) -> None:
    """Every order a tenant's plan returns is its own; counts are its own; other tenants' ids in
    the filter find nothing. Checked against the seeded rows, not against the executor."""
    query = """query($f: OrderFilter) {
      orders(first: 100, filter: $f) { totalCount edges { node { number customer { id }
        reseller { id email } } } }
      orderStatusCounts(filter: $f) { status count } }"""
    owners = {o.number: (o.reseller_id, o.customer_id) for o in world.orders}
    for reseller in world.resellers:
        token = world.tokens[f"reseller {reseller.id}"]
        own = {n for n, (r, _) in owners.items() if r == reseller.id}
        for other in world.resellers:
            filters: list[dict[str, Any] | None] = [None, {"resellerId": gid("Reseller", other)}]
            filters += [{"customerId": gid("Customer", c)} for c in world.customers]
            for order_filter in filters:
                before = world.plans.answered
                _status, body = await post(
                    world.planned, token, Request(query, {"f": order_filter})
                )
                assert world.plans.answered == before + 1
                data = json.loads(body)["data"]
                numbers = {e["node"]["number"] for e in data["orders"]["edges"]}
                assert numbers <= own
                for edge in data["orders"]["edges"]:
                    assert edge["node"]["reseller"]["id"] == gid("Reseller", reseller)
                    assert edge["node"]["reseller"]["email"] == reseller.email
                assert data["orders"]["totalCount"] == len(numbers)
                assert sum(c["count"] for c in data["orderStatusCounts"]) == len(numbers)
                if order_filter is None:
                    assert numbers == own
                if other.id != reseller.id and order_filter == {
                    "resellerId": gid("Reseller", other)
                }:
                    assert numbers == set()
    for label, token in world.tokens.items():
        if not label.startswith("customer "):
            continue
        customer_id = int(label.split()[1])
        own = {n for n, (_, c) in owners.items() if c == customer_id}
        _status, body = await post(world.planned, token, Request(query, {"f": None}))
        data = json.loads(body)["data"]
        numbers = {e["node"]["number"] for e in data["orders"]["edges"]}
        assert numbers == own
        assert {e["node"]["customer"]["id"] for e in data["orders"]["edges"]} <= {
            to_global_id("Customer", customer_id)
        }
        for edge in data["orders"]["edges"]:  # a customer never sees its reseller's e-mail
            assert edge["node"]["reseller"]["email"] == ""
        assert data["orders"]["totalCount"] == len(own)


async def test_total_count_is_right_past_the_last_page_and_for_empty_pages(world: World) -> None:
    """The plan's count rides on the page's rows; a page with no rows (past the end, `first: 0`,
    nothing matching) must still count like the executor, and from a plan."""
    query = """query($first: Int, $after: String, $f: OrderFilter) {
      orders(first: $first, after: $after, filter: $f) { totalCount edges { cursor } } }"""
    oldest = min(world.orders, key=lambda o: o.id or 0)
    assert oldest.id is not None
    cases: list[dict[str, Any]] = [
        {"first": 5},
        {"first": 0},
        {"first": 5, "after": to_cursor("order", oldest.id)},  # past the last page
        {"first": 0, "after": to_cursor("order", oldest.id)},
        {"first": 5, "f": {"number": "SO-NO-SUCH-ORDER"}},  # nothing matches
        {"first": 5, "after": to_cursor("order", oldest.id), "f": {"status": ["PF"]}},
    ]
    for label, token in world.tokens.items():
        if label in ("anonymous", "bad token"):
            continue
        for variables in cases:
            request = Request(query, variables)
            before = world.plans.answered
            planned = await post(world.planned, token, request)
            assert world.plans.answered == before + 1, (label, variables)
            assert planned == await post(world.executor, token, request), (label, variables)
            data = json.loads(planned[1])["data"]["orders"]
            if "after" in variables and "f" not in variables and label == "support":
                assert data["edges"] == [] and data["totalCount"] == len(world.orders)


SUBSELECTIONS = {
    "Money": "{ amount currency }",
    "OrderFailure": "{ reason remedy details failedAt slaDeadline escalatedAt }",
    "OrderItem": "{ description quantity unitPrice }",
    "Customer": "{ id }",
    "Reseller": "{ id }",
}


async def test_every_covered_field_alone_is_planned_and_equals_the_executor(world: World) -> None:
    """Page rows carry only the columns their document reads (the fields' declarations,
    `app.graphql.reads`): each declared field, selected alone, must still be answered by its plan
    (a column missing from its declaration would send the request to the executor) and equal the
    executor's answer."""
    schema = build_schema()._schema
    selections = []
    for type_name, path in (
        ("Order", "{}"),
        ("Customer", "customer {}"),
        ("Reseller", "reseller {}"),
    ):
        object_type = schema.get_type(type_name)
        for name, field in object_type.fields.items():
            if declaration(field) is None:
                continue  # the executor answers it
            named = field.type
            while hasattr(named, "of_type"):
                named = named.of_type
            leaf = f"{name} {SUBSELECTIONS[named.name]}" if named.name in SUBSELECTIONS else name
            selections.append(path.replace("{}", "{ " + leaf + " }") if path != "{}" else leaf)
    selections.append("failure { message }")  # rendered by Python: the row plan answers
    assert len(selections) > 20
    queries = {s: f"{{ orders(first: 30) {{ edges {{ node {{ {s} }} }} }} }}" for s in selections}
    in_sql = 0
    for selection, query in queries.items():  # which the database builds as JSON (their `sql`)
        root = compile_plan(schema, parse(query), None).roots[0]
        built = root.edge_json is not None and root.assemble_json is not None
        expected = not ("message" in selection or selection == "reseller { email }")
        assert built == expected, selection
        in_sql += built
    assert in_sql == len(queries) - 2  # distinct selections (customer { id } comes twice)
    tokens = {k: v for k, v in world.tokens.items() if k not in ("anonymous", "bad token")}
    dialect = world.dialect
    for selection, query in queries.items():
        for label, token in tokens.items():
            before = world.plans.answered
            planned = await post(world.planned, token, Request(query, {}))
            assert world.plans.answered == before + 1, (selection, label)
            assert planned == await post(world.executor, token, Request(query, {})), selection
        # and the database really built it as JSON: PostgreSQL the page in one row, SQLite each
        # edge (except items, which SQLite 3.40 cannot aggregate in order)
        plan = world.plans.cached(query)
        assert plan is not None
        shapes = {built.as_json for built in plan.roots[0].statements.values()}
        if "message" in selection or selection == "reseller { email }":
            expected_shape = None
        elif dialect == "postgresql":
            expected_shape = "aggregate"
        else:
            expected_shape = None if selection.startswith("items") else "rows"
        assert shapes == {expected_shape}, (selection, shapes)


async def test_a_reused_page_statement_is_per_viewer_and_sees_new_commits(
    world: World, factory: Factory
) -> None:
    """A page's statement is built once per root and inputs, then reused (`run.statement`): it
    holds SQL, not results, so an order committed between two requests is in the second; and
    each viewer has its own."""
    query = "{ orders(first: 100) { totalCount edges { node { number } } } }"
    first, second = world.resellers[:2]
    tokens = [world.tokens[f"reseller {first.id}"], world.tokens[f"reseller {second.id}"]]

    async def numbers(token: str | None) -> tuple[int, set[str]]:
        _status, body = await post(world.planned, token, Request(query, {}))
        page = json.loads(body)["data"]["orders"]
        return page["totalCount"], {e["node"]["number"] for e in page["edges"]}

    before = {token: await numbers(token) for token in tokens}
    assert before[tokens[0]][1].isdisjoint(before[tokens[1]][1])
    customer = next(c for c in world.customers if c.reseller_id == first.id)
    new = await factory.order(customer)
    after = {token: await numbers(token) for token in tokens}
    assert after[tokens[0]] == (before[tokens[0]][0] + 1, before[tokens[0]][1] | {new.number})
    assert after[tokens[1]] == before[tokens[1]]
    plan = world.plans.cached(query)
    assert plan is not None and len(plan.roots[0].statements) == 2  # one per viewer, reused
