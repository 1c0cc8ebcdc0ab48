"""`with_literal_values`: which bound values become SQL literals, and which stay parameters."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql

from app.kernel.sqlalchemy import with_literal_values

ROWS = Table("rows", MetaData(), Column("id", Integer), Column("name", String))


def compiled(statement: object) -> tuple[str, tuple[object, ...]]:
    done = with_literal_values(statement).compile(  # type: ignore[type-var]
        dialect=postgresql.asyncpg.dialect(), compile_kwargs={"render_postcompile": True}
    )
    return done.string, tuple(done.construct_params()[name] for name in done.positiontup or ())


def test_integers_and_plain_words_become_literals() -> None:
    sql, parameters = compiled(
        select(ROWS.c.id)
        .where(ROWS.c.id == 7, ROWS.c.name.in_(["PF", "SO-001"]), ROWS.c.name != "Order:a+/=")
        .limit(51)
    )
    assert parameters == ()
    assert "rows.id = 7" in sql and "IN ('PF', 'SO-001')" in sql and "LIMIT 51" in sql
    assert "'Order:a+/='" in sql


def test_any_other_value_stays_a_parameter() -> None:
    quoted, backslash, negative = "O'Brien", "a\\' OR 1=1 --", -1
    sql, parameters = compiled(
        select(ROWS.c.id).where(
            ROWS.c.name == quoted,
            ROWS.c.name == backslash,
            ROWS.c.id > negative,
            ROWS.c.name.in_(["PF", "it's"]),
            ROWS.c.id == 3,
        )
    )
    assert parameters == (quoted, backslash, negative, "PF", "it's")
    assert "O'Brien" not in sql and "OR 1=1" not in sql and "rows.id = 3" in sql
