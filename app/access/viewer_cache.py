"""Viewers of recently used tokens, per process, for the websocket endpoint.

After a deploy every open panel reconnects at once; looking each socket's token up in the database
would make the token the largest cost of a connection (a storm of 10,000 sockets over a few hundred
tokens is 10,000 queries). Here a token is read once and its viewer trusted for `max_age_seconds`
(never past the token's expiry), counted on the injected clock.

Revocation stays bounded: a token revoked in this process (`revoke_token` inside
`Services.transaction`) is dropped at commit; one revoked by another process (the CLI, another
server) is trusted at most `max_age_seconds` longer, which is also the period within which the
sweep of open sockets closes its sockets (`token_check_seconds`): one bound for both. The sweep
also renews the trust of the tokens it found live (`confirm_live`, from the time it asked), so a
token with open sockets is not read again every period while a storm of its sockets reconnects.
HTTP requests do not use the cache; they read the token every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.access.tokens import hash_token, live_token, live_token_ids
from app.access.viewer import Viewer
from app.db import Clock, Database

CAPACITY = 100_000
"""Entries kept at most; the oldest is dropped first (a token in use is simply read again)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    viewer: Viewer
    fresh_until: datetime


class ViewerCache:
    """Token hash → viewer, each entry trusted until `fresh_until`."""

    def __init__(self, *, db: Database, clock: Clock, max_age_seconds: float) -> None:
        self.db = db
        self.clock = clock
        self.max_age = timedelta(seconds=max_age_seconds)
        self._by_hash: dict[str, _Entry] = {}
        self._hash_of: dict[int, str] = {}  # token id → key in `_by_hash`
        self._expiry: dict[int, datetime | None] = {}  # token id → expiry, for `is_live`
        self._live_until: dict[int, datetime] = {}  # token id → trusted live until
        self._reading: dict[str, asyncio.Task[Viewer | None]] = {}  # lookups under way
        self._checking: dict[int, asyncio.Future[bool]] = {}  # `is_live` answers awaited
        self._checks: set[asyncio.Task[None]] = set()  # reads answering them
        self.reads = 0
        """Token lookups that went to the database (a figure for benchmarks and tests)."""
        self.confirmations = 0
        """Sweeps that renewed the trust of live tokens (`confirm_live`; a figure for tests)."""

    async def viewer(self, token: str) -> Viewer | None:
        """The viewer of a live token, or None (unknown, revoked or expired)."""
        key = hash_token(token)
        now = self.clock.now()
        entry = self._by_hash.get(key)
        if entry is not None and now < entry.fresh_until:
            return entry.viewer
        reading = self._reading.get(key)
        if reading is None:  # in a storm, the sockets of one token wait for one read
            reading = asyncio.get_running_loop().create_task(self._read(key, token, now))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    async def _read(self, key: str, token: str, now: datetime) -> Viewer | None:
        self.reads += 1
        async with self.db.read() as session:
            found = await live_token(session, token, now=now)
        if found is None:
            self._by_hash.pop(key, None)
            return None
        viewer, expires_at = found
        fresh_until = self._fresh_until(now, expires_at)
        self._remember(key, _Entry(viewer, fresh_until))
        if viewer.token_id is not None:
            self._hash_of[viewer.token_id] = key
            self._expiry[viewer.token_id] = expires_at
            self._live_until[viewer.token_id] = fresh_until
        return viewer

    async def is_live(self, token_id: int) -> bool:
        """Whether the token may still be used (its viewer is trusted as `viewer` trusts it).

        When trust has run out, the checks waiting at that moment (in a storm, hundreds of
        sockets over many tokens) share one read of all their tokens."""
        now = self.clock.now()
        until = self._live_until.get(token_id)
        if until is not None and now < until:
            return True
        answer = self._checking.get(token_id)
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = self._checking[token_id] = loop.create_future()
            if len(self._checking) == 1:  # the read starts next turn, for every check asked by then
                check = loop.create_task(self._check_waiting())
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)
        return await asyncio.shield(answer)

    async def _check_waiting(self) -> None:
        waiting, self._checking = self._checking, {}  # checks asked from now on: the next read
        now = self.clock.now()
        self.reads += 1
        try:
            async with self.db.read() as session:
                live = await live_token_ids(session, set(waiting), now=now)
        except asyncio.CancelledError:
            for answer in waiting.values():
                answer.cancel()
            raise
        except Exception as error:  # each waiting check raises it (the database is away)
            for answer in waiting.values():
                answer.set_exception(error)
            return
        for token_id in live:
            self._live_until[token_id] = self._fresh_until(now, self._expiry.get(token_id))
        self.forget_ids(set(waiting) - live)
        for token_id, answer in waiting.items():
            answer.set_result(token_id in live)

    def confirm_live(self, token_ids: Iterable[int], *, now: datetime) -> None:
        """These tokens were found live by a read that started at `now`: trust them (and their
        viewers) for `max_age_seconds` from then, never past their expiry."""
        self.confirmations += 1
        for token_id in token_ids:
            if token_id not in self._expiry:  # not cached (or dropped meanwhile)
                continue
            fresh_until = self._fresh_until(now, self._expiry[token_id])
            if fresh_until > self._live_until.get(token_id, fresh_until):
                self._live_until[token_id] = fresh_until
            entry = self._by_hash.get(self._hash_of.get(token_id, ""))
            if entry is not None and entry.viewer.token_id == token_id:
                if fresh_until > entry.fresh_until:
                    self._by_hash[self._hash_of[token_id]] = _Entry(entry.viewer, fresh_until)

    def forget_hashes(self, token_hashes: Iterable[str]) -> None:
        """Drop these tokens (revoked in this process)."""
        for key in token_hashes:
            entry = self._by_hash.pop(key, None)
            if entry is not None and entry.viewer.token_id is not None:
                self.forget_ids([entry.viewer.token_id])

    def forget_ids(self, token_ids: Iterable[int]) -> None:
        """Drop these tokens (found dead by a sweep or a check)."""
        for token_id in set(token_ids):
            self._live_until.pop(token_id, None)
            self._expiry.pop(token_id, None)
            key = self._hash_of.pop(token_id, None)
            entry = self._by_hash.get(key) if key is not None else None
            if entry is not None and entry.viewer.token_id == token_id:
                del self._by_hash[key]  # type: ignore[arg-type]

    def _fresh_until(self, now: datetime, expires_at: datetime | None) -> datetime:
        until = now + self.max_age
        return until if expires_at is None else min(until, expires_at)

    def _remember(self, key: str, entry: _Entry) -> None:
        self._by_hash.pop(key, None)
        self._by_hash[key] = entry
        while len(self._by_hash) > CAPACITY:
            oldest = next(iter(self._by_hash))
            token_id = self._by_hash.pop(oldest).viewer.token_id
            if token_id is not None and self._hash_of.get(token_id) == oldest:
                del self._hash_of[token_id]
                self._expiry.pop(token_id, None)
                self._live_until.pop(token_id, None)
