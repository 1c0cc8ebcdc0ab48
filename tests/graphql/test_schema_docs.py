"""The schema documents itself (issue 20): every type, field, argument, input field, enum value and
directive has a description, in the schema the code builds, in `schema.graphql`, and in what a
signed-in client reads by introspection from a real server. The status, failure reason and action
enums carry the meanings of SPEC 2's tables, taken from `app.orders.flow`.

`graphql-schema-linter` (npm, pinned in tests/http_audit's lock file) checks `schema.graphql` with
its description rules too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)

from app.graphql.schema import build_schema as build_orderpulse_schema
from app.orders import flow
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.world import make_world

ROOT = Path(__file__).resolve().parents[2]
LINTER = ROOT / "tests" / "http_audit" / "node_modules" / ".bin" / "graphql-schema-linter"
DESCRIPTION_RULES = [
    "types-have-descriptions",
    "fields-have-descriptions",
    "arguments-have-descriptions",
    "input-object-values-have-descriptions",
    "enum-values-have-descriptions",
    "descriptions-are-capitalized",
    "deprecations-have-a-reason",
]


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Every element of `schema` without a description, named as `Type.field(argument)`."""
    missing: list[str] = []

    def check(name: str, description: str | None) -> None:
        if not (description or "").strip():
            missing.append(name)

    for name, type_ in schema.type_map.items():
        if name.startswith("__"):  # introspection's own types (graphql-core describes them)
            continue
        check(name, type_.description)
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in type_.fields.items():
                check(f"{name}.{field_name}", field.description)
                for arg_name, arg in field.args.items():
                    check(f"{name}.{field_name}({arg_name})", arg.description)
        elif isinstance(type_, GraphQLInputObjectType):
            for field_name, input_field in type_.fields.items():
                check(f"{name}.{field_name}", input_field.description)
        elif isinstance(type_, GraphQLEnumType):
            for value_name, value in type_.values.items():
                check(f"{name}.{value_name}", value.description)
    for directive in schema.directives:
        check(f"@{directive.name}", directive.description)
        for arg_name, arg in directive.args.items():
            check(f"@{directive.name}({arg_name})", arg.description)
    return missing


def test_the_walk_names_every_element_without_a_description() -> None:
    schema = build_schema(
        '''
        """Described."""
        type Query { plain(arg: Int): Color  described: Pick }
        enum Color { RED """Described.""" GREEN }
        input Pick { a: Int  """Described.""" b: Int }
        directive @mark(level: Int) on FIELD
        '''
    )
    assert undescribed(schema) == [
        "Query.plain",
        "Query.plain(arg)",
        "Query.described",
        "Color",
        "Color.RED",
        "Pick",
        "Pick.a",
        "@mark",
        "@mark(level)",
    ]


def test_every_element_of_the_built_schema_is_described() -> None:
    schema = build_orderpulse_schema()._schema
    assert {"Query", "Mutation", "Subscription", "OrderStatus"} <= set(schema.type_map)
    assert undescribed(schema) == []


def test_every_element_of_schema_graphql_is_described() -> None:
    assert undescribed(build_schema((ROOT / "schema.graphql").read_text())) == []


@pytest.mark.parametrize("viewer", ["support", "reseller a", "customer a1", "system"])
async def test_a_signed_in_client_reads_the_whole_described_schema_by_introspection(
    live_server: LiveServer, factory: Factory, viewer: str
) -> None:
    world = await make_world(factory, with_tokens=True)
    query = get_introspection_query(
        descriptions=True, specified_by_url=True, directive_is_repeatable=True
    )
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            live_server.http_url,
            json={"query": query},
            headers={"Authorization": f"Bearer {world.tokens[viewer]}"},
        )
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body, body
    served = build_client_schema(body["data"])
    assert undescribed(served) == []
    exported = build_schema((ROOT / "schema.graphql").read_text())
    assert print_schema(lexicographic_sort_schema(served)) == print_schema(
        lexicographic_sort_schema(exported)
    )


def enum_descriptions(name: str) -> dict[str, str | None]:
    enum = build_orderpulse_schema()._schema.type_map[name]
    assert isinstance(enum, GraphQLEnumType)
    return {value_name: value.description for value_name, value in enum.values.items()}


def test_status_values_carry_the_meaning_of_their_two_letter_codes() -> None:
    statuses = enum_descriptions("OrderStatus")
    assert statuses["TM"] == (
        "Manual Customer Account Verification Required: The customer account must be activated "
        "by the provider. Manual action required. Typical causes: The customer account has not "
        "been verified yet. Actions: HOLD, ACTIVATE_ACCOUNT, CANCEL."
    )
    assert statuses["WZ"] == (
        "Waiting for Payment after provisioning: The service was provisioned on credit; the "
        "payment is still due. Manual action required. Typical causes: Paid by cash or check "
        "within the customer's credit limit. Actions: RECORD_PAYMENT."
    )
    assert statuses["CP"] == "Completed: The order is done. No manual action."
    # Every code, from the one catalogue (`orderStatuses` answers from it too).
    assert set(statuses) == {s.value for s in flow.Status}
    for code, info in flow.STATUSES.items():
        description = statuses[code.value] or ""
        assert description.startswith(f"{info.name}: {info.description} ")
        manual = "Manual action required." in description
        assert manual is info.requires_manual_action, code


def test_failure_reasons_carry_their_message_and_remedy() -> None:
    reasons = enum_descriptions("FailureReason")
    assert reasons["NO_IP_ADDRESSES"] == (
        "No IP addresses available for allocation. Remedy: Add addresses to the pool, then "
        "resubmit."
    )
    assert reasons["OTHER"] == (
        "Another failure; its message is the details given. Remedy: Contact your local helpdesk."
    )
    assert set(reasons) == {r.value for r in flow.FailureReason}


def test_actions_say_from_where_they_go_where_and_for_whom() -> None:
    actions = enum_descriptions("OrderAction")
    assert actions["HOLD"] == (
        "Put the order on hold. Goes from TM, NP, SS, WA, WP, PF to HL (SUPPORT)."
    )
    assert actions["RESUBMIT"] == (
        "Send the order to the provisioning platform again. Goes from PF to PR (SUPPORT, "
        "RESELLER); from MO, LO to PR (SUPPORT)."
    )
    assert actions["CANCEL"] == (
        "Cancel the order. Goes from TM, HL, NP, SS, WA, WP to CL (SUPPORT, RESELLER, CUSTOMER); "
        "from PF to CL (SUPPORT, RESELLER)."
    )
    assert actions["APPROVE"] == (
        "Approve an order that fraud screening flagged or that waits for approval. Goes from SS, "
        "WA to the automatic checks (SUPPORT)."
    )
    assert set(actions) == {a.value for a in flow.Action}


async def lint(sdl: str) -> list[str]:
    """graphql-schema-linter's description rules on `sdl`: each error's rule and message."""
    node = shutil.which("node")
    if node is None or not LINTER.exists():
        pytest.fail("node and `npm ci` in tests/http_audit are needed (scripts/test runs it)")
    process = await asyncio.create_subprocess_exec(
        str(LINTER),
        "--rules",
        ",".join(DESCRIPTION_RULES),
        "--format",
        "json",
        "--stdin",
        cwd=LINTER.parents[2],  # tests/http_audit: no linter configuration there
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(sdl.encode()), timeout=60)
    report = json.loads(stdout or b"null")
    assert isinstance(report, dict), (stdout + stderr).decode()
    errors = [f"{e['rule']}: {e['message']}" for e in report["errors"]]
    assert (process.returncode == 0) is (errors == []), (stdout + stderr).decode()
    return errors


async def test_graphql_schema_linter_finds_no_undescribed_element() -> None:
    assert await lint((ROOT / "schema.graphql").read_text()) == []


async def test_graphql_schema_linter_names_an_undescribed_element() -> None:
    sdl = '"""The root."""\ntype Query {\n  """A field."""\n  hue(tone: Int): Color\n}\n'
    sdl += '"""A color."""\nenum Color {\n  RED\n}\n'
    assert await lint(sdl) == [
        "arguments-have-descriptions: The `tone` argument of `hue` is missing a description.",
        "enum-values-have-descriptions: The enum value `Color.RED` is missing a description.",
    ]
