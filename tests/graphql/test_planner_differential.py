"""The read planner never changes an answer: documents drawn from the WHOLE schema, not its shapes.

tests/graphql/test_read_planner.py draws its documents from the shapes the planner covers, so a
document outside them (introspection, which broke for every signed-in client: issue 20) was never
compared with the executor. Here the documents come from a walk of the schema itself (the SDL the
app serves, read back by graphql-core): every root field and nested field with arguments given as
literals or variables (with and without defaults), introspection (`__schema`, `__type`,
`__typename` at every level), named and inline fragments (on the `Node` interface too),
`@include`/`@skip`, aliases, several operations with `operationName`, and invalid documents
(unknown fields, wrong argument and variable types, missing variables, syntax errors), mostly
within the guards and some past them.

Two apps over one database: the normal one (planner on) and one built with `read_planner=False`.
Every viewer (support, system, two resellers and their customers, no token, a bad token) sends
each document to both, over HTTP POST and GET (some also as automatic persisted queries), and
(signed in) as a websocket `subscribe`; the answers must be the same bytes: status and body, or
the socket's messages. And the planner must decline what it does not cover, never raise: a
request that makes it fall back (`orderpulse_planner_fallbacks_total`) fails the comparison.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    SchemaMetaFieldDef,
    TypeMetaFieldDef,
    ast_from_value,
    get_introspection_query,
    get_named_type,
    is_leaf_type,
    print_ast,
)
from graphql import build_schema as schema_from_sdl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlmodel import select
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from app.asgi import create_app
from app.graphql.ids import to_cursor
from app.graphql.planner import extension
from app.graphql.planner.extension import PlanCache, ReadPlanner
from app.notifications.models import Notification, NotificationTemplate
from app.observability.metrics import REGISTRY
from app.orders import service
from app.orders.flow import OrderType
from app.orders.models import Customer, Reseller, SalesOrder
from app.settings import Settings
from tests.support.api import SUPPORT, Factory, gid
from tests.support.clock import FakeClock
from tests.support.server import LiveServer, serve
from tests.support.world import make_world
from tests.support.ws import ws_client


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Every viewer sends each document several times to each app, on a clock that never moves.
    return {"rate_limit": "1000000/minute"}


# --- the world: two apps over one database, every viewer ----------------------------------------


@dataclass
class Pools:
    """Values for arguments: real IDs, cursors and numbers of the seeded rows, and wrong ones."""

    ids: dict[str, list[str]]  # by type name; "other": malformed or unknown
    cursors: list[str]
    numbers: list[str]
    type_names: list[str]

    def all_ids(self) -> list[str]:
        return [i for ids in self.ids.values() for i in ids]


@dataclass(repr=False)  # (Hypothesis prints the fixtures of a failing example)
class World:
    planned: Starlette
    executor: Starlette
    planned_http: httpx.AsyncClient
    executor_http: httpx.AsyncClient
    plans: PlanCache
    tokens: dict[str, str | None]  # viewer label -> token
    schema: GraphQLSchema  # the served SDL, read back by graphql-core
    pools: Pools


def plan_cache(app: Starlette) -> PlanCache:
    for factory in app.state.schema.extensions:
        made = factory() if callable(factory) else factory
        if isinstance(made, ReadPlanner):
            return made.plans
    raise AssertionError("the read planner is not installed")


async def seed(factory: Factory) -> tuple[dict[str, str | None], Pools]:
    """The shared world (two resellers, three customers, a token each), orders of each tenant in
    statuses with and without failures (notifications on), orders of other tenants, one order
    of several items; the tokens of every viewer, and the pools of argument values."""
    world = await make_world(factory, with_tokens=True)
    await factory.notify(world.reseller_a, customer_mail=True)
    # Values the databases must write as the serializers do (`planner.json_sql`): names JSON must
    # escape, money with and without finer digits than cents, times with and without microseconds.
    tricky = await factory.customer(
        world.reseller_a, name=TRICKY_NAME, credit_limit="1234.5678", requires_verification=True
    )
    await factory.reseller(name=TRICKY_NAME)
    clock = factory.services.clock
    assert isinstance(clock, FakeClock)
    orders: list[SalesOrder] = []
    for customer in world.customers.values():
        for status, total in zip(("PR", "PF", "CP", "LO", "MO"), TOTALS, strict=False):
            clock.advance(seconds=1, microseconds=len(orders) * 12345)
            orders.append(await factory.order(customer, status=status, total=total))
    for status in ("HL", "TM", "NP", "WP", "WZ", "WA"):  # each with a customer (and reseller)
        orders.append(await factory.order(None, status=status))
    orders.append(await factory.order(tricky, status="TM", total="0.0001"))
    async with factory.services.transaction() as session:
        items = [service.ItemInput(f"Seat {i}", i + 1, Decimal(f"{i}.5")) for i in range(3)]
        assert world.customer_a1.id is not None
        orders.append(
            await service.place_order(
                session,
                viewer=SUPPORT,
                customer_id=world.customer_a1.id,
                order_type=OrderType.RN,
                currency="EUR",
                items=items,
                config=factory.services.desk,
                now=factory.services.clock.now(),
            )
        )
    async with factory.services.db.read() as session:
        customers = list((await session.exec(select(Customer))).all())
        resellers = list((await session.exec(select(Reseller))).all())
        notifications = list((await session.exec(select(Notification))).all())
        templates = list((await session.exec(select(NotificationTemplate))).all())
    assert notifications and templates
    tokens: dict[str, str | None] = {"anonymous": None, "bad token": "not-a-token"}
    tokens.update(world.tokens)
    order = orders[0]
    assert order.id is not None
    pools = Pools(
        ids={
            "Order": [gid("Order", o) for o in [*orders[::4], orders[-1]]],
            "Customer": [gid("Customer", c) for c in customers[:4]],
            "Reseller": [gid("Reseller", r) for r in resellers[:3]],
            "Notification": [gid("Notification", n) for n in notifications[:2]],
            "NotificationTemplate": [gid("NotificationTemplate", t) for t in templates[:1]],
            "other": ["bad", "", gid("Customer", order), "T3JkZXI6OTk5OTk5"],
        },
        cursors=[to_cursor("order", order.id), to_cursor("customer", order.id), "bad"],
        numbers=[order.number, f" {order.number.lower()} ", "SO-NO-SUCH"],
        type_names=[],
    )
    return tokens, pools


@pytest.fixture
async def world(
    app: Starlette, settings: Settings, clock: FakeClock, factory: Factory
) -> AsyncIterator[World]:
    tokens, pools = await seed(factory)
    executor_app = create_app(settings.model_copy(update={"read_planner": False}), clock=clock)
    schema = schema_from_sdl(app.state.schema.as_str())
    pools.type_names = [*sorted(schema.type_map)[::3], "Nope", ""]
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as planned,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=executor_app), base_url="http://t"
        ) as executor,
    ):
        yield World(app, executor_app, planned, executor, plan_cache(app), tokens, schema, pools)
    await executor_app.state.services.db.dispose()


# --- documents drawn from the schema ------------------------------------------------------------

# Mutations that write nothing (an ID that finds nothing), to mix with queries in one document.
MUTATIONS = [
    'updateCustomerContact(input: {customerId: "bad", email: "a@b.example"})'
    " { customer { id } userErrors { field message code } }",
    'performOrderAction(input: {orderId: "bad", action: CANCEL}) { order { id } userErrors { code } }',
]
TRICKY_NAME = 'Zoë "Q" \\ \t <b>&amp; 😀\u2028'
TOTALS = ["19.5", "0.0001", "1234.5678", "4999.9999", "7"]
SUBSCRIPTIONS = ["orderStatusChanged { cursor to }", "notificationChanged { cursor }"]
WRONG_LITERALS = ['"wrong"', "1.5", "[1]", "{nope: 1}", "NOPE", "$undeclared"]


@dataclass
class Request:
    query: str
    variables: Any = None
    operation_name: str | None = None
    subscription: bool = False  # has a subscription operation (not sent over a websocket)
    accept: str | None = None  # over HTTP (graphql-response+json answers some errors with 400)
    persisted: str | None = None  # "hash and query" (registers it) or "hash" (runs it)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.query}
        if self.variables is not None:
            body["variables"] = self.variables
        if self.operation_name is not None:
            body["operationName"] = self.operation_name
        if self.persisted is not None:  # an automatic persisted query (Apollo's, urql's)
            sha256 = hashlib.sha256(self.query.encode()).hexdigest()
            body["extensions"] = {"persistedQuery": {"version": 1, "sha256Hash": sha256}}
            if self.persisted == "hash":
                del body["query"]
        return body


@dataclass
class Builder:
    """What a document being drawn has so far: its variables and fragments."""

    schema: GraphQLSchema
    pools: Pools
    max_depth: int
    directives: bool  # whether fields and fragments may carry @include/@skip
    paged: bool  # only `orders`, `orderStatusCounts` and `__typename` at the root
    variables: dict[str, Any] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)  # of the current operation
    declared_types: dict[str, str] = field(default_factory=dict)  # variable -> its type
    fragments: list[str] = field(default_factory=list)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def root_fields(schema: GraphQLSchema, type_: GraphQLObjectType) -> dict[str, GraphQLField]:
    """The type's fields, and on Query the introspection fields `__schema` and `__type`."""
    fields = dict(type_.fields)
    if type_ is schema.query_type:
        fields["__schema"] = SchemaMetaFieldDef
        fields["__type"] = TypeMetaFieldDef
    return fields


@st.composite
def input_value(draw: st.DrawFn, b: Builder, type_: GraphQLInputType, name: str) -> Any:
    """A (mostly) valid JSON value of an input type, from the pools where it names something."""
    if isinstance(type_, GraphQLNonNull):
        return draw(input_value(b, type_.of_type, name))
    if draw(st.integers(0, 9)) == 9:  # (Hypothesis draws 0, the simplest, often: keep it usual)
        return None
    if isinstance(type_, GraphQLList):
        return [draw(input_value(b, type_.of_type, name)) for _ in range(draw(st.integers(0, 2)))]
    if isinstance(type_, GraphQLEnumType):
        return draw(st.sampled_from(sorted(type_.values)))
    if isinstance(type_, GraphQLInputObjectType):
        names = draw(st.lists(st.sampled_from(sorted(type_.fields)), max_size=3, unique=True))
        names += [n for n, f in type_.fields.items() if _required(f.type, f.default_value)]
        return {n: draw(input_value(b, type_.fields[n].type, n)) for n in dict.fromkeys(names)}
    assert isinstance(type_, GraphQLScalarType), type_
    pools = b.pools
    if type_.name == "Int":
        if name == "first":
            return draw(st.sampled_from([0, 1, 2, 5, 20, 100, 101, -1]))
        return draw(st.integers(-2, 3))
    if type_.name == "Boolean":
        return draw(st.booleans())
    if type_.name == "ID":
        kind = name.removesuffix("Id").removesuffix("id")
        typed = pools.ids.get(kind[:1].upper() + kind[1:], [])
        return draw(st.sampled_from(typed + pools.all_ids() if typed else pools.all_ids()))
    if name == "after":
        return draw(st.sampled_from(pools.cursors))
    if name == "number":
        return draw(st.sampled_from(pools.numbers))
    if name == "name":  # __type(name:)
        return draw(st.sampled_from(pools.type_names))
    return draw(st.sampled_from(["", "x", "SO-000001"]))


def _required(type_: Any, default: Any) -> bool:
    from graphql import Undefined

    return isinstance(type_, GraphQLNonNull) and default is Undefined


def literal(value: Any, type_: GraphQLInputType) -> str:
    node = ast_from_value(value, type_)
    return "null" if node is None else print_ast(node)


@st.composite
def argument_text(draw: st.DrawFn, b: Builder, name: str, arg: GraphQLArgument) -> str:
    """`name: value`, the value a literal, a variable, or an object or list literal with
    variables inside; now and then a literal of the wrong type."""
    return f"{name}: {draw(value_text(b, arg.type, name))}"


@st.composite
def value_text(draw: st.DrawFn, b: Builder, type_: GraphQLInputType, name: str) -> str:
    """A value in a document: a literal, a variable (declared, with or without a default, sent
    or not), an object or list literal with values of its own, or a literal of the wrong type."""
    how = draw(st.integers(0, 19))
    if how == 19:
        return draw(st.sampled_from(WRONG_LITERALS))
    named = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if how == 18 and isinstance(named, GraphQLInputObjectType):
        names = draw(st.lists(st.sampled_from(sorted(named.fields)), max_size=3, unique=True))
        names += [n for n, f in named.fields.items() if _required(f.type, f.default_value)]
        fields = [
            f"{n}: {draw(value_text(b, named.fields[n].type, n))}" for n in dict.fromkeys(names)
        ]
        return "{" + ", ".join(fields) + "}"
    if how == 18 and isinstance(named, GraphQLList):
        items = [draw(value_text(b, named.of_type, name)) for _ in range(draw(st.integers(0, 2)))]
        return "[" + ", ".join(items) + "]"
    value = draw(input_value(b, type_, name))
    if how < 9:
        return literal(value, type_)
    same_type = [v for v, t in b.declared_types.items() if t == str(type_)]
    if same_type and how == 12:  # a variable the operation already uses elsewhere
        return f"${draw(st.sampled_from(same_type))}"
    variable = b.fresh("v")
    b.declared_types[variable] = str(type_)
    declaration = f"${variable}: {type_}"
    if how < 12:  # a default, sometimes overridden
        default = draw(input_value(b, type_, name))
        declaration += f" = {literal(default, type_)}"
        if draw(st.booleans()):
            b.variables[variable] = value
    elif how < 17 or not isinstance(type_, GraphQLNonNull):
        b.variables[variable] = value
    # else: a required variable that is not sent
    b.declared.append(declaration)
    return f"${variable}"


@st.composite
def directive(draw: st.DrawFn, b: Builder) -> str:
    """Now and then `@include`/`@skip`, literal or with a variable (sometimes defaulted)."""
    which = draw(st.integers(0, 11)) - 8
    if which < 0 or not b.directives:
        return ""
    name = "include" if which % 2 else "skip"
    if which < 2:
        return f" @{name}(if: {json.dumps(draw(st.booleans()))})"
    variable = b.fresh("d")
    if draw(st.booleans()):
        b.declared.append(f"${variable}: Boolean = {json.dumps(draw(st.booleans()))}")
        if draw(st.booleans()):
            b.variables[variable] = draw(st.booleans())
    else:
        b.declared.append(f"${variable}: Boolean!")
        b.variables[variable] = draw(st.booleans())
    return f" @{name}(if: ${variable})"


@st.composite
def selection_set(draw: st.DrawFn, b: Builder, type_: GraphQLNamedType, depth: int) -> str:
    """A selection of a composite type: fields (aliased, with arguments and directives, nested
    while the depth allows), `__typename`, inline fragments and named fragments."""
    if isinstance(type_, GraphQLInterfaceType | GraphQLUnionType):
        return draw(abstract_selection(b, type_, depth))
    assert isinstance(type_, GraphQLObjectType), type_
    fields = root_fields(b.schema, type_)
    names = sorted(fields)
    if type_ is b.schema.query_type and b.paged:  # the panel's roots (the planner's too)
        names = ["orders", "orders", "orderStatusCounts"]
    if depth >= b.max_depth:  # leaves only
        names = [n for n in names if is_leaf_type(get_named_type(fields[n].type))]
    names.append("__typename")
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
    parts = [draw(field_text(b, fields.get(name), name, depth)) for name in chosen]
    if type_.interfaces and draw(st.integers(0, 5)) == 5:
        parts.append(f"... on {type_.interfaces[0].name} {{ id }}")
    return draw(wrapped(b, type_, parts))


@st.composite
def abstract_selection(
    draw: st.DrawFn, b: Builder, type_: GraphQLInterfaceType | GraphQLUnionType, depth: int
) -> str:
    parts = []
    if isinstance(type_, GraphQLInterfaceType) and draw(st.booleans()):
        parts.append("id")
    if draw(st.booleans()):
        parts.append("__typename")
    possible = sorted(b.schema.get_possible_types(type_), key=lambda t: t.name)
    for object_type in draw(st.lists(st.sampled_from(possible), max_size=2, unique=True)):
        body = draw(selection_set(b, object_type, depth))
        if draw(st.booleans()):
            parts.append(f"... on {object_type.name}{draw(directive(b))} {{ {body} }}")
        else:
            name = b.fresh("F")
            b.fragments.append(f"fragment {name} on {object_type.name} {{ {body} }}")
            parts.append(f"...{name}{draw(directive(b))}")
    return " ".join(parts) or "__typename"


@st.composite
def field_text(
    draw: st.DrawFn, b: Builder, definition: GraphQLField | None, name: str, depth: int
) -> str:
    text = name
    if draw(st.integers(0, 5)) == 5:
        text = f"{b.fresh('a')}: {name}"
    if definition is not None:
        args = []
        for arg_name, arg in definition.args.items():
            if _required(arg.type, arg.default_value) or draw(st.booleans()):
                args.append(draw(argument_text(b, arg_name, arg)))
        if args:
            text += f"({', '.join(args)})"
    text += draw(directive(b))
    if definition is not None:
        named = get_named_type(definition.type)
        if not is_leaf_type(named):
            text += f" {{ {draw(selection_set(b, named, depth + 1))} }}"
    return text


@st.composite
def wrapped(draw: st.DrawFn, b: Builder, type_: GraphQLObjectType, parts: list[str]) -> str:
    """The parts as they are, or in an inline fragment (with or without a type condition), or
    in a named fragment."""
    how = draw(st.integers(0, 7))
    body = " ".join(parts)
    if how == 5:
        return f"... on {type_.name} {{ {body} }}"
    if how == 6:
        return f"...{draw(directive(b))} {{ {body} }}"
    if how == 7:
        name = b.fresh("F")
        b.fragments.append(f"fragment {name} on {type_.name} {{ {body} }}")
        return f"...{name}"
    return body


@st.composite
def operation(draw: st.DrawFn, b: Builder, name: str | None) -> tuple[str, str]:
    """One operation (`query` mostly); its kind and text."""
    b.declared = []
    b.declared_types = {}
    kind = draw(st.sampled_from(["query"] * 8 + ["mutation", "subscription"]))
    if kind == "mutation":
        body = draw(st.sampled_from(MUTATIONS))
    elif kind == "subscription":
        body = draw(st.sampled_from(SUBSCRIPTIONS))
    else:
        assert b.schema.query_type is not None
        body = draw(selection_set(b, b.schema.query_type, 1))
    head = kind if name is None else f"{kind} {name}"
    if b.declared:
        head += f"({', '.join(b.declared)})"
    if kind == "query" and name is None and not b.declared and draw(st.booleans()):
        head = ""  # the shorthand
    return kind, f"{head} {{ {body} }}".strip()


@st.composite
def documents(draw: st.DrawFn, schema: GraphQLSchema, pools: Pools) -> Request:
    """A document of one to three operations drawn from the schema, then now and then broken."""
    b = Builder(
        schema,
        pools,
        max_depth=draw(st.sampled_from([2, 3, 3, 4, 4, 5])),
        directives=draw(st.booleans()),
        paged=draw(st.booleans()),
    )
    count = draw(st.sampled_from([1, 1, 1, 2, 3]))
    names: list[str | None] = [None] if count == 1 and draw(st.booleans()) else []
    names += [f"Op{i}" for i in range(count - len(names))]
    kinds, texts = [], []
    for name in names:
        kind, text = draw(operation(b, name))
        kinds.append(kind)
        texts.append(text)
    operation_name = None
    named = [n for n in names if n is not None]
    if named and (count > 1 or draw(st.booleans())):
        operation_name = draw(st.sampled_from(named + ["Nope"] * (draw(st.integers(0, 9)) == 9)))
    if count > 1 and draw(st.integers(0, 9)) == 9:
        operation_name = None  # several operations, none named: an error
    query = " ".join(texts + b.fragments)
    variables: Any = b.variables or (None if draw(st.booleans()) else {})
    accept = draw(st.sampled_from([None, None, "application/graphql-response+json"]))
    request = Request(query, variables, operation_name, "subscription" in kinds, accept)
    return draw(broken(request))


@st.composite
def broken(draw: st.DrawFn, request: Request) -> Request:
    """The request as drawn (mostly), or one of the ways a client gets it wrong."""
    how = draw(st.integers(0, 29)) - 25  # mostly as drawn
    if how == 0:  # a syntax error
        request.query = request.query[: draw(st.integers(1, max(1, len(request.query) - 1)))]
    elif how == 1:  # an unknown field
        request.query = request.query.replace("{", "{ nope ", 1)
    elif how == 2 and isinstance(request.variables, dict) and request.variables:  # one missing
        del request.variables[draw(st.sampled_from(sorted(request.variables)))]
    elif how == 3 and isinstance(request.variables, dict) and request.variables:  # wrong type
        # (graphql-core coerces some: 5.0 to an Int, 1 to an ID, a value to a list of it)
        wrong = draw(st.sampled_from(["x", 1.5, 5.0, 1, "5", None, [1], {"nope": 1}, True, 2**40]))
        request.variables[draw(st.sampled_from(sorted(request.variables)))] = wrong
    elif how == 4:
        request.variables = draw(st.sampled_from([[1], "x", 3]))
    return request


@st.composite
def deep_documents(draw: st.DrawFn, schema: GraphQLSchema, pools: Pools) -> Request:
    """A chain of nested objects past the depth guard (12), pages of pages past the cost guard
    (20000), or a deep introspection chain (which the depth guard does not count)."""
    kind = draw(st.sampled_from(["depth", "cost", "introspection"]))
    if kind == "cost":
        first = draw(st.sampled_from([100, 50]))
        return Request(
            f"{{ customers(first: {first}) {{ edges {{ node {{ orders(first: {first}) {{ edges "
            "{ node { id number status customer { id name } } } } } } } }"
        )
    if kind == "depth":
        repeat = draw(st.integers(3, 4))  # Customer -> Customer: 5 levels
        inner = "reseller { customers { edges { node { " * repeat + "id" + " } } } }" * repeat
        order = pools.ids["Order"][0]
        return Request(f'{{ order(id: "{order}") {{ customer {{ {inner} }} }} }}')
    depth = draw(st.integers(10, 14))
    of_type = "ofType { " * depth + "name" + " }" * depth
    return Request(f'{{ __type(name: "Order") {{ fields {{ type {{ {of_type} }} }} }} }}')


# --- sending ------------------------------------------------------------------------------------


def headers(token: str | None, request: Request) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if request.accept is not None:
        headers["Accept"] = request.accept
    return headers


async def post(client: httpx.AsyncClient, token: str | None, request: Request) -> Any:
    response = await client.post("/graphql", json=request.body(), headers=headers(token, request))
    return response.status_code, response.content


async def get(client: httpx.AsyncClient, token: str | None, request: Request) -> Any:
    params = {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in request.body().items()
    }
    response = await client.get("/graphql", params=params, headers=headers(token, request))
    return response.status_code, response.content


async def over_websocket(server: LiveServer, token: str, request: Request) -> list[Any]:
    """Every message the server sends for the document subscribed on a fresh socket, up to its
    `complete` or `error` (or the socket's close)."""
    received: list[Any] = []
    async with ws_client(server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        payload: dict[str, Any] = request.body()
        await ws.send({"id": "d", "type": "subscribe", "payload": payload})
        try:
            while True:
                raw = await ws.receive_text()
                received.append(raw)
                if json.loads(raw).get("type") in ("complete", "error"):
                    break
        except ConnectionClosed as closed:
            frame = closed.rcvd
            received.append(
                ("closed", frame.code if frame else None, frame.reason if frame else "")
            )
    return received


def fallbacks() -> list[float]:
    """How often the planner raised (`orderpulse_planner_fallbacks_total`), by stage."""
    return [
        REGISTRY.get_sample_value("orderpulse_planner_fallbacks_total", {"stage": stage}) or 0.0
        for stage in ("compile", "run")
    ]


async def same_over_http(world: World, request: Request) -> None:
    """Planner on and off: the same status and bytes for every viewer, over POST and GET; and
    the planner declined what it does not cover (`NotCovered`) rather than raised."""
    raised = fallbacks()
    for label, token in world.tokens.items():
        planned = await post(world.planned_http, token, request)
        assert planned == await post(world.executor_http, token, request), (label, request)
        planned = await get(world.planned_http, token, request)
        assert planned == await get(world.executor_http, token, request), ("GET", label, request)
    assert fallbacks() == raised, request


HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(HYPOTHESIS, max_examples=100)
@given(data=st.data())
async def test_documents_from_the_whole_schema_get_the_executors_answer_for_every_viewer(
    world: World, data: st.DataObject
) -> None:
    request = data.draw(documents(world.schema, world.pools), label="request")
    answered = world.plans.answered
    await same_over_http(world, request)
    event(f"planned: {world.plans.answered > answered}")


@settings(HYPOTHESIS, max_examples=6)
@given(data=st.data())
async def test_documents_past_the_guards_get_the_executors_answer(
    world: World, data: st.DataObject
) -> None:
    request = data.draw(deep_documents(world.schema, world.pools), label="request")
    await same_over_http(world, request)
    _status, body = await post(world.planned_http, world.tokens["support"], request)
    assert (b'"QUERY_TOO_COMPLEX"' in body) == ("ofType" not in request.query), body


# --- every field of every type, once, on a path from the root -------------------------------------


def field_paths(schema: GraphQLSchema, pools: Pools) -> dict[str, str]:
    """For each composite type reachable from Query (introspection's included): a document that
    selects every field of the type (composite ones with their `__typename`) at the end of the
    shortest path to it, required arguments given from the pools."""
    assert schema.query_type is not None

    def arguments(definition: GraphQLField) -> str:
        given = []
        for name, arg in definition.args.items():
            if not _required(arg.type, arg.default_value):
                continue
            if get_named_type(arg.type).name == "ID":
                given.append(f'{name}: "{pools.ids["Order"][0]}"')
            else:  # __type(name:)
                given.append(f'{name}: "Order"')
        return f"({', '.join(given)})" if given else ""

    paths: dict[str, Callable[[str], str]] = {schema.query_type.name: lambda inner: inner}
    queue = [schema.query_type]
    while queue:
        parent = queue.pop(0)
        for name, definition in root_fields(schema, parent).items():
            named = get_named_type(definition.type)
            if is_leaf_type(named) or named.name in paths:
                continue
            outer = paths[parent.name]
            step = f"{name}{arguments(definition)}"
            if isinstance(named, GraphQLInterfaceType):  # reach each implementation through it
                paths[named.name] = lambda inner, outer=outer, step=step: outer(
                    f"{step} {{ {inner} }}"
                )
                for possible in schema.get_possible_types(named):
                    if possible.name not in paths:
                        paths[possible.name] = (
                            lambda inner, outer=outer, step=step, on=possible.name: outer(
                                f"{step} {{ ... on {on} {{ {inner} }} }}"
                            )
                        )
                        queue.append(possible)
                continue
            assert isinstance(named, GraphQLObjectType)
            paths[named.name] = lambda inner, outer=outer, step=step: outer(f"{step} {{ {inner} }}")
            queue.append(named)
    documents = {}
    for type_name, path in paths.items():
        type_ = schema.get_type(type_name)
        assert type_ is not None
        if isinstance(type_, GraphQLInterfaceType):
            documents[type_name] = "{ " + path("__typename id") + " }"
            continue
        assert isinstance(type_, GraphQLObjectType)
        parts = ["__typename"]
        for name, definition in root_fields(schema, type_).items():
            if is_leaf_type(get_named_type(definition.type)):
                parts.append(f"{name}{arguments(definition)}")
            else:
                parts.append(f"{name}{arguments(definition)} {{ __typename }}")
        documents[type_name] = "{ " + path(" ".join(parts)) + " }"
    return documents


async def test_every_field_of_every_type_gets_the_executors_answer(world: World) -> None:
    documents = field_paths(world.schema, world.pools)
    reachable = {
        name
        for name, t in world.schema.type_map.items()
        if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)
        and name not in ("Mutation", "Subscription")
        and not name.endswith("Payload")
        # (the changes only subscriptions yield, and errors only payloads carry)
        and name not in ("UserError", "NotificationChange", "IncidentChange")
    }
    assert reachable <= set(documents), reachable - set(documents)
    for document in documents.values():
        await same_over_http(world, Request(document))


# --- the documents the tools send, on every transport -------------------------------------------

ORDER_FIELDS = "fragment OrderFields on Order { id number status total { amount currency } }"
PAGE = Request("{ orders(first: 2) { __typename edges { node { __typename id } } } __typename }")
LANDMARKS = [
    Request("{ __schema { queryType { name } } }"),
    Request("{ __typename __schema { types { name kind } } }"),
    Request(get_introspection_query(descriptions=True), operation_name="IntrospectionQuery"),
    Request("query($name: String!) { __type(name: $name) { name kind } }", {"name": "Order"}),
    Request('{ __type(name: "OrderStatus") { enumValues { name description } } }'),
    PAGE,
    Request(
        "query A { orders(first: 3) { totalCount edges { node { ...OrderFields } } } } "
        "query B { __schema { mutationType { name } } } " + ORDER_FIELDS,
        operation_name="B",
    ),
    Request(
        "query A { orders(first: 3) { totalCount edges { node { ...OrderFields } } } } "
        "query B { __schema { mutationType { name } } } " + ORDER_FIELDS,
        operation_name="A",
    ),
    Request(
        "query($on: Boolean!) { orders(first: 2) { edges { node { id "
        "status @include(if: $on) } } } }",
        {"on": False},
    ),
    Request("{ orders { edges { node { id ... on Node { __typename } } } } viewer { role } }"),
    Request("{ orders(first: 2) { totalCount } orderStatusCounts { status count } nope }"),
    Request("{ orders(first: 2) { totalCount }"),
    Request("query($first: Int!) { orders(first: $first) { totalCount } }", {}),
    Request('{ orders(first: "two") { totalCount } }'),
]


async def test_the_documents_tools_send_get_the_executors_answer_on_every_transport(
    world: World, live_server: LiveServer
) -> None:
    """GraphiQL's and the code generators' introspection, and documents beside the planned
    shapes: the same over POST and GET for every viewer, also as automatic persisted queries,
    and over a websocket for each signed-in viewer."""
    nodes = [
        f'{{ node(id: "{i}") {{ __typename id ... on Order {{ number }} }} }}'
        for i in world.pools.all_ids()
    ]
    requests = LANDMARKS + [Request(n) for n in nodes]
    for request in requests:
        await same_over_http(world, request)
    for request in LANDMARKS:
        await same_over_http(world, replace(request, persisted="hash and query"))
        await same_over_http(world, replace(request, persisted="hash"))
    by_hash = replace(PAGE, persisted="hash")  # registered above: run from its plan
    answered = world.plans.answered
    _status, body = await post(world.planned_http, world.tokens["support"], by_hash)
    assert world.plans.answered == answered + 1
    assert json.loads(body)["data"]["orders"]["edges"][0]["node"]["__typename"] == "Order"
    async with serve(world.executor) as executor_server:
        for request in LANDMARKS:
            for label in ("support", "reseller a", "customer b1"):
                token = world.tokens[label]
                assert token is not None
                planned = await over_websocket(live_server, token, request)
                expected = await over_websocket(executor_server, token, request)
                assert planned == expected, (label, request)
    # and the planner did answer some of them (the comparison is not of the executor with itself)
    assert world.plans.answered > 0


@settings(HYPOTHESIS, max_examples=8)
@given(data=st.data())
async def test_documents_from_the_whole_schema_get_the_same_messages_over_a_websocket(
    world: World, live_server: LiveServer, data: st.DataObject
) -> None:
    request = data.draw(documents(world.schema, world.pools), label="request")
    if request.subscription:  # a live stream would never complete
        return
    async with serve(world.executor) as executor_server:
        for label in ("support", "reseller a", "customer b1"):
            token = world.tokens[label]
            assert token is not None
            planned = await over_websocket(live_server, token, request)
            assert planned == await over_websocket(executor_server, token, request), (
                label,
                request,
            )


# --- a planner that raises ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["compile", "run"])
async def test_a_planner_exception_gives_the_executors_answer_logged_and_counted(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    """A bug in the planner (here: compiling or running a plan raises) never reaches the
    client: the executor answers, the traceback is logged, and the fallback counted."""

    def compile_bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a planner bug")

    async def run_bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a planner bug")

    if stage == "compile":
        monkeypatch.setattr(extension, "compile_plan", compile_bug)
    else:
        monkeypatch.setattr(extension, "run_plan", run_bug)
    sample = ("orderpulse_planner_fallbacks_total", {"stage": stage})
    before = REGISTRY.get_sample_value(*sample) or 0.0
    answered = world.plans.answered
    request = Request("{ orders(first: 7) { totalCount edges { node { id number } } } }")
    token = world.tokens["reseller a"]
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        planned = await post(world.planned_http, token, request)
        assert planned == await post(world.executor_http, token, request)
        assert planned[0] == 200 and b'"errors"' not in planned[1]
        assert json.loads(planned[1])["data"]["orders"]["totalCount"] == 12  # reseller a's
    assert world.plans.answered == answered  # the executor answered both
    # compiled once (the document is then known not to plan), run twice
    assert REGISTRY.get_sample_value(*sample) == before + (1 if stage == "compile" else 2)
    failures = [r for r in caplog.records if r.name == "orderpulse.planner"]
    assert len(failures) == (1 if stage == "compile" else 2)
    for record in failures:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and str(record.exc_info[1]) == "a planner bug"
    assert not [r for r in caplog.records if "a planner bug" in r.getMessage()]


# --- hostile values -------------------------------------------------------------------------------


def opaque(text: str) -> str:
    """An ID or cursor as the server encodes them (`ids.to_global_id`), of any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


MALFORMED = [  # "²" is malformed like "bad" (str.isdigit() says it is a digit, int() says no)
    '{ orders(filter: {customerId: "%s"}) { totalCount } }',
    '{ orders(after: "%s") { totalCount } }',
    '{ orderStatusCounts(filter: {resellerId: "%s"}) { count } }',
]
KEYS = ["Customer:²", "order:²", "Reseller:²"]
NUL = '{ orders(filter: {number: "SO-\\u0000"}) { totalCount } }'  # SPEC 8: BAD_USER_INPUT
HOSTILE = [query % opaque(key) for query, key in zip(MALFORMED, KEYS, strict=True)] + [NUL]


async def test_hostile_ids_and_strings_get_the_executors_answer(world: World) -> None:
    """IDs and cursors whose key is not an ASCII number, a NUL in a string: whatever the
    executor answers, the planner answers the same (it may decline)."""
    for query in HOSTILE:
        for label, token in world.tokens.items():
            request = Request(query)
            planned = await post(world.planned_http, token, request)
            assert planned == await post(world.executor_http, token, request), (label, query)


async def test_an_id_whose_key_is_not_an_ascii_number_is_malformed_like_any_other(
    world: World,
) -> None:
    token = world.tokens["support"]
    raised = fallbacks()
    for query, key in zip(MALFORMED, KEYS, strict=True):
        hostile = await post(world.planned_http, token, Request(query % opaque(key)))
        assert hostile == await post(world.planned_http, token, Request(query % "bad")), query
    assert fallbacks() == raised


async def test_a_nul_in_a_filter_string_is_the_clients_error(world: World) -> None:
    raised = fallbacks()
    _status, body = await post(world.planned_http, world.tokens["support"], Request(NUL))
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert fallbacks() == raised
