"""Third-party JavaScript clients (npm, pinned in this folder's lock file) against a real uvicorn
server. The `graphql-http` server audit, without a token and signed in as each role (issue 20:
introspection with a token used to fail a MUST): no MUST and no SHOULD may fail; the counts are
printed. Apollo Client's normalized cache, updated by a mutation's payload (issue 20).
`graphql-schema-linter`, also pinned here, is run by tests/graphql/test_schema_docs.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Factory, gid
from tests.support.server import LiveServer
from tests.support.world import make_world

HERE = Path(__file__).parent


def level(name: str) -> str:
    return name.split(" ", 1)[0]  # MUST, SHOULD or MAY


async def run_node(script: str, arguments: list[str], *, token: str | None) -> bytes:
    """What `node script arguments...` (a script of this folder) prints; `token` goes in its
    environment as AUDIT_TOKEN, never on a command line."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "graphql-http").is_dir():
        pytest.fail("node and `npm ci` in tests/http_audit are needed (scripts/test runs it)")
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_TOKEN"}
    if token is not None:
        env["AUDIT_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        node,
        str(HERE / script),
        *arguments,
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout


async def audit(server: LiveServer, token: str | None) -> list[dict[str, Any]]:
    """The audit's results against `server`, every request carrying `token` when one is given."""
    results: list[dict[str, Any]] = json.loads(
        await run_node("audit.mjs", [server.http_url], token=token)
    )
    return results


@pytest.mark.parametrize("viewer", [None, "support", "reseller a", "customer a1", "system"])
async def test_the_graphql_http_audit_finds_no_must_or_should_failure(
    live_server: LiveServer, factory: Factory, viewer: str | None
) -> None:
    world = await make_world(factory, with_tokens=True)
    results = await audit(live_server, world.tokens[viewer] if viewer else None)
    counts = Counter((level(r["name"]), r["status"] == "ok") for r in results)
    print(
        f"graphql-http audit ({viewer or 'no token'}):",
        ", ".join(
            f"{lvl} {counts[(lvl, True)]} passed / {counts[(lvl, False)]} failed"
            for lvl in ("MUST", "SHOULD", "MAY")
        ),
    )
    failures = [r for r in results if r["status"] != "ok" and level(r["name"]) != "MAY"]
    assert failures == []
    assert counts[("MUST", True)] > 0 and counts[("SHOULD", True)] > 0


class RecordingServer:
    """A bare HTTP server on 127.0.0.1 that records each request's Authorization header and
    answers every request with the same small GraphQL result."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head[1:] if line)
        )
        await reader.readexactly(int(headers.get("content-length", "0")))
        self.authorizations.append(headers.get("authorization"))
        body = b'{"data":{"__typename":"Query"}}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()


@pytest.mark.parametrize("token", [None, "op_recorded"])
async def test_the_audit_sends_the_token_with_every_request_and_none_without(
    token: str | None,
) -> None:
    """The signed-in runs above are signed in: audit.mjs puts the token on every request."""
    recorder = RecordingServer()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await audit(LiveServer("127.0.0.1", port), token)
    assert len(recorder.authorizations) > 10
    expected = f"Bearer {token}" if token else None
    assert set(recorder.authorizations) == {expected}


async def test_apollo_clients_cache_updates_cached_settings_from_the_mutation(
    live_server: LiveServer, factory: Factory
) -> None:
    """Issue 20: `NotificationSettings` has an `id`, so Apollo Client (npm, pinned here) updates
    a cached `notificationSettings` from `updateNotificationSettings`' payload by itself. Without
    `id` in the selection (the control) the cached query keeps the old value."""
    world = await make_world(factory, with_tokens=True)
    stdout = await run_node(
        "apollo_cache.mjs",
        [live_server.http_url, gid("Reseller", world.reseller_a)],
        token=world.tokens["reseller a"],
    )
    results = json.loads(stdout)
    settings_id = results["withId"]["before"]["id"]
    typename = {"__typename": "NotificationSettings"}
    assert results["withoutId"] == {
        "before": {**typename, "notifyReseller": False, "notifyCustomer": False},
        "payload": {**typename, "notifyReseller": False, "notifyCustomer": True},
        "cached": {**typename, "notifyReseller": False, "notifyCustomer": False},  # stale
    }
    assert results["withId"] == {
        "before": {**typename, "id": settings_id, "notifyReseller": False, "notifyCustomer": True},
        "payload": {**typename, "id": settings_id, "notifyReseller": True, "notifyCustomer": True},
        "cached": {**typename, "id": settings_id, "notifyReseller": True, "notifyCustomer": True},
    }
