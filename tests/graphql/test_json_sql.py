"""The serializers the database runs when it builds a page as JSON (`planner.json_sql`) give what
the schema's own serializers give for the resolvers' values: global ids and cursors, money,
datetimes (with and without microseconds), enum names, booleans. Checked value by value on the
local PostgreSQL and on SQLite in every suite, beside the whole-response differential tests in
test_read_planner.py (which run on the suite's database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Boolean, DateTime, Integer, Numeric, String, cast, func, literal, select

from app.db import Database, UTCDateTime
from app.graphql.ids import to_cursor, to_global_id
from app.graphql.planner import json_sql
from app.orders import flow
from tests.support.postgres import PostgresServer

DATETIMES = [
    datetime(2026, 11, 30, 17, 51, 43, 474635, tzinfo=UTC),
    datetime(2026, 11, 30, 17, 51, 43, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 6, 1, 0, 0, 0, 500000, tzinfo=UTC),
]
AMOUNTS = ["0", "12.5", "12.50", "12.505", "0.001", "-3.1", "100", "1234567.8901", "-0.0100"]
IDS = [1, 9, 99, 12345, 999999999, 2**31 - 1]


@pytest.fixture
async def postgres() -> AsyncIterator[Database]:
    """The local PostgreSQL server, whatever database the suite runs on (the expressions read no
    table): like tests/scale, these run in every suite and never skip."""
    server = PostgresServer.from_env()
    reason = server.unreachable_reason()
    if reason is not None:
        pytest.fail(f"PostgreSQL is needed here: {reason}")
    db = Database(server.admin_url)
    try:
        yield db
    finally:
        await db.dispose()


async def one(db: Database, expression: object) -> object:
    async with db.read_connection() as conn:
        return (await conn.execute(select(expression))).scalar_one()  # type: ignore[call-overload]


async def test_ids_and_cursors(postgres: Database) -> None:
    for pk in IDS:
        for prefix in ("Order", "Customer", "Reseller"):
            assert await one(postgres, json_sql.global_id(prefix, literal(pk, Integer))) == (
                to_global_id(prefix, pk)
            )
        assert await one(postgres, json_sql.global_id("order", literal(pk, Integer))) == (
            to_cursor("order", pk)
        )


async def test_money(postgres: Database) -> None:
    for text in AMOUNTS:
        stored = Decimal(text).quantize(Decimal("0.0001"))  # Numeric(18, 4), as asyncpg gives it
        column = cast(literal(text, String), Numeric(18, 4))
        assert await one(postgres, json_sql.money(column)) == str(json_sql.amount(stored)), text


async def test_datetimes(postgres: Database) -> None:
    for value in DATETIMES:
        column = cast(literal(value.replace(tzinfo=None), DateTime), DateTime)
        assert await one(postgres, json_sql.iso_datetime(column)) == value.isoformat(), value


async def test_enum_names_and_actions(postgres: Database) -> None:
    for member in flow.Status:
        column = literal(member.value, String)
        assert await one(postgres, json_sql.enum_name(flow.Status, column)) == member.name
    for role in flow.Role:
        expression = func.json_build_object(
            "a", json_sql.json_list([a.name for a in flow.available_actions(flow.Status.PF, role)])
        )
        text = await one(postgres, cast(expression, String))
        assert orjson.loads(str(text)) == {
            "a": [a.name for a in flow.available_actions(flow.Status.PF, role)]
        }


# --- SQLite: its JSON functions, and ours for what it lacks -------------------------------------


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'json.db'}")
    try:
        yield db
    finally:
        await db.dispose()


SQLITE = json_sql.JSON_SQL["sqlite"]


async def test_sqlite_ids_and_cursors(sqlite: Database) -> None:
    for pk in IDS:
        for prefix in ("Order", "Customer", "order"):
            got = await one(sqlite, SQLITE.global_id(prefix, literal(pk, Integer)))
            assert got == to_global_id(prefix, pk) == to_cursor(prefix, pk)


async def test_sqlite_money_is_what_the_row_path_reads(sqlite: Database) -> None:
    """SQLite keeps NUMERIC as REAL: the row path reads it through SQLAlchemy's Numeric processor
    and `json_sql.amount`; the JSON function must give the same text."""
    for scale in (2, 4):
        for text in AMOUNTS:
            column = cast(literal(Decimal(text), Numeric(18, scale)), Numeric(18, scale))
            stored = await one(sqlite, column)
            assert isinstance(stored, Decimal)
            assert await one(sqlite, SQLITE.money(column)) == str(json_sql.amount(stored)), text
    assert await one(sqlite, SQLITE.money(cast(literal(None), Numeric(18, 4)))) is None


async def test_sqlite_datetimes(sqlite: Database) -> None:
    for value in DATETIMES:
        stored = literal(value, UTCDateTime)  # as a column keeps it: text (a CAST would not)
        assert await one(sqlite, SQLITE.datetime(stored)) == value.isoformat(), value


async def test_sqlite_objects_booleans_enums_and_actions(sqlite: Database) -> None:
    for role in flow.Role:
        for status in flow.Status:
            actions = [a.name for a in flow.available_actions(status, role)]
            edge = SQLITE.object(
                [
                    ("status", json_sql.enum_name(flow.Status, literal(status.value, String))),
                    ("on", SQLITE.boolean(literal(True, Boolean))),
                    ("off", SQLITE.boolean(literal(False, Boolean))),
                    ("actions", SQLITE.array(actions)),
                    ("nested", SQLITE.object([("n", literal(1, Integer))])),
                ]
            )
            assert orjson.loads(str(await one(sqlite, edge))) == {
                "status": status.name,
                "on": True,
                "off": False,
                "actions": actions,
                "nested": {"n": 1},
            }
