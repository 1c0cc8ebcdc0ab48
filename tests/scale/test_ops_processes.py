"""Operations across real server processes: one rate limit shared through Redis by two servers,
and /metrics adding up the workers of `serve --workers 2`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.observability.helpers import parse, value
from tests.scale.conftest import Launch
from tests.support.api import Factory
from tests.support.processes import ServerProcess, server_env

QUERY = {"query": "{ viewer { role } }"}


async def test_two_servers_share_one_rate_limit_through_redis(
    launch: Launch, scale_database_url: str, redis_url: str, rows: Factory
) -> None:
    a, b = await launch(scale_database_url, count=2, redis_url=redis_url, rate_limit="5/hour")
    token = await rows.token("SUPPORT")
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []
    async with httpx.AsyncClient(timeout=20) as http:
        for n in range(7):
            server = (a, b)[n % 2]
            response = await http.post(
                f"{server.endpoint.origin}/graphql", json=QUERY, headers=headers
            )
            statuses.append((server.port, response.status_code))
        assert [status for _, status in statuses] == [200] * 5 + [429] * 2
        assert {port for port, status in statuses if status == 429} == {a.port, b.port}
        refused = await http.post(f"{a.endpoint.origin}/graphql", json=QUERY, headers=headers)
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert 3590 <= int(refused.headers["retry-after"]) <= 3600
        # another token has a budget of its own, on both servers
        other = {"Authorization": f"Bearer {await rows.token('SUPPORT')}"}
        for server in (a, b):
            response = await http.post(
                f"{server.endpoint.origin}/graphql", json=QUERY, headers=other
            )
            assert response.status_code == 200


async def test_metrics_add_up_the_workers(
    tmp_path: Path, scale_database_url: str, rows: Factory
) -> None:
    folder = tmp_path / "metrics"
    env = {**server_env(scale_database_url), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    server = ServerProcess.launch(env, log_dir=tmp_path, name="workers", workers=2)
    try:
        await server.wait_ready()
        token = await rows.token("SUPPORT")
        headers = {"Authorization": f"Bearer {token}"}
        name = "orderpulse_graphql_requests_total"
        labels = {"operation_type": "query", "outcome": "success"}

        # separate connections, so uvicorn's workers share the requests between them
        async def one() -> None:
            async with httpx.AsyncClient(base_url=server.endpoint.origin, timeout=20) as http:
                response = await http.post("/graphql", json=QUERY, headers=headers)
                assert response.status_code == 200

        await asyncio.gather(*(one() for _ in range(40)))
        counter_files = sorted(p.name for p in folder.glob("counter_*.db"))
        # each worker keeps its own values (the supervisor process may add a file of zeros)
        assert len(counter_files) >= 2, counter_files
        for _ in range(8):  # whichever worker answers, the sum is the same
            async with httpx.AsyncClient(base_url=server.endpoint.origin, timeout=20) as http:
                scraped = parse((await http.get("/metrics")).text)
            assert value(scraped, name, **labels) == 40
            assert (
                value(
                    scraped,
                    "orderpulse_graphql_request_duration_seconds_count",
                    operation_type="query",
                )
                == 40
            )
            assert value(scraped, "orderpulse_outbox_pending") == 0
    finally:
        await server.aclose()
        server.stop()
