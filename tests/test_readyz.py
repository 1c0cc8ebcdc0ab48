"""/readyz tells the truth in the embedded mode: ready while the database answers and every
background worker runs; 503 naming the problem once one has died. (Outages of PostgreSQL, its
LISTEN connection and Redis: tests/scale/test_readiness.py.)"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from starlette.applications import Starlette

from tests.support.api import GraphQLClient


async def transport_connected(app: Starlette) -> None:
    """On PostgreSQL the transport's LISTEN connection opens after start-up, and until it has,
    the process is rightly not ready: wait for it (none on SQLite)."""
    transport = app.state.workers.transport
    if transport is not None:
        async with asyncio.timeout(10):
            await transport.connected.wait()


async def test_ready_while_everything_runs(api: GraphQLClient, app: Starlette) -> None:
    await transport_connected(app)
    response = await api.http.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})
    assert (await api.http.get("/healthz")).status_code == 200


@pytest.mark.parametrize("worker", ["outbox", "escalations", "orderpulse-fanout"])
async def test_a_dead_background_worker_makes_it_unready(
    api: GraphQLClient, app: Starlette, worker: str
) -> None:
    await transport_connected(app)
    [task] = [t for t in app.state.workers.tasks if t.get_name() == worker]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    response = await api.http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "problems": [f"the {worker} worker has stopped"],
    }
    assert (await api.http.get("/healthz")).status_code == 200  # alive, but not ready
