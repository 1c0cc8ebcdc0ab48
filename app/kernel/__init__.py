"""The serving kernel: every place OrderPulse goes under a library for speed, in one package.

Outside this package, `app/` uses other libraries through their public API only
(tests/kernel/test_private_attributes.py fails otherwise). Each module here says what public
behaviour it replaces and why; docs/KERNEL.md lists the versions each was tested with, which are
the ranges pyproject.toml allows (CI runs the lowest through scripts/test-lowest and the newest
through scripts/test). The private names read, by module:

- `strawberry` (strawberry-graphql): `Schema._schema`, the graphql-core schema, which the
  planner, the guards, the validation cache and the websocket's executor run graphql-core on.
- `sqlalchemy` (SQLAlchemy): `SQLCompiler._bind_processors`, a `CompiledStatement`'s parameters
  converted as SQLAlchemy would (expanded IN lists included); `Select._for_update_arg`, whether a
  SELECT takes row locks (the one-statement write's guard); of its asyncpg adapter, `_started`
  (2.0), `_transaction` (2.1) and `_start_transaction()`: whether SQLAlchemy has sent BEGIN, and
  sending it, so a statement on the driver lands in SQLAlchemy's transaction.
- `aiosqlite`: `Connection._conn`, the `sqlite3` connection (compiled SELECTs on the event
  loop's thread; the pool's reset without a trip to the connection's thread).
- `uvicorn`: `HttpToolsProtocol._should_upgrade()`, whether a request becomes a websocket (its
  body then gets no read deadline). It also subclasses uvicorn's HTTP and websockets-sansio
  protocols and reads the state they keep (not underscored, not documented either: listed in its
  docstring).

The other modules use public API only; they are here as the server's runtime tuning:
`event_loop` (uvloop's loop, accepting every waiting connection at each turn), `collector` (the
garbage collector's thresholds on each Python), `coroutines` (ASGI sends stepped by hand),
`log_batching` (log lines written together).
"""
