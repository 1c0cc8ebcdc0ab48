"""Hostile documents against a real server (issue 21, cases 3, 4 and 6; SPEC 8 "Hostile clients").

Introspection counts its real size against the cost limit; a document over
ORDERPULSE_MAX_DOCUMENT_BYTES is refused before it is parsed, hashed or kept, on every transport;
the caches hold hashes and bounded entries; persisted documents are stored only after every guard,
per token, within a quota; list inputs hold at most 100 items; the cost uses variables' defaults.
Figures (latency, CPU, RSS) are printed, never asserted as timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query, parse
from sqlalchemy import func
from sqlmodel import select
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosedError

from app.documents.models import RegisteredDocument, TrustedDocument
from app.graphql.context import Context
from app.graphql.guards import oversized_list
from app.graphql.loaders import Loaders
from app.graphql.schema import OrderPulseSchema, build_schema
from app.services import Services
from app.settings import Settings
from tests.graphql.test_guards import ALIASES_QUERY, DEEP_QUERY, TOKENS_QUERY
from tests.graphql.test_persisted import documents_add
from tests.support.api import SUPPORT, Factory
from tests.support.server import LiveServer
from tests.support.ws import WSClient, ws_client

# --- documents ----------------------------------------------------------------------------------

# the attack: thirty aliases of a deep `__schema` selection, within the token, depth and
# introspection-depth limits (graphql-core's MaxIntrospectionDepthRule): every type in full,
# with the standard query's own fragments
_FRAGMENTS = get_introspection_query()[get_introspection_query().index("fragment FullType") :]
INTROSPECTION_ATTACK = (
    "{ " + " ".join(f"a{i}: __schema {{ types {{ ...FullType }} }}" for i in range(30)) + " }"
) + _FRAGMENTS
STANDARD_INTROSPECTION = {
    "graphql-core default": get_introspection_query(),
    "without descriptions": get_introspection_query(descriptions=False),
    "GraphiQL 3 (input value deprecation, repeatable, schema description)": (
        get_introspection_query(
            input_value_deprecation=True, directive_is_repeatable=True, schema_description=True
        )
    ),
    "graphql-codegen (everything)": get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    ),
}
VIEWER = "{ viewer { role } }"
STATUSES = "query($s: [OrderStatus!]) { orders(filter: {status: $s}) { totalCount } }"
# the COSTLY_QUERY of test_guards, its page a variable with a default: 30401 when unsent
DEFAULT_COSTLY = "query($n: Int = 100) { orders(first: $n) { edges { node { customer { orders(first: 100) { edges { node { id } } } } } } } }"


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(document)}}


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


async def post(
    server: LiveServer,
    token: str | None,
    body: dict[str, Any],
    *,
    accept: str = "application/json",
    http: httpx.AsyncClient | None = None,
) -> httpx.Response:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if http is not None:
        return await http.post(server.http_url, json=body, headers=headers)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(server.http_url, json=body, headers=headers)


async def get(server: LiveServer, token: str, params: dict[str, Any]) -> httpx.Response:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(
            server.http_url,
            params=query,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )


@asynccontextmanager
async def connected(server: LiveServer, token: str) -> AsyncIterator[WSClient]:
    async with ws_client(server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        yield ws


async def over_socket(server: LiveServer, token: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with connected(server, token) as ws:
        await ws.send({"id": "1", "type": "subscribe", "payload": payload})
        return await ws.receive()


async def registered_rows(services: Services) -> list[tuple[int, str]]:
    async with services.db.read() as session:
        rows = await session.exec(select(RegisteredDocument))
        return sorted((row.token_id, row.sha256) for row in rows)


async def trusted_count(services: Services) -> int:
    async with services.db.read() as session:
        count = await session.scalar(select(func.count()).select_from(TrustedDocument))
    return int(count or 0)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


@pytest.fixture
async def token(factory: Factory) -> str:
    return await factory.token("SUPPORT")


# --- case 3: introspection counts what it really costs -----------------------------------------


def test_introspection_costs_about_the_fields_of_its_answer() -> None:
    """Figures: the cost and CPU of the standard introspection query and of the attack."""
    schema = build_schema()
    graphql_schema = schema._schema
    for name, query in [*STANDARD_INTROSPECTION.items(), ("30-alias attack", INTROSPECTION_ATTACK)]:
        document = parse(query)
        cost = schema.guards.cost(graphql_schema, document, None, None)
        started = time.process_time()
        from graphql import execute

        result = execute(graphql_schema, document)
        cpu = time.process_time() - started
        answer = json.dumps(result.data)
        print(f"{name}: cost {cost}, answer {len(answer)} bytes, execution CPU {cpu * 1000:.1f} ms")
        if query is INTROSPECTION_ATTACK:
            assert cost > schema.guards.max_cost
        else:
            assert cost <= schema.guards.max_cost // 2, (name, cost)  # room for the schema to grow


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no token"])
async def test_the_introspection_attack_is_refused_and_the_standard_query_runs(
    live_server: LiveServer, token: str, with_token: bool
) -> None:
    bearer = token if with_token else None
    response = await post(live_server, bearer, {"query": INTROSPECTION_ATTACK})
    body = response.json()
    assert response.status_code == 200 and body["data"] is None, body
    assert codes(body) == ["QUERY_TOO_COMPLEX"]
    assert "more than the 20000 allowed" in body["errors"][0]["message"]
    graphql_response = await post(
        live_server,
        bearer,
        {"query": INTROSPECTION_ATTACK},
        accept="application/graphql-response+json",
    )
    assert graphql_response.status_code == 400
    for name, query in STANDARD_INTROSPECTION.items():
        response = await post(live_server, bearer, {"query": query})
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, (name, body)
        assert body["data"]["__schema"]["queryType"]["name"] == "Query", name


async def test_an_introspection_answer_is_computed_once_for_every_viewer(
    live_server: LiveServer, app: Starlette, token: str
) -> None:
    schema: OrderPulseSchema = app.state.schema
    query = get_introspection_query()
    answers = [
        (await post(live_server, bearer, {"query": query})).json() for bearer in (None, token, None)
    ]
    assert answers[0] == answers[1] == answers[2] and "errors" not in answers[0]
    assert list(schema.introspection_answers._entries) == [(sha(query), "IntrospectionQuery")]
    mixed = "{ __typename viewer { role } }"  # not only introspection: never cached
    assert (await post(live_server, token, {"query": mixed})).json() == {
        "data": {"__typename": "Query", "viewer": {"role": "SUPPORT"}}
    }
    assert (await post(live_server, None, {"query": mixed})).json()["errors"][0]["extensions"] == {
        "code": "UNAUTHENTICATED"
    }
    assert len(schema.introspection_answers) == 1


async def test_the_introspection_attack_is_refused_over_the_websocket(
    live_server: LiveServer, token: str
) -> None:
    message = await over_socket(live_server, token, {"query": INTROSPECTION_ATTACK})
    assert message["type"] == "error" and message["id"] == "1"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["QUERY_TOO_COMPLEX"]
    standard = await over_socket(live_server, token, {"query": get_introspection_query()})
    assert standard["type"] == "next" and "errors" not in standard["payload"]


async def test_another_tenants_latency_while_strangers_flood_introspection(
    live_server: LiveServer, factory: Factory
) -> None:
    """Six anonymous loops send the attack (and then the standard query) while a reseller asks
    `{ viewer { role } }`; its latencies are printed, and every answer is checked."""
    reseller = await factory.reseller()
    tenant = await factory.token("RESELLER", reseller=reseller)

    async def tenant_latencies(count: int) -> list[float]:
        latencies = []
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(count):
                started = time.perf_counter()
                response = await post(live_server, tenant, {"query": VIEWER}, http=http)
                latencies.append(time.perf_counter() - started)
                assert response.json() == {"data": {"viewer": {"role": "RESELLER"}}}
        return latencies

    async def flood(query: str, requests: int, expected: list[str] | None) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(requests):
                body = (await post(live_server, None, {"query": query}, http=http)).json()
                if expected is None:
                    assert "errors" not in body
                else:
                    assert codes(body) == expected

    def summary(latencies: list[float]) -> str:
        ordered = sorted(latencies)
        median = ordered[len(ordered) // 2] * 1000
        return f"median {median:.1f} ms, max {ordered[-1] * 1000:.1f} ms"

    print(f"\nviewer latency, idle server: {summary(await tenant_latencies(20))}")
    for name, query, expected in [
        ("30-alias introspection attack (refused)", INTROSPECTION_ATTACK, ["QUERY_TOO_COMPLEX"]),
        ("standard introspection query", get_introspection_query(), None),
    ]:
        started = time.process_time()
        floods = [asyncio.create_task(flood(query, 10, expected)) for _ in range(6)]
        latencies = await tenant_latencies(20)
        await asyncio.gather(*floods)
        cpu = time.process_time() - started
        print(
            f"viewer latency under 6 anonymous loops of the {name}: {summary(latencies)}; "
            f"process CPU for the 60 flood requests and 20 viewer requests: {cpu:.2f} s"
        )


# --- case 4: long documents, caches by hash ------------------------------------------------------


async def test_long_documents_are_refused_before_parsing_and_kept_nowhere(
    live_server: LiveServer, app: Starlette, token: str
) -> None:
    """400 distinct ~1 MB documents (mostly a comment): each refused with QUERY_TOO_COMPLEX,
    no cache holds one, and the server's memory does not grow (it did by ~700 MB)."""
    schema: OrderPulseSchema = app.state.schema
    parsed_before = len(schema.documents.parsed)
    before = rss_mb()
    async with httpx.AsyncClient(timeout=60) as http:
        for index in range(400):
            document = f"#{index:04d}" + "x" * 1_000_000 + "\n{ viewer { role } }"
            body = {"query": document, "extensions": persisted(document)}
            response = await post(live_server, token, body, http=http)
            assert response.status_code == 200
            answer = response.json()
            assert codes(answer) == ["QUERY_TOO_COMPLEX"] and "data" not in answer
            assert "longer than the 65536 bytes allowed" in answer["errors"][0]["message"]
    after = rss_mb()
    print(f"\nRSS before {before:.0f} MB, after 400 documents of 1 MB: {after:.0f} MB")
    assert len(schema.documents.parsed) == parsed_before
    assert len(schema.documents.validated) == parsed_before
    assert after - before < 100  # each document is freed with its request
    response = await post(
        live_server,
        token,
        {"query": "#" + "x" * 70_000 + "\n{ viewer { role } }"},
        accept="application/graphql-response+json",
    )
    assert response.status_code == 400 and codes(response.json()) == ["QUERY_TOO_COMPLEX"]
    within = "#" + "x" * 60_000 + "\n{ viewer { role } }"
    assert (await post(live_server, token, {"query": within})).json() == {
        "data": {"viewer": {"role": "SUPPORT"}}
    }


@pytest.mark.parametrize("settings_overrides", [{"max_document_bytes": 2048}])
async def test_the_document_limit_holds_over_get_and_the_websocket(
    live_server: LiveServer, token: str, services: Services
) -> None:
    long = "#" + "x" * 3000 + "\n{ viewer { role } }"
    response = await get(live_server, token, {"query": long})
    assert response.status_code == 200 and codes(response.json()) == ["QUERY_TOO_COMPLEX"]
    message = await over_socket(live_server, token, {"query": long})
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["QUERY_TOO_COMPLEX"]
    long_subscription = "#" + "x" * 3000 + "\nsubscription { orderStatusChanged { to } }"
    message = await over_socket(live_server, token, {"query": long_subscription})
    assert [e["extensions"]["code"] for e in message["payload"]] == ["QUERY_TOO_COMPLEX"]
    assert services.fanout.audience_count == 0
    # multi-byte characters count as the bytes they are: 700 x 3 bytes is over 2048
    wide = "#" + "€" * 700 + "\n{ viewer { role } }"
    assert codes((await post(live_server, token, {"query": wide})).json()) == ["QUERY_TOO_COMPLEX"]


async def test_caches_are_keyed_by_hash(
    live_server: LiveServer, app: Starlette, token: str
) -> None:
    schema: OrderPulseSchema = app.state.schema
    query = "query Keyed { viewer { role } }"
    assert (await post(live_server, token, {"query": query})).json() == {
        "data": {"viewer": {"role": "SUPPORT"}}
    }
    parsed_keys = [key for key, _ in schema.documents.parsed._entries.items()]
    assert any(key[0] == sha(query) for key in parsed_keys)
    assert all(len(key[0]) == 64 and query not in key for key in parsed_keys)
    validated_keys = list(schema.documents.validated._entries)
    assert any(key[0] == sha(query) for key in validated_keys)


# --- case 4: persisted documents -----------------------------------------------------------------


async def test_a_document_registered_by_one_tenant_is_not_found_for_another(
    live_server: LiveServer, factory: Factory, services: Services
) -> None:
    first = await factory.token("RESELLER", reseller=await factory.reseller("A"))
    second = await factory.token("RESELLER", reseller=await factory.reseller("B"))
    expected = {"data": {"viewer": {"role": "RESELLER"}}}
    register = {"query": VIEWER, "extensions": persisted(VIEWER)}
    assert (await post(live_server, first, register)).json() == expected
    by_hash = {"extensions": persisted(VIEWER)}
    assert (await post(live_server, first, by_hash)).json() == expected
    assert codes((await post(live_server, second, by_hash)).json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    response = await get(live_server, second, by_hash)
    assert codes(response.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    message = await over_socket(live_server, second, by_hash)
    assert [e["extensions"]["code"] for e in message["payload"]] == ["PERSISTED_QUERY_NOT_FOUND"]
    assert (await post(live_server, second, register)).json() == expected
    assert (await post(live_server, second, by_hash)).json() == expected
    assert [h for _, h in await registered_rows(services)] == [sha(VIEWER), sha(VIEWER)]


@pytest.mark.parametrize("settings_overrides", [{"max_persisted_per_token": 2}])
async def test_a_token_registers_at_most_its_quota(
    live_server: LiveServer, token: str, factory: Factory, services: Services
) -> None:
    documents = [f"query Q{i} {{ viewer {{ role }} }}" for i in range(3)]
    expected = {"data": {"viewer": {"role": "SUPPORT"}}}
    for document in documents:  # every one runs; the third is not stored
        body = {"query": document, "extensions": persisted(document)}
        assert (await post(live_server, token, body)).json() == expected
    for document in documents[:2]:
        assert (await post(live_server, token, {"extensions": persisted(document)})).json() == (
            expected
        )
    third = await post(live_server, token, {"extensions": persisted(documents[2])})
    assert codes(third.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    rows = await registered_rows(services)
    assert sorted(h for _, h in rows) == sorted(sha(d) for d in documents[:2])
    # the quota is the token's: another token still registers
    other = await factory.token("SUPPORT")
    body = {"query": documents[2], "extensions": persisted(documents[2])}
    assert (await post(live_server, other, body)).json() == expected
    assert len(await registered_rows(services)) == 3


async def test_a_trusted_document_runs_by_hash_for_every_token(
    live_server: LiveServer, factory: Factory, settings: Settings, tmp_path: Path
) -> None:
    trusted = tmp_path / "viewer.graphql"
    trusted.write_text(VIEWER)
    added = await documents_add(settings.database_url, tmp_path, trusted)
    assert added.returncode == 0, added.stderr
    for role in ("SUPPORT", "RESELLER"):
        reseller = await factory.reseller() if role == "RESELLER" else None
        bearer = await factory.token(role, reseller=reseller)
        answer = (await post(live_server, bearer, {"extensions": persisted(VIEWER)})).json()
        assert answer == {"data": {"viewer": {"role": role}}}


REFUSED_REGISTRATIONS = {
    # (syntax and validation errors carry no code, as before)
    "does not parse": ("{ viewer { role }", None, None),
    "does not validate": ("{ viewer { nosuchfield } }", None, None),
    "too costly": (DEFAULT_COSTLY, None, "QUERY_TOO_COMPLEX"),
    "too costly with its variables": (DEFAULT_COSTLY, {"n": 100}, "QUERY_TOO_COMPLEX"),
    "too long": ("#" + "x" * 70_000 + "\n{ viewer { role } }", None, "QUERY_TOO_COMPLEX"),
    "too deep": (DEEP_QUERY, None, "QUERY_TOO_COMPLEX"),
    "a list too long": (STATUSES, {"s": ["PF"] * 101}, "BAD_USER_INPUT"),
}


@pytest.mark.parametrize("case", list(REFUSED_REGISTRATIONS))
async def test_a_document_that_fails_a_guard_is_not_stored(
    live_server: LiveServer, token: str, services: Services, case: str
) -> None:
    document, variables, code = REFUSED_REGISTRATIONS[case]
    body: dict[str, Any] = {"query": document, "extensions": persisted(document)}
    if variables is not None:
        body["variables"] = variables
    answer = (await post(live_server, token, body)).json()
    assert "data" not in answer or answer["data"] is None, answer
    assert [e.get("extensions", {}).get("code") for e in answer["errors"]] == [code], answer
    assert await registered_rows(services) == []
    assert await trusted_count(services) == 0
    again = await post(live_server, token, {"extensions": persisted(document)})
    assert codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    if case == "does not parse":  # the protocol closes the socket (4400) for a syntax error
        with pytest.raises(ConnectionClosedError) as closed:
            await over_socket(live_server, token, body)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    else:
        message = await over_socket(live_server, token, body)
        assert message["type"] == "error", message
    assert await registered_rows(services) == []


# --- case 6: list sizes, variable defaults -------------------------------------------------------


async def test_a_list_of_160000_items_is_refused_quickly_on_every_transport(
    live_server: LiveServer, token: str
) -> None:
    huge = {"s": ["PF"] * 160_000}
    started, cpu = time.perf_counter(), time.process_time()
    answer = (await post(live_server, token, {"query": STATUSES, "variables": huge})).json()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"\n160,000-item list refused in {elapsed * 1000:.1f} ms, {cpu * 1000:.1f} ms of CPU "
        "(client and server: the JSON of 1 MB encoded, sent, decoded, and the refusal)"
    )
    assert answer == {
        "data": None,
        "errors": [
            {
                "message": "A list holds at most 100 items: `variables.s`.",
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }
    message = await over_socket(live_server, token, {"query": STATUSES, "variables": huge})
    assert message == {"id": "1", "type": "error", "payload": answer["errors"]}
    subscription = (
        "subscription($s: [OrderStatus!]) { orderStatusChanged(filter: {status: $s}) { to } }"
    )
    message = await over_socket(live_server, token, {"query": subscription, "variables": huge})
    assert message == {"id": "1", "type": "error", "payload": answer["errors"]}
    response = await get(live_server, token, {"query": STATUSES, "variables": {"s": ["PF"] * 101}})
    assert response.json() == answer
    nested = {"filter": {"status": ["PF"] * 101}}
    filtered = "query($filter: OrderFilter) { orders(filter: $filter) { totalCount } }"
    nested_answer = (
        await post(live_server, token, {"query": filtered, "variables": nested})
    ).json()
    assert nested_answer["errors"][0]["message"] == (
        "A list holds at most 100 items: `variables.filter.status`."
    )
    within = {"s": ["PF"] * 100, "undeclared": [0] * 1000}  # graphql-core ignores undeclared
    assert (await post(live_server, token, {"query": STATUSES, "variables": within})).json() == {
        "data": {"orders": {"totalCount": 0}}
    }


async def test_a_literal_list_over_100_items_is_refused(
    live_server: LiveServer, token: str
) -> None:
    literal = "{ orders(filter: {status: [" + ", ".join(["PF"] * 101) + "]}) { totalCount } }"
    answer = (await post(live_server, token, {"query": literal})).json()
    assert codes(answer) == ["BAD_USER_INPUT"] and answer["data"] is None
    assert answer["errors"][0]["message"] == "A list holds at most 100 items; this one has 101."
    message = await over_socket(live_server, token, {"query": literal})
    assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_USER_INPUT"]
    within = "{ orders(filter: {status: [" + ", ".join(["PF"] * 100) + "]}) { totalCount } }"
    assert (await post(live_server, token, {"query": within})).json() == {
        "data": {"orders": {"totalCount": 0}}
    }


@pytest.mark.parametrize(
    ("document", "variables", "cost"),
    [
        (DEFAULT_COSTLY, None, 30401),  # the unsent $n counts its default, 100
        (DEFAULT_COSTLY, {"n": 10}, 1 + 10 * (4 + 300)),
        (DEFAULT_COSTLY, {"n": None}, 1 + 20 * (4 + 300)),  # null: the default page
        ("query($n: Int = 7) { orders(first: $n) { totalCount } }", {}, 1 + 7),
        ("query($n: Int) { orders(first: $n) { totalCount } }", {}, 1 + 20),
    ],
)
def test_the_cost_counts_variable_defaults(
    document: str, variables: dict[str, Any] | None, cost: int
) -> None:
    schema = build_schema()
    assert schema.guards.cost(schema._schema, parse(document), None, variables) == cost


async def test_an_unsent_variable_default_is_refused_like_the_literal_on_every_transport(
    live_server: LiveServer, token: str, services: Services
) -> None:
    answer = (await post(live_server, token, {"query": DEFAULT_COSTLY})).json()
    assert codes(answer) == ["QUERY_TOO_COMPLEX"]
    assert answer["errors"][0]["message"].startswith("The query costs 30401,")
    message = await over_socket(live_server, token, {"query": DEFAULT_COSTLY})
    assert [e["extensions"]["code"] for e in message["payload"]] == ["QUERY_TOO_COMPLEX"]
    subscription = "subscription($n: Int = 100) { orderStatusChanged { order { customer { orders(first: $n) { edges { node { customer { orders(first: 100) { edges { node { id } } } } } } } } } } }"
    message = await over_socket(live_server, token, {"query": subscription})
    assert [e["extensions"]["code"] for e in message["payload"]] == ["QUERY_TOO_COMPLEX"]
    assert services.fanout.audience_count == 0


@pytest.mark.parametrize(
    ("variables", "path"),
    [
        ({"s": ["PF"] * 160_000}, "variables.s"),
        ({"filter": {"status": ["PF"] * 101}}, "variables.filter.status"),
        ({"input": {"items": [{"tags": [1] * 101}]}}, "variables.input.items[0].tags"),
        ({"s": ["PF"] * 100, "filter": {"status": []}}, None),
    ],
)
def test_the_first_long_list_is_named_by_its_path(
    variables: dict[str, Any], path: str | None
) -> None:
    assert oversized_list(variables) == path


async def test_the_schemas_own_caches_never_skip_a_guard(services: Services) -> None:
    """The schema's hash-keyed parse and validation caches: a hit still meets every guard, the
    list sizes and the cost (which depend on the variables) on every request."""
    schema = build_schema(services.settings)
    context = Context(services=services, viewer=SUPPORT, loaders=Loaders(services.db))

    async def codes(query: str, variables: dict[str, Any] | None = None) -> list[Any]:
        result = await schema.execute(query, variable_values=variables, context_value=context)
        return [(e.extensions or {}).get("code") for e in result.errors or ()]

    literal = "{ orders(filter: {status: [" + ", ".join(["PF"] * 101) + "]}) { totalCount } }"
    for _ in range(2):  # the second time, both caches hit
        assert await codes(DEEP_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(ALIASES_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(TOKENS_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(INTROSPECTION_ATTACK) == ["QUERY_TOO_COMPLEX"]
        assert await codes(DEFAULT_COSTLY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(DEFAULT_COSTLY, {"n": 10}) == []
        assert await codes(literal) == ["BAD_USER_INPUT"]
        assert await codes(STATUSES, {"s": ["PF"] * 101}) == ["BAD_USER_INPUT"]
        assert await codes(STATUSES, {"s": ["PF"] * 100}) == []
        assert await codes("#" + "x" * 70_000 + "\n{ viewer { role } }") == ["QUERY_TOO_COMPLEX"]
    # six documents parsed: the one over the token limit and the long one were not kept
    assert len(schema.documents.parsed) == 6
