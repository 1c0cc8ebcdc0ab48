"""SQLAlchemy's internals that `app.db.CompiledStatement` runs on, read in one place.

A `CompiledStatement` compiles a Core statement once and then runs its SQL on the driver's own
connection (asyncpg, aiosqlite), skipping SQLAlchemy's per-execution work. To give the driver the
same parameters and to read back the same values SQLAlchemy would, it needs what SQLAlchemy keeps
for itself: the compiled statement's bind processors, whether a SELECT takes row locks, and, on
asyncpg, whether SQLAlchemy's adapter has begun its transaction on the server (so a statement on
the driver lands in that transaction). `tests/test_compiled_read.py` and
`tests/test_compiled_statement.py` compare both paths on SQLite and PostgreSQL, on the lowest and
the newest SQLAlchemy CI runs (docs/KERNEL.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.types import TypeEngine


def bind_processors(compiled: Compiled) -> Mapping[str, Callable[[Any], Any] | None]:
    """What SQLAlchemy applies to each parameter of `compiled` before the driver gets it, by
    parameter name, expanded IN parameters included (private: `SQLCompiler._bind_processors`;
    the public `TypeEngine.bind_processor` would need each expanded name mapped back to its
    parameter's type, which is what this memo holds)."""
    processors: Mapping[str, Callable[[Any], Any] | None] = compiled._bind_processors  # type: ignore[attr-defined]
    return processors


def result_processor(
    column_type: TypeEngine[Any], dialect: Dialect, database_type: Any = None
) -> Callable[[Any], Any] | None:
    """What SQLAlchemy applies to a selected column's values of `column_type` on `dialect` (the
    public path: the type's dialect implementation, as `TypeEngine._cached_result_processor`
    does). `database_type`: what the cursor would describe (asyncpg's Numeric needs it)."""
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).result_processor(
        dialect, database_type
    )
    return processor


def locks_rows(statement: Select[Any]) -> bool:
    """Whether a SELECT takes row locks (FOR UPDATE, FOR SHARE...) (private:
    `Select._for_update_arg`; `Select.with_for_update` sets it and nothing public reads it)."""
    return statement._for_update_arg is not None


# --- SQLAlchemy's asyncpg adapter (`AsyncAdapt_asyncpg_connection`) -------------------------------


def asyncpg_begun(adapter: Any) -> bool:
    """Whether SQLAlchemy's asyncpg adapter has sent BEGIN for its transaction (private: 2.0
    sets `_started`; 2.1 keeps the open transaction in `_transaction`). Unknown: False."""
    started = getattr(adapter, "_started", None)
    if isinstance(started, bool):
        return started
    return getattr(adapter, "_transaction", None) is not None


def asyncpg_in_transaction_or_autocommit(adapter: Any) -> bool:
    """Whether a statement run on the adapter's asyncpg connection lands where SQLAlchemy's own
    would: in the transaction SQLAlchemy began on the server, or on an autocommit connection.
    False when unknown, and the statement goes through SQLAlchemy."""
    if getattr(adapter, "isolation_level", None) == "autocommit":
        return True
    return asyncpg_begun(adapter)


async def asyncpg_send_pending_begin(conn: AsyncConnection, adapter: Any) -> None:
    """If SQLAlchemy began a transaction on `conn` but has not sent its BEGIN yet (its asyncpg
    adapter sends it before the connection's first statement), send it now, as that first
    statement would (private: the adapter's `_start_transaction`), so a statement on the driver
    that opens the transaction (a mutation's read of its order) runs in it."""
    if (
        conn.in_transaction()
        and getattr(adapter, "isolation_level", None) != "autocommit"
        and not asyncpg_begun(adapter)
    ):
        start = getattr(adapter, "_start_transaction", None)
        if start is not None:
            await start()
