"""Automatic persisted queries and trusted documents over POST, GET and websockets (real server)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from app.settings import Settings
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.ws import ws_client

ROOT = Path(__file__).resolve().parents[2]
VIEWER = "query Who { viewer { role } }"
CHANGES = "subscription { orderStatusChanged { to order { number } } }"
CREATE = (
    'mutation { createReseller(input: {name: "R", email: "r@r.example"}) { reseller { name } } }'
)


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str, *, sha256: str | None = None) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256 or sha(document)}}


@pytest.fixture
async def token(factory: Factory) -> str:
    return await factory.token("SUPPORT")


async def post(server: LiveServer, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as http:
        response = await http.post(server.http_url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def get(server: LiveServer, token: str, params: dict[str, Any]) -> httpx.Response:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    async with httpx.AsyncClient() as http:
        return await http.get(
            server.http_url,
            params=query,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )


async def over_socket(server: LiveServer, token: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The first message answering one `subscribe` with `payload`."""
    async with ws_client(server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        await ws.send({"id": "1", "type": "subscribe", "payload": payload})
        return await ws.receive()


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


async def test_an_unknown_hash_is_not_found_on_every_transport(
    live_server: LiveServer, token: str
) -> None:
    extensions = persisted(VIEWER)
    body = await post(live_server, token, {"extensions": extensions})
    assert body == {
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ]
    }
    response = await get(live_server, token, {"extensions": extensions})
    assert (response.status_code, codes(response.json())) == (200, ["PERSISTED_QUERY_NOT_FOUND"])
    message = await over_socket(live_server, token, {"extensions": persisted(CHANGES)})
    assert message == {
        "id": "1",
        "type": "error",
        "payload": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ],
    }


async def test_hash_and_query_register_then_the_hash_alone_runs_everywhere(
    live_server: LiveServer, token: str, services: Any
) -> None:
    assert await post(live_server, token, {"query": VIEWER, "extensions": persisted(VIEWER)}) == {
        "data": {"viewer": {"role": "SUPPORT"}}
    }
    expected = {"data": {"viewer": {"role": "SUPPORT"}}}
    assert await post(live_server, token, {"extensions": persisted(VIEWER)}) == expected
    response = await get(live_server, token, {"extensions": persisted(VIEWER)})
    assert (response.status_code, response.json()) == (200, expected)
    message = await over_socket(live_server, token, {"extensions": persisted(VIEWER)})
    assert message == {"id": "1", "type": "next", "payload": expected}

    # a subscription registered over the socket runs from its hash alone
    async with ws_client(live_server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        register = {"query": CHANGES, "extensions": persisted(CHANGES)}
        await ws.send({"id": "r", "type": "subscribe", "payload": register})
        assert await ws.until_pong() == []
        await ws.send({"id": "r", "type": "complete"})
        await ws.send(
            {"id": "s", "type": "subscribe", "payload": {"extensions": persisted(CHANGES)}}
        )
        assert await ws.until_pong() == []
        assert services.fanout.audience_count == 1


async def test_a_mutation_by_hash_runs_over_post_not_get(
    live_server: LiveServer, token: str
) -> None:
    await post(live_server, token, {"query": CREATE, "extensions": persisted(CREATE)})
    response = await get(live_server, token, {"extensions": persisted(CREATE)})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    count = await post(live_server, token, {"query": "{ resellers { totalCount } }"})
    assert count == {"data": {"resellers": {"totalCount": 1}}}
    body = await post(live_server, token, {"extensions": persisted(CREATE)})
    assert body == {"data": {"createReseller": {"reseller": {"name": "R"}}}}


async def test_a_hash_that_does_not_match_is_bad_input_and_registers_nothing(
    live_server: LiveServer, token: str
) -> None:
    wrong = persisted(VIEWER, sha256=sha("{ __typename }"))
    body = await post(live_server, token, {"query": VIEWER, "extensions": wrong})
    assert codes(body) == ["BAD_USER_INPUT"] and "data" not in body
    message = await over_socket(live_server, token, {"query": VIEWER, "extensions": wrong})
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_USER_INPUT"]
    for document in (VIEWER, "{ __typename }"):
        again = await post(live_server, token, {"extensions": persisted(document)})
        assert codes(again) == ["PERSISTED_QUERY_NOT_FOUND"]
    bad_version = {"persistedQuery": {"version": 2, "sha256Hash": sha(VIEWER)}}
    assert codes(await post(live_server, token, {"extensions": bad_version})) == ["BAD_USER_INPUT"]


async def test_strangers_cannot_register_documents(live_server: LiveServer, token: str) -> None:
    body = await post(live_server, None, {"query": VIEWER, "extensions": persisted(VIEWER)})
    assert codes(body) == ["UNAUTHENTICATED"]
    after = await post(live_server, token, {"extensions": persisted(VIEWER)})
    assert codes(after) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_documents_are_shared_by_processes(
    app: Starlette, settings: Settings, token: str
) -> None:
    """Two apps on one database (each with its own memory of documents) know the same ones."""
    from app.asgi import create_app

    other = create_app(settings)
    async with other.router.lifespan_context(other):
        bodies = []
        for application in (app, other, app):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.post(
                    "/graphql",
                    json={"extensions": persisted(VIEWER)},
                    headers={"Authorization": f"Bearer {token}"},
                )
                bodies.append(response.json())
                if len(bodies) == 1:
                    await http.post(
                        "/graphql",
                        json={"query": VIEWER, "extensions": persisted(VIEWER)},
                        headers={"Authorization": f"Bearer {token}"},
                    )
    assert codes(bodies[0]) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert bodies[1] == bodies[2] == {"data": {"viewer": {"role": "SUPPORT"}}}


# --- trusted documents --------------------------------------------------------------------------


async def documents_add(
    database_url: str, cwd: Path, *files: Path
) -> subprocess.CompletedProcess[str]:
    """`python -m app documents add FILES`, in a thread: the test's server runs on this event
    loop, and a worker of it may hold SQLite's write lock that the command waits for."""
    env = {**os.environ, "ORDERPULSE_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "documents", "add", *map(str, files)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("settings_overrides", [{"trusted_documents_only": True}])
async def test_only_trusted_documents_run_in_trusted_mode(
    live_server: LiveServer, token: str, settings: Settings, tmp_path: Path
) -> None:
    trusted = tmp_path / "viewer.graphql"
    trusted.write_text(VIEWER)
    added = await documents_add(settings.database_url, tmp_path, trusted)
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"{sha(VIEWER)}  {trusted}\n"

    expected = {"data": {"viewer": {"role": "SUPPORT"}}}
    assert await post(live_server, token, {"extensions": persisted(VIEWER)}) == expected
    assert await post(live_server, token, {"query": VIEWER}) == expected
    response = await get(live_server, token, {"extensions": persisted(VIEWER)})
    assert response.json() == expected
    message = await over_socket(live_server, token, {"extensions": persisted(VIEWER)})
    assert message == {"id": "1", "type": "next", "payload": expected}

    other = "{ viewer { role } }"
    for body in (
        {"query": other},
        {"query": other, "extensions": persisted(other)},
        {"extensions": persisted(other)},
    ):
        assert codes(await post(live_server, token, body)) == ["PERSISTED_QUERY_NOT_FOUND"]
    message = await over_socket(live_server, token, {"query": CHANGES})
    assert message["type"] == "error"
    assert [e["extensions"]["code"] for e in message["payload"]] == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_documents_add_refuses_a_document_that_is_not_valid(
    tmp_path: Path, settings: Settings
) -> None:
    bad = tmp_path / "bad.graphql"
    bad.write_text("{ nosuchfield }")
    result = await documents_add(settings.database_url, tmp_path, bad)
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: {bad}: Cannot query field 'nosuchfield' on type 'Query'."
    )
