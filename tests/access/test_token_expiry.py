"""Tokens made with an expiry: they work until the injected clock passes it, then they are refused
exactly like revoked ones, over HTTP and over the websocket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlmodel import select

from app.access.models import ApiToken
from app.access.tokens import create_token, live_token_ids, revoke_token
from app.errors import BadInput
from app.orders.flow import Role
from app.services import Services
from tests.support.api import Factory, GraphQLClient
from tests.support.clock import FakeClock
from tests.support.server import LiveServer
from tests.support.ws import WSClient, ws_client

VIEWER = "{ viewer { role } }"


async def test_an_expired_token_is_refused_over_http_like_a_revoked_one(
    api: GraphQLClient, factory: Factory, clock: FakeClock
) -> None:
    token = await factory.token("SUPPORT", expires_in=timedelta(hours=12))
    client = api.as_(token)
    assert await client.data(VIEWER) == {"viewer": {"role": "SUPPORT"}}
    clock.advance(hours=11, minutes=59, seconds=59)
    assert await client.data(VIEWER) == {"viewer": {"role": "SUPPORT"}}
    clock.advance(seconds=1)  # exactly at the expiry: no longer valid
    body = await client.post(VIEWER)
    assert body["data"] is None
    assert [e["extensions"] for e in body["errors"]] == [{"code": "UNAUTHENTICATED"}]

    revoked = await factory.token("SUPPORT")
    async with factory.services.transaction() as session:
        assert await revoke_token(session, token=revoked, now=clock.now())
    assert await api.as_(revoked).post(VIEWER) == body


async def test_a_token_without_expiry_keeps_working(
    api: GraphQLClient, factory: Factory, clock: FakeClock
) -> None:
    token = await factory.token("SUPPORT")
    clock.advance(days=3650)
    assert await api.as_(token).data(VIEWER) == {"viewer": {"role": "SUPPORT"}}


async def test_the_liveness_check_of_open_sockets_sees_the_expiry(
    services: Services, factory: Factory, clock: FakeClock
) -> None:
    await factory.token("SUPPORT", expires_in=timedelta(minutes=15))
    async with services.db.read() as session:
        row = (await session.exec(select(ApiToken))).one()
        assert row.id is not None
        assert row.expires_at == clock.now() + timedelta(minutes=15)
        assert await live_token_ids(session, {row.id}, now=clock.now()) == {row.id}
        clock.advance(minutes=15)
        assert await live_token_ids(session, {row.id}, now=clock.now()) == set()


async def test_an_expiry_in_the_past_is_refused_and_nothing_is_written(
    services: Services, clock: FakeClock
) -> None:
    for span in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(BadInput, match="in the future"):
            async with services.transaction() as session:
                await create_token(
                    session,
                    role=Role.SUPPORT,
                    reseller_id=None,
                    customer_id=None,
                    now=clock.now(),
                    expires_in=span,
                )
    async with services.db.read() as session:
        assert (await session.exec(select(ApiToken))).all() == []


Closed = tuple[int | None, str | None]
"""The close code and reason a socket ended with."""


async def init_on_a_new_socket(live_server: LiveServer, _: WSClient, token: str) -> Closed:
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        return await ws.closed_with()


async def subscribe_on_the_open_socket(_: LiveServer, ws: WSClient, token: str) -> Closed:
    await ws.subscribe("1", "subscription { orderStatusChanged { to } }")
    return await ws.closed_with()


AFTER_EXPIRY: dict[str, Callable[[LiveServer, WSClient, str], Awaitable[Closed]]] = {
    "connection_init on a new socket": init_on_a_new_socket,
    "a subscribe on the socket open since before": subscribe_on_the_open_socket,
}


@pytest.mark.parametrize("step", list(AFTER_EXPIRY))
async def test_an_expired_token_is_closed_with_4403_at_its_next_step(
    step: str, live_server: LiveServer, factory: Factory, clock: FakeClock
) -> None:
    """Refused at connection_init, and a socket that outlives its token starts nothing more."""
    token = await factory.token("SUPPORT", expires_in=timedelta(minutes=15))
    async with ws_client(live_server.ws_url) as ws:
        assert (await ws.init(token))["type"] == "connection_ack"
        clock.advance(minutes=15)
        assert await AFTER_EXPIRY[step](live_server, ws, token) == (4403, "Forbidden")
