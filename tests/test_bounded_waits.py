"""Waits that must end: a worker that does not stop when cancelled cannot hold a shutdown, and a
database that accepts connections but never answers cannot hold `/readyz`'s ping."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from app.db import Database
from app.workers import Workers


async def test_stop_gives_up_on_a_worker_that_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a worker stuck in cleanup that never finishes

    async def obedient() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(obedient())]
    with caplog.at_level(logging.WARNING, logger="orderpulse.workers"):
        await asyncio.wait_for(Workers(tasks, None).stop(grace=0.2), timeout=10)
    assert tasks[1].cancelled() and not tasks[0].done()
    assert "the stubborn worker did not stop" in caplog.text
    release.set()
    await tasks[0]


async def test_ping_answers_false_when_the_database_never_answers() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the kernel's backlog) and never says a word
    port = silent.getsockname()[1]
    db = Database(f"postgresql://nobody@127.0.0.1:{port}/none")
    try:
        # without its own bound, asyncpg would wait 60 s for the server's greeting
        assert await asyncio.wait_for(db.ping(), timeout=30) is False
    finally:
        await db.dispose()
        silent.close()
