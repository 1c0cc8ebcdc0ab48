"""`is_outage`, the one rule that tells a dependency's failure (503, 1013) from a bug (masked,
500): the errors the drivers raise when a server is down, restarting or out of reach, and only
those. (Real outages through a real server: tests/scale/test_outages.py.)"""

from __future__ import annotations

import errno

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.exceptions
import sqlalchemy.exc

from app.outages import DependencyUnavailable, is_outage


def wrapped(cause: BaseException) -> Exception:
    """An error raised while handling `cause` (as SQLAlchemy and our code re-raise)."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("while reading") from inner
    except RuntimeError as outer:
        return outer


OUTAGES = {
    "refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    "reset": ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "a time limit": TimeoutError(),
    "several addresses": OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."),
    "unreachable host": OSError(errno.EHOSTUNREACH, "No route to host"),
    "starting up": asyncpg.CannotConnectNowError("the database system is starting up"),
    "terminated by a restart": asyncpg.AdminShutdownError("terminating connection"),
    "connection lost": asyncpg.ConnectionDoesNotExistError("connection was closed"),
    "closed connection": asyncpg.InterfaceError("connection is closed"),
    "pool wait": sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    "SQLAlchemy disconnect": sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception("gone"), connection_invalidated=True
    ),
    "SQLAlchemy around asyncpg": sqlalchemy.exc.DBAPIError(
        "SELECT 1", {}, asyncpg.CannotConnectNowError("shutting down")
    ),
    "Redis": redis.exceptions.ConnectionError("Error 111 connecting"),
    "Redis time limit": redis.exceptions.TimeoutError("Timeout reading"),
    "ours": DependencyUnavailable("a field needed the database"),
    "a cause of another error": wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
}

BUGS = {
    "a value": ValueError("bad"),
    "a missing file": FileNotFoundError(errno.ENOENT, "no such file"),
    "a constraint": asyncpg.UniqueViolationError("duplicate key"),
    "bad SQL": sqlalchemy.exc.ProgrammingError("SELEC 1", {}, Exception("syntax")),
    "a key": KeyError("x"),
    "nothing": None,
}


@pytest.mark.parametrize("name", list(OUTAGES))
def test_a_dependency_down_is_an_outage(name: str) -> None:
    assert is_outage(OUTAGES[name]) is True


@pytest.mark.parametrize("name", list(BUGS))
def test_anything_else_is_not(name: str) -> None:
    assert is_outage(BUGS[name]) is False
