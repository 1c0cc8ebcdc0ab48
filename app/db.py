"""Engine, sessions, the clock, and shared column types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, Insert, Select, Update, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from app.settings import Settings

R = TypeVar("R")


class Clock(Protocol):
    """Where code that reads the time gets it, so tests can move time instead of sleeping."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in every database (SQLite keeps no offset, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def async_url(url: str) -> str:
    """Map the configured URL to its async driver (aiosqlite, asyncpg)."""
    if url.startswith("sqlite+") or url.startswith("postgresql+"):
        return url
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    raise ValueError(f"unsupported database URL {url!r}")


def _replace_if_closed(dbapi_connection: Any, connection_record: Any, _proxy: Any) -> None:
    """At checkout, a pooled PostgreSQL connection whose server end is gone (backend terminated,
    server restarted) is replaced by a new one, as `pool_pre_ping` would, without its round
    trips: on asyncpg a ping is BEGIN, `;` and ROLLBACK, three per checkout, while asyncpg
    already knows a connection the server closed (the event loop read its end of stream)."""
    if connection_record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


PING_SECONDS = 3.0


@dataclass
class _Borrowed:
    """The connection a request's reads share (see `Database.request_reads`)."""

    db: Database
    conn: AsyncConnection | None = None
    busy: bool = False  # in use: a concurrent read takes a connection of its own


_REQUEST_READS: ContextVar[_Borrowed | None] = ContextVar("orderpulse_request_reads", default=None)


class CompiledRead:
    """A fixed Core SELECT for the hottest reads (a token per request): compiled once, then run
    on asyncpg's own connection with the columns' own type conversions, skipping SQLAlchemy's
    per-execution work (cache key, cursor adaptation, result objects). Other databases run it
    through SQLAlchemy. Parameters are `bindparam`s named in the statement."""

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._compiled: tuple[str, list[tuple[str, Any]], list[Any]] | None = None

    def _compile(self, dialect: Dialect) -> tuple[str, list[tuple[str, Any]], list[Any]]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            binds = [
                (name, compiled.binds[name].type.bind_processor(dialect))
                for name in compiled.positiontup or ()
            ]
            results = [
                c.type.result_processor(dialect, None) for c in self.statement.selected_columns
            ]
            self._compiled = (compiled.string, binds, results)
        return self._compiled

    async def first(self, conn: AsyncConnection, **params: Any) -> tuple[Any, ...] | None:
        """The first row, or None."""
        if conn.dialect.driver != "asyncpg":
            row = (await conn.execute(self.statement, params)).first()
            return tuple(row) if row is not None else None
        sql, binds, results = self._compile(conn.dialect)
        args = [params[name] if bind is None else bind(params[name]) for name, bind in binds]
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        record = await driver.fetchrow(sql, *args)
        if record is None:
            return None
        return tuple(v if p is None else p(v) for v, p in zip(record, results, strict=True))


def _in_transaction_or_autocommit(adapter: Any) -> bool:
    """Whether SQLAlchemy's asyncpg adapter has sent BEGIN for its transaction, or runs without
    one (autocommit), so that a statement run on its driver connection lands where SQLAlchemy's
    own would. (2.1 keeps the transaction in `_transaction`; 2.0 also sets `_started`. Unknown:
    False, and the statement goes through SQLAlchemy.)"""
    if getattr(adapter, "isolation_level", None) == "autocommit":
        return True
    started = getattr(adapter, "_started", None)
    if isinstance(started, bool):
        return started
    return getattr(adapter, "_transaction", None) is not None


class CompiledStatement:
    """A fixed Core statement that is run often inside a request (the write path's INSERT,
    UPDATE and SELECT statements): on asyncpg, compiled once and run on the driver connection,
    in the transaction SQLAlchemy began (or on an autocommit connection), skipping SQLAlchemy's
    per-execution work as `CompiledRead` does; elsewhere, or before the transaction has sent
    BEGIN, through SQLAlchemy. Rows come back as tuples, with the selected columns' result
    conversions for a SELECT (a DML statement's RETURNING values come back as the driver gives
    them: use it for ids and plain values). Parameters are `bindparam`s named in the statement;
    anonymous ones (literals) keep their values."""

    def __init__(self, statement: Select[*tuple[Any, ...]] | Insert | Update) -> None:
        self.statement = statement
        self._compiled: tuple[str, list[tuple[str, Any, Any]], list[Any] | None] | None = None

    def _compile(
        self, dialect: Dialect
    ) -> tuple[str, list[tuple[str, Any, Any]], list[Any] | None]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            binds = [
                (
                    name,
                    compiled.binds[name].type.bind_processor(dialect),
                    compiled.binds[name].effective_value,
                )
                for name in compiled.positiontup or ()
            ]
            results = None
            if isinstance(self.statement, Select):
                results = [
                    c.type.result_processor(dialect, None) for c in self.statement.selected_columns
                ]
            self._compiled = (compiled.string, binds, results)
        return self._compiled

    async def all(self, conn: AsyncConnection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns, run on `conn` (in its transaction, if any)."""
        if conn.dialect.driver == "asyncpg":
            raw = await conn.get_raw_connection()
            if _in_transaction_or_autocommit(raw.dbapi_connection):
                sql, binds, results = self._compile(conn.dialect)
                args = [
                    (params[name] if name in params else default)
                    if process is None
                    else process(params[name] if name in params else default)
                    for name, process, default in binds
                ]
                driver = raw.driver_connection
                assert driver is not None
                records = await driver.fetch(sql, *args)
                if results is None:
                    return [tuple(record) for record in records]
                return [
                    tuple(v if p is None else p(v) for v, p in zip(record, results, strict=True))
                    for record in records
                ]
        return [tuple(row) for row in (await conn.execute(self.statement, params)).all()]


@dataclass
class Database:
    """The engine and session factory of one process.

    SQLite allows one writer at a time, so write transactions on SQLite take a process lock
    (the embedded mode is one process); PostgreSQL writes run concurrently.
    """

    url: str
    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    _write_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        url = async_url(self.url)
        if url.startswith("sqlite"):
            self.engine = create_async_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            # Up to 30 connections as before, but 20 kept: with 16+ requests in flight, a
            # smaller pool closed and reopened connections (and re-prepared their statements).
            self.engine = create_async_engine(url, pool_size=20, max_overflow=10)
            event.listen(self.engine.sync_engine, "checkout", _replace_if_closed)
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        # Reads that need no transaction (PostgreSQL's READ COMMITTED gives each statement its
        # own snapshot anyway): no BEGIN and ROLLBACK round trips around them. SQLite keeps its
        # default: its driver begins no transaction for a read either.
        self.reads: AsyncEngine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; closed (and its transaction rolled back) on exit."""
        await self._return_borrowed()
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for Core reads outside any transaction (the request path's token look-up
        and read plans). Inside `request_reads`, the request's one connection."""
        borrowed = _REQUEST_READS.get()
        if borrowed is None or borrowed.db is not self or borrowed.busy:
            async with self.reads.connect() as conn:
                yield conn
            return
        if borrowed.conn is None:
            borrowed.conn = await self.reads.connect()
        borrowed.busy = True
        try:
            yield borrowed.conn
        finally:
            borrowed.busy = False

    @asynccontextmanager
    async def request_reads(self) -> AsyncIterator[None]:
        """One request: its `read_connection`s share one connection, checked out at the first
        and returned at the end, instead of one checkout each."""
        borrowed = _Borrowed(self)
        reset = _REQUEST_READS.set(borrowed)
        try:
            yield
        finally:
            _REQUEST_READS.reset(reset)
            if borrowed.conn is not None:
                await borrowed.conn.close()

    async def _return_borrowed(self) -> None:
        """Before a request opens a session (the executor's resolvers, a mutation), its idle
        shared connection goes back to the pool: a request never holds it while it waits for
        another, so a full pool cannot deadlock requests against each other."""
        borrowed = _REQUEST_READS.get()
        if borrowed is not None and borrowed.db is self and not borrowed.busy:
            conn, borrowed.conn = borrowed.conn, None
            if conn is not None:
                await conn.close()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL only: a connection on which each statement commits on its own, for a write
        that is one statement (no BEGIN and COMMIT round trips). On SQLite, writes take `write()`
        (its one-writer lock)."""
        if self.is_sqlite:
            raise RuntimeError("SQLite writes go through Database.write()")
        await self._return_borrowed()
        async with self.reads.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on normal exit and rolls back on error."""
        await self._return_borrowed()
        if self.is_sqlite:
            async with self._write_lock, self.sessions() as session, session.begin():
                yield session
        else:
            async with self.sessions() as session, session.begin():
                yield session

    async def ping(self) -> bool:
        """Whether the database answers `SELECT 1` within `PING_SECONDS` (`/readyz` must answer
        promptly even when a connection hangs)."""
        from sqlalchemy import text

        try:
            async with asyncio.timeout(PING_SECONDS), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


async def saved(session: AsyncSession, row: R) -> R:
    """`row`, added to the caller's transaction and flushed (so its id is drawn)."""
    session.add(row)
    await session.flush()
    return row


def database_from_settings(settings: Settings) -> Database:
    return Database(settings.database_url)
