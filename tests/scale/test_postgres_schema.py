"""Migrations on PostgreSQL: the models' schema exactly, down and up, and safe when several
servers start at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer
from tests.support.processes import ROOT, server_env
from tests.test_migrations import check_migrations, schema_differences

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


async def test_postgres_migrations_build_the_models_schema(empty_database: str) -> None:
    await check_migrations(empty_database)


async def test_migrations_started_at_once_by_several_processes_all_succeed(
    empty_database: str,
) -> None:
    """Hosts starting together each run `migrate`; an advisory lock puts them in line."""
    env = server_env(empty_database)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert await schema_differences(empty_database) == []
