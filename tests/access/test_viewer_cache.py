"""The websocket endpoint's cache of token viewers, through real sockets on a real server.

A storm of sockets on one token reads the token once; a revocation in this process is seen at
once; one made by another process (its own database connection, as the CLI) is seen once the
trust period (`token_check_seconds`, on the injected clock) has passed, never later.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from app.access.tokens import revoke_token
from app.db import Database
from app.services import Services
from tests.support.api import Factory
from tests.support.clock import FakeClock
from tests.support.server import LiveServer
from tests.support.ws import ws_client


async def test_a_storm_of_sockets_on_one_token_reads_it_once(
    live_server: LiveServer, factory: Factory, services: Services
) -> None:
    reseller = await factory.reseller()
    token = await factory.token("RESELLER", reseller=reseller)
    reads_before = services.viewers.reads
    async with AsyncExitStack() as stack:
        for _ in range(20):
            ws = await stack.enter_async_context(ws_client(live_server.ws_url))
            assert await ws.init(token) == {"type": "connection_ack"}
    assert services.viewers.reads - reads_before == 1


async def test_a_token_revoked_elsewhere_is_refused_once_its_trust_period_has_passed(
    live_server: LiveServer, factory: Factory, services: Services, clock: FakeClock
) -> None:
    reseller = await factory.reseller()
    token = await factory.token("RESELLER", reseller=reseller)
    async with ws_client(live_server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
    other_process = Database(services.settings.database_url)  # as `python -m app token revoke`
    try:
        async with other_process.write() as session:
            assert await revoke_token(session, token=token, now=clock.now())
    finally:
        await other_process.dispose()
    clock.advance(seconds=services.settings.token_check_seconds)
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert await ws.closed_with() == (4403, "Forbidden")


async def test_an_unknown_token_is_never_remembered(
    live_server: LiveServer, services: Services
) -> None:
    reads_before = services.viewers.reads
    for _ in range(3):
        async with ws_client(live_server.ws_url) as ws:
            await ws.send({"type": "connection_init", "payload": {"Authorization": "Bearer op_x"}})
            assert await ws.closed_with() == (4403, "Forbidden")
    assert services.viewers.reads - reads_before == 3
