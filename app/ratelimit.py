"""Rate limits: `ORDERPULSE_RATE_LIMIT` operations per token, or per client address without one.

Each GraphQL operation is one hit: an HTTP request to /graphql (POST, or GET with a query; every
other method is refused there with 405 and runs nothing), and each `subscribe` over a websocket.
The client address pays for what no live token vouches for: a request without a token, each
websocket handshake and `connection_init`, and a token this process has not yet found live
(`KnownTokens`; a token that does not exist is never found, so a fresh random token per request
spends the address's budget, and once that is spent, no database read). A request with more than
one `Authorization` header is refused (400): no token may be checked under one header and charged
under another. The client address is the peer's, or the one a trusted proxy forwards
(`ORDERPULSE_FORWARDED_ALLOW_IPS`, uvicorn's `forwarded_allow_ips`).

The counts live in Redis when `ORDERPULSE_REDIS_URL` is set, so every process and host shares them
(the `limits` library's moving window); otherwise in this process's memory (the embedded mode is
one process; `LocalWindows`). Either way a moving window: at most N operations in any period of the
configured length. Keys are `token:<sha256 of the token>` or `address:<ip>`: no token is ever
stored.

If Redis cannot be reached the operation is let through (and logged): a broken limiter must not
take the API down with it; `/readyz` reports the outage.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from app.access.tokens import bearer_token, hash_token
from app.events.transport import database_name
from app.observability import metrics
from app.settings import Settings

log = logging.getLogger("orderpulse.ratelimit")

RATE_LIMITED = "RATE_LIMITED"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    """Whole seconds until one more operation would be allowed (when refused)."""


def client_key(*, token: str | None, address: str | None) -> str:
    """Whose budget an operation spends: its token's, or its address's when it sent none."""
    if token:
        return "token:" + hash_token(token)
    return address_key(address)


def address_key(address: str | None) -> str:
    return "address:" + (address or "unknown")


def scope_address(scope: Mapping[str, Any]) -> str | None:
    """The client address of an ASGI scope: the peer's, or the one a trusted proxy forwarded
    (uvicorn's proxy-headers middleware has already put it in `client`)."""
    client = scope.get("client")
    return str(client[0]) if client else None


class KnownTokens:
    """Limiter keys of the tokens this process has found live, most recent last (at most
    `capacity`; the oldest is forgotten first and simply pays its address once more)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._keys


def redis_storage_uri(redis_url: str) -> str:
    """`redis://...` as the `limits` library names its asyncio Redis storage."""
    return "async+" + redis_url


class LocalWindows:
    """Moving windows in this process's memory: for each key, the times of its hits within the
    last period, oldest first.

    `limits`' MemoryStorage keeps the same, but after each burst of hits its expiry pass hands
    every key to a thread, one `to_thread` call per key, which a reconnect storm (one hit per
    `subscribe`) pays for every key it touched. Here a key's expired hits are dropped
    when it is hit, and keys idle for a whole period are dropped once per period.
    """

    def __init__(self, item: RateLimitItem, *, now: Callable[[], float] = time.monotonic) -> None:
        self.amount = item.amount
        self.seconds = item.get_expiry()
        self.now = now
        self.hits: dict[str, deque[float]] = {}
        self._next_purge = now() + self.seconds

    def hit(self, key: str) -> float | None:
        """Spend one of `key`'s operations: None, or the seconds until one more is allowed."""
        now = self.now()
        if now >= self._next_purge:
            self._purge(now)
        hits = self.hits.get(key)
        if hits is None:
            hits = self.hits[key] = deque()
        cutoff = now - self.seconds
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= self.amount:
            return hits[0] + self.seconds - now
        hits.append(now)
        return None

    def _purge(self, now: float) -> None:
        cutoff = now - self.seconds
        for key in [k for k, hits in self.hits.items() if not hits or hits[-1] <= cutoff]:
            del self.hits[key]
        self._next_purge = now + self.seconds


class RateLimiter:
    def __init__(self, *, limit: str, storage: Storage | None) -> None:
        """`storage`: the shared store (Redis), or None for this process's memory."""
        self.item: RateLimitItem = parse(limit)
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage) if storage is not None else None
        self.local = LocalWindows(self.item) if storage is None else None
        self.known_tokens = KnownTokens()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        storage: Storage | None = None
        if settings.redis_url:
            # Deployments sharing one Redis keep separate counts (one prefix per database).
            prefix = f"orderpulse-limits:{database_name(settings.database_url)}"
            storage = RedisStorage(
                redis_storage_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=prefix,
                socket_connect_timeout=settings.redis_timeout_seconds,
                socket_timeout=settings.redis_timeout_seconds,
            )
        return cls(limit=settings.rate_limit, storage=storage)

    @property
    def is_shared(self) -> bool:
        return self.storage is not None

    def vouch(self, token: str) -> None:
        """`token` was found live: from now on its operations spend its own budget alone."""
        self.known_tokens.add("token:" + hash_token(token))

    async def charge(self, *, token: str | None, address: str | None, transport: str) -> Decision:
        """Spend one operation of a request's budget: a live token's own; the address's without
        a token; both for a token not yet found live (so one that does not exist is refused
        once its address has spent its budget, before anyone reads it)."""
        if not token:
            return await self.hit(address_key(address), transport=transport)
        key = "token:" + hash_token(token)
        if key not in self.known_tokens:
            decision = await self.hit(address_key(address), transport=transport)
            if not decision.allowed:
                return decision
        return await self.hit(key, transport=transport)

    async def hit(self, key: str, *, transport: str) -> Decision:
        """Spend one operation of `key`'s budget, or say how long until it may."""
        if self.local is not None:
            wait = self.local.hit(key)
            if wait is None:
                return Decision(allowed=True)
            metrics.rate_limited(transport=transport)
            return Decision(allowed=False, retry_after=max(1, math.ceil(wait)))
        assert self.strategy is not None
        try:
            if await self.strategy.hit(self.item, key):
                return Decision(allowed=True)
            stats = await self.strategy.get_window_stats(self.item, key)
        except Exception as exc:
            log.warning("rate limit storage unavailable, letting the operation through: %s", exc)
            return Decision(allowed=True)
        metrics.rate_limited(transport=transport)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed=False, retry_after=retry_after)

    async def storage_reachable(self) -> bool:
        if self.storage is None:
            return True
        try:
            return bool(await self.storage.check())
        except Exception:
            return False


def rate_limited_error(retry_after: int) -> dict[str, Any]:
    """The GraphQL error of an operation over the limit (the same over HTTP and websockets)."""
    return {
        "message": f"Rate limit exceeded: try again in {retry_after} s",
        "extensions": {"code": RATE_LIMITED, "retryAfter": retry_after},
    }


class RateLimitMiddleware:
    """Pure ASGI: each GraphQL operation over HTTP spends one of its token's (or address's)
    budget (`RateLimiter.charge`); over it, HTTP 429 with `Retry-After` and a RATE_LIMITED error,
    before the body is read. Two `Authorization` headers are a 400. Only HTTP requests to `path`
    count (websockets count their handshakes, inits and subscribes themselves)."""

    def __init__(self, app: Any, *, path: str, limiter: RateLimiter) -> None:
        self.app = app
        self.path = path
        self.limiter = limiter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or not _is_operation(scope):
            await self.app(scope, receive, send)
            return
        authorization = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
        if len(authorization) > 1:
            message = {"message": "Send at most one Authorization header"}
            await _respond(send, 400, {"errors": [message]})
            return
        token = bearer_token(
            {"authorization": authorization[0].decode("latin-1")} if authorization else {}
        )
        decision = await self.limiter.charge(
            token=token, address=scope_address(scope), transport="http"
        )
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        body = {"data": None, "errors": [rate_limited_error(decision.retry_after)]}
        await _respond(send, 429, body, ((b"retry-after", str(decision.retry_after).encode()),))


async def _respond(
    send: Any, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                *headers,
                (b"content-length", str(len(content)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _is_operation(scope: Mapping[str, Any]) -> bool:
    """Whatever may run an operation: any method but GET, HEAD and OPTIONS (the endpoint refuses
    all but POST with 405, HEAD included), and a GET that carries an operation (not GraphiQL's
    page; a CORS preflight is an OPTIONS)."""
    method = scope.get("method")
    if method in ("GET", "HEAD"):
        return bool(scope.get("query_string"))
    return method != "OPTIONS"
