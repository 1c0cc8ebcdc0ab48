"""Opaque API tokens: made (optionally with an expiry), looked up by hash, listed, revoked (by
the token or by its id).

`is_live` is the one rule for "may this token still be used": HTTP requests, a websocket's
`connection_init`, each new subscription and the sweep of open sockets all ask it, so a token
that expired is refused exactly like one that was revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, or_
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.models import ApiToken
from app.access.viewer import Viewer
from app.db import CompiledStatement, UTCDateTime
from app.errors import BadInput
from app.orders.flow import Role
from app.orders.models import Customer, Reseller

TOKEN_PREFIX = "op_"  # noqa: S105 (a prefix, not a secret)
REVOKED_TOKENS = "orderpulse.revoked_tokens"
"""Session key: hashes of the tokens a transaction revoked (caches drop them at commit)."""


def bearer_token(headers: Mapping[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (key matched without case): HTTP
    headers and a websocket's `connection_init` payload alike."""
    value = next((v for k, v in headers.items() if str(k).lower() == "authorization"), None)
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    session: AsyncSession,
    *,
    role: Role,
    reseller_id: int | None,
    customer_id: int | None,
    now: datetime,
    expires_in: timedelta | None = None,
) -> str:
    """Make a token bound to a role and, for RESELLER/CUSTOMER, to its tenant; return it once.

    With `expires_in`, the token stops working at `now + expires_in`.
    """
    if expires_in is not None and expires_in <= timedelta(0):
        raise BadInput("the expiry must be in the future")
    if role is Role.RESELLER:
        if reseller_id is None or customer_id is not None:
            raise BadInput("a RESELLER token needs --reseller and no --customer")
        if await session.get(Reseller, reseller_id) is None:
            raise BadInput("no such reseller")
    elif role is Role.CUSTOMER:
        if customer_id is None:
            raise BadInput("a CUSTOMER token needs --customer")
        customer = await session.get(Customer, customer_id)
        if customer is None:
            raise BadInput("no such customer")
        if reseller_id is not None and reseller_id != customer.reseller_id:
            raise BadInput("that customer belongs to another reseller")
        reseller_id = customer.reseller_id
    elif reseller_id is not None or customer_id is not None:
        raise BadInput(f"a {role.value} token is not bound to a reseller or customer")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            token_hash=hash_token(token),
            role=role.value,
            reseller_id=reseller_id,
            customer_id=customer_id,
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
    )
    await session.flush()
    return token


async def token_id(session: AsyncSession, token: str) -> int | None:
    """The id of a token (what `token revoke --id` takes), or None if there is no such token."""
    query = select(col(ApiToken.id)).where(col(ApiToken.token_hash) == hash_token(token))
    return (await session.exec(query)).first()


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    """Every token's row (hashes only: the tokens themselves are never stored), oldest first."""
    return list((await session.exec(select(ApiToken).order_by(col(ApiToken.id)))).all())


async def revoke_token(
    session: AsyncSession, *, now: datetime, token: str | None = None, token_id: int | None = None
) -> bool:
    """Revoke a token, given as itself or by its id; False if it was unknown or already
    revoked."""
    if (token is None) == (token_id is None):
        raise TypeError("give the token or its id")
    where = (
        col(ApiToken.token_hash) == hash_token(token)
        if token is not None
        else col(ApiToken.id) == token_id
    )
    row = (await session.exec(select(ApiToken).where(where))).first()
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    session.add(row)
    session.info.setdefault(REVOKED_TOKENS, set()).add(row.token_hash)
    return True


def is_live(*, now: datetime | ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    """The SQL conditions of a token that may still be used: not revoked, not expired."""
    return [
        col(ApiToken.revoked_at).is_(None),
        or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > now),
    ]


async def live_token_ids(
    session: AsyncSession, token_ids: Collection[int], *, now: datetime
) -> set[int]:
    """Which of `token_ids` are still live: one query, however many (open sockets ask it)."""
    if not token_ids:
        return set()
    query = select(col(ApiToken.id)).where(
        col(ApiToken.id).in_(sorted(token_ids)), *is_live(now=now)
    )
    return {token_id for token_id in (await session.exec(query)).all() if token_id is not None}


async def viewer_for_token(
    session: AsyncSession | AsyncConnection, token: str, *, now: datetime
) -> Viewer | None:
    """The viewer a live token stands for, or None for an unknown, revoked or expired token."""
    found = await live_token(session, token, now=now)
    return found[0] if found is not None else None


LIVE_TOKEN = CompiledStatement(
    sa_select(
        col(ApiToken.id),
        col(ApiToken.role),
        col(ApiToken.reseller_id),
        col(ApiToken.customer_id),
        col(ApiToken.expires_at),
    ).where(
        col(ApiToken.token_hash) == bindparam("token_hash"),
        *is_live(now=bindparam("now", type_=UTCDateTime)),
    )
)


async def live_token(
    session: AsyncSession | AsyncConnection, token: str, *, now: datetime
) -> tuple[Viewer, datetime | None] | None:
    """The viewer of a live token and when the token expires (None: never), or None.

    Every HTTP request asks this, so it is one compiled statement (`CompiledStatement`) on a plain
    connection (`Database.read_connection`); a session serves as well."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    conn = await session.connection() if isinstance(session, AsyncSession) else session
    row = await LIVE_TOKEN.first(conn, {"token_hash": hash_token(token), "now": now})
    if row is None:
        return None
    token_id, role, reseller_id, customer_id, expires_at = row
    viewer = Viewer(
        role=Role(role), token_id=token_id, reseller_id=reseller_id, customer_id=customer_id
    )
    return viewer, expires_at
