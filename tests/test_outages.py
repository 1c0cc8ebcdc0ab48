"""`is_outage`, the one rule that tells a dependency's failure (503, 1013) from a bug (masked,
500): the errors the drivers raise when a server is down, restarting or out of reach, and only
those. (Real outages through a real server: tests/scale/test_outages.py.)"""

from __future__ import annotations

import errno
import logging
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.asyncio
import redis.exceptions
import sqlalchemy.exc

from app.outages import DependencyUnavailable, is_outage, log_failure
from tests.support.smtp import free_port


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
    "terminated mid-operation": asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
    "protocol failed": asyncpg.InternalClientError(
        'cannot switch to state 12; protocol is in the "failed" state'
    ),
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
    "another internal error of asyncpg": asyncpg.InternalClientError("unexpected codec"),
    "nothing": None,
}


@pytest.mark.parametrize("name", list(OUTAGES))
def test_a_dependency_down_is_an_outage(name: str) -> None:
    assert is_outage(OUTAGES[name]) is True


@pytest.mark.parametrize("name", list(BUGS))
def test_anything_else_is_not(name: str) -> None:
    assert is_outage(BUGS[name]) is False


async def refused_by_postgres() -> BaseException:
    """What asyncpg raises connecting to a port nothing listens on."""
    try:
        await asyncpg.connect(host="127.0.0.1", port=free_port(), user="x", timeout=5)
    except Exception as error:
        return error
    raise AssertionError("connected to a closed port")


async def refused_by_redis() -> BaseException:
    client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as error:
        return error
    finally:
        await client.aclose()
    raise AssertionError("connected to a closed port")


@pytest.mark.parametrize(
    ("make", "named"), [(refused_by_postgres, "the database"), (refused_by_redis, "Redis")]
)
async def test_a_worker_failure_from_an_outage_is_one_warning_without_a_traceback(
    make: Any, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = await make()
    log = logging.getLogger("orderpulse.test-worker")
    with caplog.at_level(logging.INFO, logger="orderpulse.test-worker"):
        assert log_failure(log, "pass %d failed; trying again in %ss", error, 7, 5) is True
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage().startswith(
        f"pass 7 failed; trying again in 5s: {named} is down or out of reach ("
    ), record.getMessage()


def test_a_worker_failure_from_a_bug_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        {}["missing"]
    except KeyError as error:
        bug = error
    log = logging.getLogger("orderpulse.test-worker")
    with caplog.at_level(logging.INFO, logger="orderpulse.test-worker"):
        assert log_failure(log, "pass %d failed", bug, 7) is False
    [record] = caplog.records
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "pass 7 failed")
    assert record.exc_info is not None and record.exc_info[1] is bug
