"""Rate limits: `ORDERPULSE_RATE_LIMIT` operations per token, or per client address without one.

Each GraphQL operation is one hit: an HTTP request to /graphql (POST, or GET with a query), and
each `subscribe` over a websocket. The counts live in Redis when `ORDERPULSE_REDIS_URL` is set, so
every process and host shares them (the `limits` library's moving window); otherwise in this
process's memory (the embedded mode is one process; `LocalWindows`). Either way a moving window:
at most N operations in any period of the configured length. Keys are
`token:<sha256 of the token>` or `address:<ip>`: no token is ever stored.

If Redis cannot be reached the operation is let through (and logged): a broken limiter must not
take the API down with it; `/readyz` reports the outage.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
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
    return "address:" + (address or "unknown")


def redis_storage_uri(redis_url: str) -> str:
    """`redis://...` as the `limits` library names its asyncio Redis storage."""
    return "async+" + redis_url


class LocalWindows:
    """Moving windows in this process's memory: for each key, the times of its hits within the
    last period, oldest first.

    `limits`' MemoryStorage keeps the same, but after each burst of hits its expiry pass hands
    every key to a thread, one `to_thread` call per key: in a reconnect storm (one hit per
    `subscribe`) that was about 8% of the process's time. Here a key's expired hits are dropped
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
                socket_connect_timeout=2,
                socket_timeout=2,
            )
        return cls(limit=settings.rate_limit, storage=storage)

    @property
    def is_shared(self) -> bool:
        return self.storage is not None

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
    budget; over it, HTTP 429 with `Retry-After` and a RATE_LIMITED error, before the body is
    read. Only HTTP requests to `path` count (websockets count each `subscribe` themselves)."""

    def __init__(self, app: Any, *, path: str, limiter: RateLimiter) -> None:
        self.app = app
        self.path = path
        self.limiter = limiter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or not _is_operation(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        key = client_key(
            token=bearer_token(headers), address=client[0] if client is not None else None
        )
        decision = await self.limiter.hit(key, transport="http")
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"data": None, "errors": [rate_limited_error(decision.retry_after)]})
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(decision.retry_after).encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def _is_operation(scope: Mapping[str, Any]) -> bool:
    """POST, or a GET that carries an operation (not GraphiQL's page, not a CORS preflight)."""
    method = scope.get("method")
    if method == "POST":
        return True
    return method == "GET" and bool(scope.get("query_string"))
