"""The command line, run as a user would: migrate, token create/revoke, bad arguments."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx

from app.asgi import create_app
from app.settings import Settings
from tests.support.processes import run_app

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ORDERPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PYTHONPATH": str(ROOT),
    }
    return run_app(env, tmp_path, *args, stdin=stdin)


async def in_thread(
    tmp_path: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`run`, without blocking the event loop: while the app in this process is serving, one of
    its background workers may be inside a write transaction, which a blocked loop would hold
    open, and the command's own write would wait for the lock until SQLite gives up."""
    return await asyncio.to_thread(lambda: run(tmp_path, *args, stdin=stdin))


async def test_tokens_from_the_cli_work_and_can_be_revoked(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    created = run(tmp_path, "token", "create", "--role", "support")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("op_") and "\n" not in token

    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'cli.db'}")  # type: ignore[call-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            headers = {"Authorization": f"Bearer {token}"}
            response = await http.post(
                "/graphql",
                json={
                    "query": 'mutation { createReseller(input: {name: "R", email: "r@r.example"}) '
                    "{ reseller { id } } }"
                },
                headers=headers,
            )
            reseller_id = response.json()["data"]["createReseller"]["reseller"]["id"]

            reseller_token = await in_thread(
                tmp_path, "token", "create", "--role", "RESELLER", "--reseller", reseller_id
            )
            assert reseller_token.returncode == 0, reseller_token.stderr
            response = await http.post(
                "/graphql",
                json={"query": "{ viewer { role reseller { id } } }"},
                headers={"Authorization": f"Bearer {reseller_token.stdout.strip()}"},
            )
            assert response.json()["data"] == {
                "viewer": {"role": "RESELLER", "reseller": {"id": reseller_id}}
            }

            revoked = await in_thread(tmp_path, "token", "revoke", stdin=token + "\n")
            assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked", revoked.stderr
            response = await http.post(
                "/graphql", json={"query": "{ viewer { role } }"}, headers=headers
            )
            assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    again = run(tmp_path, "token", "revoke", "-", stdin=token)
    assert again.returncode != 0 and "unknown or already revoked" in again.stderr


def _revoked_at(tmp_path: Path) -> list[tuple[int, str | None]]:
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as db:
        return db.execute("SELECT id, revoked_at FROM api_token ORDER BY id").fetchall()


def test_token_create_prints_the_id_and_revoke_takes_it(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    first = run(tmp_path, "token", "create", "--role", "SUPPORT")
    second = run(tmp_path, "token", "create", "--role", "SYSTEM", "--expires-in", "1d")
    assert "token id 1 (token revoke --id 1)" in first.stderr.splitlines()
    assert "token id 2 (token revoke --id 2)" in second.stderr.splitlines()
    revoked = run(tmp_path, "token", "revoke", "--id", "1")
    assert revoked.returncode == 0 and revoked.stdout == "revoked\n", revoked.stderr
    assert [(i, at is not None) for i, at in _revoked_at(tmp_path)] == [(1, True), (2, False)]
    again = run(tmp_path, "token", "revoke", "--id", "1")
    assert again.returncode == 1 and "unknown or already revoked" in again.stderr
    unknown = run(tmp_path, "token", "revoke", "--id", "99")
    assert unknown.returncode == 1 and "unknown or already revoked" in unknown.stderr
    listed = run(tmp_path, "token", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0] == ["id", "role", "tenant", "created", "expires", "state"]
    assert [(r[0], r[1], r[2], r[5]) for r in rows[1:]] == [
        ("1", "SUPPORT", "-", "revoked"),
        ("2", "SYSTEM", "-", "live"),
    ]
    assert rows[1][4] == "never" and rows[2][4] != "never"
    for token in (first.stdout.strip(), second.stdout.strip()):
        assert token not in listed.stdout + listed.stderr


def test_token_revoke_refuses_a_token_on_the_command_line(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    token = run(tmp_path, "token", "create", "--role", "SUPPORT").stdout.strip()
    refused = run(tmp_path, "token", "revoke", token)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip() == (
        "error: a token on the command line is visible to every user of this host (the process "
        "list); give it on standard input (python -m app token revoke < token.txt) or by its id "
        "(python -m app token revoke --id N; python -m app token list shows the ids)"
    )
    assert token not in refused.stderr
    assert _revoked_at(tmp_path) == [(1, None)]  # nothing was revoked
    empty = run(tmp_path, "token", "revoke", stdin="")
    assert empty.returncode == 1 and "no token on standard input" in empty.stderr
    both = run(tmp_path, "token", "revoke", "-", "--id", "1", stdin=token)
    assert both.returncode == 1 and "not both" in both.stderr
    assert _revoked_at(tmp_path) == [(1, None)]


def test_token_create_refuses_bad_arguments(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    for args, message in [
        (("--role", "wizard"), "unknown role"),
        (("--role", "RESELLER"), "a RESELLER token needs --reseller"),
        (("--role", "RESELLER", "--reseller", "garbage"), "is not a Reseller id"),
        (("--role", "CUSTOMER", "--customer", "Q3VzdG9tZXI6OTk"), "no such customer"),
        (
            ("--role", "SUPPORT", "--customer", "Q3VzdG9tZXI6OTk"),
            "not bound to a reseller or customer",
        ),
    ]:
        result = run(tmp_path, "token", "create", *args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)


def _token_rows(tmp_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as db:
        count: int = db.execute("SELECT count(*) FROM api_token").fetchone()[0]
        return count


def test_token_create_with_an_expiry(tmp_path: Path) -> None:
    import sqlite3
    from datetime import datetime, timedelta

    assert run(tmp_path, "migrate").returncode == 0
    for span, expected in [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("15m", timedelta(minutes=15)),
    ]:
        before = datetime.utcnow()  # the column holds naive UTC
        created = run(tmp_path, "token", "create", "--role", "support", "--expires-in", span)
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip().startswith("op_") and "\n" not in created.stdout.strip()
        with sqlite3.connect(tmp_path / "cli.db") as db:
            made, expires = db.execute(
                "SELECT created_at, expires_at FROM api_token ORDER BY id DESC LIMIT 1"
            ).fetchone()
        made_at, expires_at = datetime.fromisoformat(made), datetime.fromisoformat(expires)
        assert expires_at - made_at == expected
        assert before - timedelta(seconds=5) <= made_at <= datetime.utcnow()
    assert _token_rows(tmp_path) == 3


def test_token_create_refuses_a_bad_expiry_and_writes_nothing(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0
    for span in ("30", "d", "30x", "-5d", "0d", "1.5h", "30 days", "99999d", ""):
        result = run(tmp_path, "token", "create", "--role", "SUPPORT", "--expires-in", span)
        assert result.returncode == 2, (span, result.stderr)
        assert "argument --expires-in" in result.stderr, (span, result.stderr)
        assert result.stdout == ""
    assert _token_rows(tmp_path) == 0
