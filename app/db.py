"""Engine, sessions, the clock, and shared column types."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Protocol, TypeVar

from sqlalchemy import Column, DateTime, Float, Insert, Numeric, Select, Update, event, inspect
from sqlalchemy.engine import Dialect, ExceptionContext, Result, make_url
from sqlalchemy.exc import DisconnectionError, InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolResetState, StaticPool
from sqlalchemy.sql.base import Executable
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kernel.aiosqlite import sqlite3_connection
from app.kernel.sqlalchemy import (
    asyncpg_in_transaction_or_autocommit,
    asyncpg_send_pending_begin,
    bind_processors,
    locks_rows,
    result_processor,
)
from app.outages import is_outage
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


SQLITE_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {}
"""SQL functions every SQLite connection gets (name: arity, function); modules add theirs at
import (the read planner's JSON serializers: `planner.json_sql`)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    for name, (arity, function) in SQLITE_FUNCTIONS.items():
        dbapi_connection.create_function(name, arity, function, deterministic=True)


def _sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """A SQLite connection going back to the pool: rolled back if a transaction is open, as the
    pool's default reset does, but without a trip to the connection's thread to roll back
    nothing (`sqlite3` begins a transaction only before a write; every read request returns a
    connection with none)."""
    if state.asyncio_safe and not state.transaction_was_reset:
        if sqlite3_connection(dbapi_connection.driver_connection).in_transaction:
            dbapi_connection.rollback()


PING_SECONDS = 3.0
DEFAULT_TIMEOUT_SECONDS = 10.0
"""`ORDERPULSE_DATABASE_TIMEOUT_SECONDS`'s default: see `Database.timeout_seconds`."""


def _invalidate_on_outage(context: ExceptionContext) -> None:
    """A statement run through SQLAlchemy failed because the server is out of reach (a time
    limit, a reset): the connection is discarded, never handed out again. (asyncpg's time limit
    raises a plain TimeoutError, which SQLAlchemy would otherwise leave in the pool with the
    statement still running on it.)"""
    if not context.is_disconnect and is_outage(context.original_exception):
        context.is_disconnect = True


async def _invalidate_if_outage(conn: AsyncConnection, error: BaseException) -> None:
    """The same for a `CompiledStatement` run on the driver's connection."""
    if is_outage(error):
        with contextlib.suppress(Exception):
            await conn.invalidate(error if isinstance(error, Exception) else None)


@dataclass
class _Borrowed:
    """The connection a request's reads share (see `Database.request_reads`)."""

    db: Database
    conn: AsyncConnection | None = None
    busy: bool = False  # in use: a concurrent read takes a connection of its own


_REQUEST_READS: ContextVar[_Borrowed | None] = ContextVar("orderpulse_request_reads", default=None)


SQLITE_ON_LOOP_SECONDS = 0.005
SQLITE_SLOW_RUNS = 3
"""A compiled SQLite SELECT that ran longer than `SQLITE_ON_LOOP_SECONDS` on the event loop's
thread this many times in a row runs in its connection's thread from then on (in a row: one run
that a garbage collection or a busy machine made slow does not move a token's look-up)."""


async def _sqlite_select(driver: Any, compiled: _Compiled, args: list[Any]) -> list[Any]:
    """A compiled SELECT on SQLite, on the event loop's thread: the connection is checked out, so
    its own thread is idle. A compiled read is a token or a planner page, a short query; under load,
    the trips to aiosqlite's thread (a queue, the thread woken, the loop woken from it) and the GIL
    passed between the pool's connection threads and the loop would cost more than the query
    (`bench_read.py --sqlite-only`, docs/PERFORMANCE.md). One that proves slow (a count over a
    million orders: `SQLITE_SLOW_RUNS`) goes back to the thread, where it holds no other request
    up."""
    if not compiled.on_loop:
        rows: list[Any] = await driver.execute_fetchall(compiled.sql, args)
        return rows
    started = perf_counter()
    rows = sqlite3_connection(driver).execute(compiled.sql, args).fetchall()
    slow = perf_counter() - started > SQLITE_ON_LOOP_SECONDS
    compiled.slow_runs = compiled.slow_runs + 1 if slow else 0
    return rows


class CompiledStatement:
    """A fixed Core statement run often (a token per request, a panel's page, the write path's
    INSERT, UPDATE and SELECT statements): compiled once, then run on the driver's own connection,
    skipping SQLAlchemy's per-execution work (the statement's cache key, which walks the whole
    statement, the execution context, result objects). On asyncpg it runs in the transaction
    SQLAlchemy began (sending its BEGIN first when SQLAlchemy has not sent it yet), or on an
    autocommit connection (a write there is checked by `Database.one_statement_write`'s guard).
    On aiosqlite a SELECT runs on the event loop's thread (`_sqlite_select`; a write goes through
    SQLAlchemy, which owns SQLite's transaction).

    Rows come back as tuples, a SELECT's with its columns' own result conversions (a table's
    Numeric column is NUMERIC on asyncpg; a SELECT whose other columns need what only a live
    cursor tells, as asyncpg's Numeric of an expression does, runs through SQLAlchemy:
    the same rows); a DML statement's RETURNING values come back as the driver gives them (use it
    for ids and plain values). Parameters are `bindparam`s given by name at each run; the others
    (literals, expanded IN lists) keep the values bound in the statement.
    `tests/test_compiled_read.py` (reads) and `tests/test_compiled_statement.py` (writes) compare
    both ways on SQLite and PostgreSQL. What it needs of SQLAlchemy's and the drivers' internals
    is read through `app.kernel.sqlalchemy` and `app.kernel.aiosqlite`."""

    def __init__(self, statement: Select[*tuple[Any, ...]] | Insert | Update) -> None:
        self.statement = statement
        # by dialect name; None: run through SQLAlchemy
        self._compiled: dict[str, _Compiled | None] = {}

    def _compile(self, dialect: Dialect) -> _Compiled | None:
        try:
            return self._compiled[dialect.name]
        except KeyError:
            pass
        compiled = self.statement.compile(
            dialect=dialect, compile_kwargs={"render_postcompile": True}
        )
        bound = compiled.construct_params(_check=False)  # the values bound in the statement
        processors = bind_processors(compiled)  # what SQLAlchemy applies to each parameter
        names = compiled.positiontup or ()
        binds = [(name, bound.get(name), processors.get(name)) for name in names]
        found: _Compiled | None
        if not isinstance(self.statement, Select):
            found = _Compiled(compiled.string, binds, None, writes=True)
        else:
            try:
                results = [_result_processor(c, dialect) for c in self.statement.selected_columns]
                found = _Compiled(
                    compiled.string, binds, results, writes=not _plain_read(self.statement)
                )
            except (TypeError, InvalidRequestError):  # needs the cursor's column type
                found = None
        self._compiled[dialect.name] = found
        return found

    async def all(
        self, conn: AsyncConnection, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Every row, as plain tuples, run on `conn` (in its transaction, if any)."""
        given = params or {}
        compiled = self._compile(conn.dialect)
        if compiled is not None:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            if conn.dialect.driver == "asyncpg":
                await asyncpg_send_pending_begin(conn, raw.dbapi_connection)
                if asyncpg_in_transaction_or_autocommit(raw.dbapi_connection):
                    if compiled.writes and conn.sync_connection is not None:
                        options = conn.sync_connection.get_execution_options()
                        _before_write(options, by_compiled_statement=compiled.results is None)
                    try:
                        records: Any = await driver.fetch(compiled.sql, *compiled.arguments(given))
                    except Exception as error:
                        await _invalidate_if_outage(conn, error)
                        raise
                    return [compiled.row(record) for record in records]
            elif conn.dialect.driver == "aiosqlite" and compiled.results is not None:
                records = await _sqlite_select(driver, compiled, compiled.arguments(given))
                return [compiled.row(record) for record in records]
        return [tuple(row) for row in (await conn.execute(self.statement, dict(given))).all()]

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, Any] | None = None
    ) -> tuple[Any, ...] | None:
        """The first row, or None."""
        rows = await self.all(conn, params)
        return rows[0] if rows else None


_PG_NUMERIC_OID = 1700


def _result_processor(column: Any, dialect: Dialect) -> Any:
    """What SQLAlchemy applies to a selected column's values. asyncpg's Numeric asks the cursor
    for the column's database type; a table's own Numeric column is NUMERIC in the database (our
    schema), so it is given that type here instead (asyncpg returns it as a Decimal already)."""
    column_type: TypeEngine[Any] = column.type
    try:
        return result_processor(column_type, dialect)
    except (TypeError, InvalidRequestError):
        table_numeric = (
            isinstance(column, Column)
            and column.table is not None
            and isinstance(column_type, Numeric)
            and not isinstance(column_type, Float)
        )
        if dialect.driver == "asyncpg" and table_numeric:
            return result_processor(column_type, dialect, _PG_NUMERIC_OID)
        raise


def detached_instance(model: type[R], keys: Sequence[str], row: Sequence[Any]) -> R:
    """An instance of the table `model` as if the ORM had loaded the columns `keys` with `row`
    and its session had closed (detached: it belongs to no session). For a row read with a
    `CompiledStatement` where code expects the model; every column must be in `keys`."""
    instance: R = inspect(model).class_manager.new_instance()
    for key, value in zip(keys, row, strict=True):
        set_committed_value(instance, key, value)
    make_transient_to_detached(instance)
    return instance


class NotOneStatement(RuntimeError):
    """A write in `Database.one_statement_write` that one self-committing statement cannot be
    (the ORM's flush, a statement run through SQLAlchemy, a SELECT that locks rows), stopped
    before it ran: a bug in the choice of that session (`OrderStore`), never retried."""


class SecondWriteOutsideTransaction(RuntimeError):
    """A second write in `Database.one_statement_write`, after the first had committed on its
    own: a bug in the work (its first write cannot be undone), never retried."""


_ONE_WRITE = "orderpulse_one_write"  # execution option: the `_OneWrite` guarding a connection


@dataclass
class _OneWrite:
    """The guard of a `Database.one_statement_write` session: one write, and only as a
    `CompiledStatement` run when the session holds no unflushed ORM change."""

    session: AsyncSession | None = None
    written: bool = False


def _before_write(options: Mapping[str, Any], *, by_compiled_statement: bool) -> None:
    guard: _OneWrite | None = options.get(_ONE_WRITE)
    if guard is None:
        return
    if guard.written:
        raise SecondWriteOutsideTransaction("a second write outside a transaction")
    session = guard.session
    pending = session is not None and bool(session.new or session.dirty or session.deleted)
    if not by_compiled_statement or pending:
        raise NotOneStatement("a write that is not one compiled statement, outside a transaction")
    guard.written = True


def _guard_statement(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    """A statement run through SQLAlchemy (not a `CompiledStatement` on the driver) on a guarded
    connection: a SELECT passes; anything else (the ORM's flush, a text statement such as the
    event-log writer's announcement, whose lock would end with the statement) is a write that
    one self-committing statement cannot be (`NotOneStatement`)."""
    if _ONE_WRITE in context.execution_options and not _plain_read(
        getattr(context, "invoked_statement", None)
    ):
        _before_write(context.execution_options, by_compiled_statement=False)


def _plain_read(statement: Any) -> bool:
    """A SELECT that takes no row locks (FOR UPDATE's would end with the statement)."""
    return isinstance(statement, Select) and not locks_rows(statement)


@dataclass
class _Compiled:
    sql: str
    binds: list[tuple[str, Any, Any]]  # name, bound value, bind processor, in parameter order
    results: list[Any] | None  # a SELECT's result processor per column (None: as given)
    writes: bool = False  # DML, or a SELECT that locks rows (see `Database.one_statement_write`)
    slow_runs: int = 0  # SQLite: slow runs on the event loop's thread in a row

    @property
    def on_loop(self) -> bool:
        """SQLite: whether it runs on the event loop's thread (see `_sqlite_select`)."""
        return self.slow_runs < SQLITE_SLOW_RUNS

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, value, process in self.binds:
            value = params.get(name, value)
            args.append(value if process is None else process(value))
        return args

    def row(self, record: Any) -> tuple[Any, ...]:
        if self.results is None:
            return tuple(record)
        return tuple(v if p is None else p(v) for v, p in zip(record, self.results, strict=True))


@dataclass
class Database:
    """The engine and session factory of one process.

    SQLite allows one writer at a time, so write transactions on SQLite take a process lock
    (the embedded mode is one process); PostgreSQL writes run concurrently.
    """

    url: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """PostgreSQL: the longest a connection attempt, a statement, or a wait for a pooled
    connection may take before it fails (and the request gets 503)."""
    engine: AsyncEngine = field(init=False)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    _write_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        url = async_url(self.url)
        # Up to 30 connections: with 16+ requests in flight, a smaller pool closed and reopened
        # connections (PostgreSQL re-prepared its statements; each SQLite connection is a thread
        # of its own, its file opened again, its pragmas and functions set again). PostgreSQL
        # keeps all 30 it opened: with 20 kept and 10 of overflow, the closed loop of 16 requests
        # plus the outbox's 8 deliveries went above 20 and back below 10 all the time, and each
        # swing closed a connection that the next opened again (a new asyncpg connection, its
        # codecs set up, every statement prepared again).
        if url.startswith("sqlite"):
            # check_same_thread: compiled reads run on the loop's thread (`_sqlite_select`), not
            # the aiosqlite thread that opened the connection (SQLAlchemy already allows that for
            # files; in-memory databases need it said)
            options: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
            database = make_url(url).database
            if database and database != ":memory:" and "mode=memory" not in url:
                # a file: pooled in every SQLAlchemy release (2.0.36 gave aiosqlite NullPool,
                # a new connection and thread per checkout)
                options |= {"poolclass": AsyncAdaptedQueuePool, "pool_size": 20, "max_overflow": 10}
            else:  # in memory: one connection, the database itself
                options["poolclass"] = StaticPool
            # returned connections roll back only when a transaction is open (`_sqlite_reset`)
            options["pool_reset_on_return"] = None
            self.engine = create_async_engine(url, **options)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "reset", _sqlite_reset)
        else:
            # Every wait on the server is bounded (`timeout_seconds`): a partition drops packets
            # without a reset, and only a time limit tells a request, a worker or /readyz so.
            limit = self.timeout_seconds
            self.engine = create_async_engine(
                url,
                pool_size=30,
                max_overflow=0,
                pool_timeout=limit,  # waiting for a pooled connection
                connect_args={"timeout": limit, "command_timeout": limit},
            )
            event.listen(self.engine.sync_engine, "checkout", _replace_if_closed)
            event.listen(self.engine.sync_engine, "handle_error", _invalidate_on_outage)
            event.listen(self.engine.sync_engine, "before_cursor_execute", _guard_statement)
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
        # busy before the checkout's await: a sibling task starting a read meanwhile (the executor
        # resolves fields concurrently) takes a connection of its own instead of checking out a
        # second shared one over this (which would never go back to the pool)
        borrowed.busy = True
        try:
            if borrowed.conn is None:
                borrowed.conn = await self.reads.connect()
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
    async def one_statement_write(self) -> AsyncIterator[AsyncSession]:
        """PostgreSQL only: a session for work whose only write is one statement, on an
        autocommit connection: its reads and its write run without BEGIN and COMMIT round trips,
        and the write commits on its own (so it must be the work's last step).

        The caller chooses it for work it knows to be one statement (`OrderStore`); a guard
        stands behind that choice: the write must be a `CompiledStatement` (INSERT, UPDATE) run
        with no unflushed ORM change in the session; anything else (a statement through
        SQLAlchemy, the ORM's flush, a SELECT ... FOR UPDATE, whose locks would end with it)
        raises `NotOneStatement` before it runs, and any write after the first raises
        `SecondWriteOutsideTransaction`. Both are bugs, never retried. Reads may be any number
        of plain SELECTs."""
        if self.is_sqlite:
            raise RuntimeError("SQLite writes go through Database.write()")
        guard = _OneWrite()
        # an autocommit connection, as the request's reads use: its shared one (`request_reads`,
        # which read the token) rather than a second checkout
        async with self.read_connection() as conn:
            guarded = await conn.execution_options(**{_ONE_WRITE: guard})
            try:
                async with self.sessions(bind=guarded) as session, session.begin():
                    guard.session = session
                    yield session
            finally:  # the request's later reads on it are not guarded
                await conn.execution_options(**{_ONE_WRITE: None})

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


async def execute(session: AsyncSession, statement: Executable) -> Result[*tuple[Any, ...]]:
    """SQLAlchemy's `Session.execute` of a Core statement (a `select` of columns, an `update`):
    the session's transaction, its autoflush, a `Result` of rows. sqlmodel's `exec` is the same
    call (its `execute` warns that it is deprecated), but its overloads type only sqlmodel's own
    `select`."""
    return await session.exec(statement)  # type: ignore[call-overload,no-any-return]


def database_from_settings(settings: Settings) -> Database:
    return Database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
