"""The websocket endpoint's cache of token viewers, through real sockets on a real server.

A storm of sockets on one token reads the token once; a revocation in this process is seen at
once; one made by another process (its own database connection, as the CLI) is seen once the
trust period (`token_check_seconds`, on the injected clock) has passed, never later.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest

from app.access.tokens import revoke_token
from app.db import Database
from app.services import Services
from tests.support.api import Factory
from tests.support.clock import FakeClock
from tests.support.polling import eventually
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


@pytest.mark.parametrize("settings_overrides", [{"token_check_seconds": 0.2}])
async def test_the_sweep_of_open_sockets_renews_the_trust_in_their_live_tokens(
    live_server: LiveServer, factory: Factory, services: Services, clock: FakeClock
) -> None:
    """A storm outlasting the trust period does not read its tokens again while sockets are open."""
    reseller = await factory.reseller()
    token = await factory.token("RESELLER", reseller=reseller)
    reads_before = services.viewers.reads
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(ws_client(live_server.ws_url))
        assert await first.init(token) == {"type": "connection_ack"}
        for _ in range(3):  # 0.45 s on the clock: past the first read's trust period (0.2 s)
            clock.advance(seconds=0.15)
            swept = services.viewers.confirmations
            await eventually(lambda swept=swept: services.viewers.confirmations >= swept + 2)
            ws = await stack.enter_async_context(ws_client(live_server.ws_url))
            assert await ws.init(token) == {"type": "connection_ack"}
    assert services.viewers.reads - reads_before == 1


async def test_renewed_trust_never_reaches_past_the_tokens_expiry(
    services: Services, factory: Factory, clock: FakeClock
) -> None:
    token = await factory.token("SUPPORT", expires_in=timedelta(seconds=3))
    cache = services.viewers
    assert cache.max_age == timedelta(seconds=2)
    viewer = await cache.viewer(token)
    assert viewer is not None and viewer.token_id is not None
    clock.advance(seconds=1.5)
    cache.confirm_live([viewer.token_id], now=clock.now())  # trusted to 3.5 s, but expires at 3
    clock.advance(seconds=1.5)
    assert await cache.viewer(token) is None
    assert not await cache.is_live(viewer.token_id)


async def test_an_unknown_token_is_never_remembered(
    live_server: LiveServer, services: Services
) -> None:
    reads_before = services.viewers.reads
    for _ in range(3):
        async with ws_client(live_server.ws_url) as ws:
            await ws.send({"type": "connection_init", "payload": {"Authorization": "Bearer op_x"}})
            assert await ws.closed_with() == (4403, "Forbidden")
    assert services.viewers.reads - reads_before == 3


async def test_checks_waiting_when_trust_runs_out_share_one_read(
    services: Services, factory: Factory, clock: FakeClock
) -> None:
    """A storm's subscriptions over many tokens, all past their trust at once: one read answers
    them all, a token revoked elsewhere meanwhile included."""
    cache = services.viewers
    reseller = await factory.reseller()
    tokens = [await factory.token("RESELLER", reseller=reseller) for _ in range(4)]
    viewers = [await cache.viewer(token) for token in tokens]
    ids = [v.token_id for v in viewers if v is not None and v.token_id is not None]
    assert len(ids) == 4
    other_process = Database(services.settings.database_url)
    try:
        async with other_process.write() as session:
            assert await revoke_token(session, token=tokens[0], now=clock.now())
    finally:
        await other_process.dispose()
    assert await cache.is_live(ids[0])  # still trusted: the read above is 0 s old
    clock.advance(seconds=services.settings.token_check_seconds)
    reads_before = cache.reads
    answers = await asyncio.gather(*(cache.is_live(token_id) for token_id in ids * 5))
    assert answers == [False, True, True, True] * 5
    assert cache.reads - reads_before == 1
    assert await cache.is_live(ids[1]) and cache.reads - reads_before == 1  # trusted again
    assert await cache.viewer(tokens[0]) is None  # the revoked token is forgotten
