"""aiosqlite's `sqlite3` connection, read in one place.

aiosqlite runs each `sqlite3` connection in a thread of its own and keeps it in `_conn`. A
`CompiledStatement`'s SELECT runs on it from the event loop's thread while the connection is
checked out (its own thread idle), and a connection returned to the pool asks it whether a
transaction is open (`app.db`); aiosqlite's public API would send both to the thread and back.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def sqlite3_connection(driver: Any) -> sqlite3.Connection:
    """The `sqlite3` connection inside an aiosqlite `Connection` (private: `Connection._conn`),
    opened with `check_same_thread=False` so another thread may use it while its own is idle."""
    connection: sqlite3.Connection = driver._conn
    return connection
