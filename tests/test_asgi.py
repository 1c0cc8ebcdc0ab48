"""What the application does before any GraphQL: body and message size limits, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from tests.support.api import Factory
from tests.support.server import LiveServer, serve
from tests.support.ws import ws_client

LIMIT = 4096
CREATE = (
    'mutation { createReseller(input: {name: "R", email: "r@r.example"}) { reseller { name } } }'
)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"max_body_bytes": LIMIT, "allowed_origins": "https://panel.example"}


@pytest.fixture
async def token(factory: Factory) -> str:
    return await factory.token("SUPPORT")


async def reseller_count(server: LiveServer, token: str) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            server.http_url,
            json={"query": "{ resellers { totalCount } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
    count: int = response.json()["data"]["resellers"]["totalCount"]
    return count


def body_of(size: int) -> bytes:
    """A JSON body of exactly `size` bytes that would create a reseller if it were run."""
    import json

    empty = json.dumps({"query": CREATE, "padding": ""}).encode()
    padded = json.dumps({"query": CREATE, "padding": "x" * (size - len(empty))})
    assert len(padded.encode()) == size
    return padded.encode()


# --- body size ----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_with_413_before_it_is_parsed(
    live_server: LiveServer, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        too_big = await http.post(live_server.http_url, content=body_of(LIMIT + 1), headers=headers)
        assert too_big.status_code == 413
        assert await reseller_count(live_server, token) == 0

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            body = body_of(LIMIT + 1)
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        chunked = await http.post(live_server.http_url, content=chunks(), headers=headers)
        assert chunked.status_code == 413
        assert await reseller_count(live_server, token) == 0

        at_limit = await http.post(live_server.http_url, content=body_of(LIMIT), headers=headers)
    assert at_limit.status_code == 200
    assert at_limit.json() == {"data": {"createReseller": {"reseller": {"name": "R"}}}}


@pytest.mark.parametrize("uvicorn_limit", [True, False], ids=["uvicorn", "endpoint"])
async def test_a_websocket_message_over_the_limit_closes_1009(
    app: Starlette, token: str, uvicorn_limit: bool
) -> None:
    """uvicorn refuses the frame when started as `python -m app serve` starts it; the endpoint
    refuses it as well when uvicorn is started without that setting."""
    options = {} if uvicorn_limit else {"ws_max_size": 16 * 1024 * 1024}
    async with serve(app, uvicorn_options=options) as server:
        async with ws_client(server.ws_url) as ws:
            assert await ws.init(token) == {"type": "connection_ack"}
            await ws.send("x" * (LIMIT - 10))  # under the limit: a protocol error, not 1009
            assert (await ws.closed_with())[0] == 4400
        async with ws_client(server.ws_url) as ws:
            assert await ws.init(token) == {"type": "connection_ack"}
            await ws.send(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": CREATE},
                    "padding": "x" * LIMIT,
                }
            )
            code, _reason = await ws.closed_with()
            assert code == 1009
        assert await reseller_count(server, token) == 0


# --- CORS ---------------------------------------------------------------------------------------

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_allowed_origins_get_cors_headers_and_others_none(
    live_server: LiveServer, token: str
) -> None:
    async with httpx.AsyncClient() as http:
        preflight = await http.options(
            live_server.http_url, headers={"Origin": "https://panel.example", **PREFLIGHT}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://panel.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed_headers = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers

        refused = await http.options(
            live_server.http_url, headers={"Origin": "https://evil.example", **PREFLIGHT}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        headers = {"Authorization": f"Bearer {token}"}
        query = {"query": "{ viewer { role } }"}
        allowed = await http.post(
            live_server.http_url, json=query, headers={**headers, "Origin": "https://panel.example"}
        )
        other = await http.post(
            live_server.http_url, json=query, headers={**headers, "Origin": "https://evil.example"}
        )
    assert allowed.headers["access-control-allow-origin"] == "https://panel.example"
    assert allowed.json() == other.json() == {"data": {"viewer": {"role": "SUPPORT"}}}
    assert not [name for name in other.headers if name.startswith("access-control-")]
