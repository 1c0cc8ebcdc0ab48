"""The command line: serve, migrate, token create (optionally expiring), list and revoke,
documents add, export-schema.

A token never appears on a command line, where any user of the host sees it in the process list:
`token revoke` reads it from standard input or takes the token's id (`token create` prints the id
to standard error, `token list` lists them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import re
import sys
from datetime import timedelta

from pydantic import ValidationError

from app.settings import Settings, get_settings


def load_settings() -> Settings:
    """Read the configuration; on a bad value, say which variable and stop."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "ORDERPULSE_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"configuration error: {name}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_TOKEN_LIFETIME = timedelta(days=3660)


def parse_duration(value: str) -> timedelta:
    """`30d`, `12h`, `15m` (also `s` seconds, `w` weeks): a positive span of at most ten years."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration: a whole number and a unit, e.g. 30d, 12h, 15m"
        )
    amount, unit = int(match.group(1)), match.group(2)
    duration = timedelta(**{_UNITS[unit]: amount})
    if duration <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{value!r}: the expiry must be in the future")
    if duration > MAX_TOKEN_LIFETIME:
        raise argparse.ArgumentTypeError(f"{value!r}: at most {MAX_TOKEN_LIFETIME.days}d")
    return duration


def _services(settings: Settings):  # type: ignore[no-untyped-def]
    from app.db import database_from_settings
    from app.services import Services

    return Services(settings=settings, db=database_from_settings(settings))


def cmd_migrate(settings: Settings) -> None:
    from app.migrate import migrate

    migrate(settings.database_url)


async def _seed_and_print(settings: Settings, host: str, port: int) -> None:
    from app.demo import seed_demo

    services = _services(settings)
    try:
        tokens = await seed_demo(services)
    finally:
        await services.db.dispose()
    print("Demo data is ready. Tokens (send as 'Authorization: Bearer <token>'):")
    for role, token in tokens.items():
        print(f"  {role:<9} {token}")


def use_multiprocess_metrics() -> None:
    """Several workers: each keeps its metrics in files of one folder that /metrics adds up.

    PROMETHEUS_MULTIPROC_DIR, if set, names the folder (emptied now); else a temporary one,
    removed at exit. Set before any worker starts, so every worker inherits it.
    """
    import atexit
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from app.observability.multiprocess import MULTIPROCESS_ENV, prepare_multiprocess_dir

    folder = os.environ.get(MULTIPROCESS_ENV)
    if not folder:
        folder = tempfile.mkdtemp(prefix="orderpulse-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[MULTIPROCESS_ENV] = folder
    prepare_multiprocess_dir(Path(folder))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    if args.workers > 1:
        use_multiprocess_metrics()  # before anything imports prometheus-client
    import uvicorn

    from app.asgi import server_options
    from app.observability.logs import logging_config

    cmd_migrate(settings)
    if args.demo:
        asyncio.run(_seed_and_print(settings, args.host, args.port))
    print(f"Control panels: http://{args.host}:{args.port}/panel", flush=True)
    print(f"GraphiQL: http://{args.host}:{args.port}/graphql", flush=True)
    uvicorn.run(
        "app.asgi:serve_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        log_config=logging_config(settings.log_format),  # applied again in every worker
        ws_ping_interval=20,
        ws_ping_timeout=20,
        **server_options(settings),
    )


async def _token_create(settings: Settings, args: argparse.Namespace) -> tuple[str, int]:
    from app.access.tokens import create_token, token_id
    from app.errors import DomainError
    from app.graphql.ids import parse_pk
    from app.orders.flow import Role

    try:
        role = Role(args.role.upper())
    except ValueError:
        raise SystemExit(
            f"unknown role {args.role!r}; one of SUPPORT, RESELLER, CUSTOMER, SYSTEM"
        ) from None
    reseller_id = _parse_id(args.reseller, "Reseller", parse_pk)
    customer_id = _parse_id(args.customer, "Customer", parse_pk)
    services = _services(settings)
    try:
        async with services.transaction() as session:
            token = await create_token(
                session,
                role=role,
                reseller_id=reseller_id,
                customer_id=customer_id,
                now=services.clock.now(),
                expires_in=args.expires_in,
            )
            made = await token_id(session, token)
            assert made is not None
            return token, made
    except DomainError as exc:
        raise SystemExit(f"error: {exc.message}") from None
    finally:
        await services.db.dispose()


def _parse_id(value: str | None, type_name: str, parse_pk) -> int | None:  # type: ignore[no-untyped-def]
    if value is None:
        return None
    pk = parse_pk(value, type_name)
    if pk is None:
        raise SystemExit(f"error: {value!r} is not a {type_name} id")
    return int(pk)


async def _token_revoke(settings: Settings, *, token: str | None, token_id: int | None) -> bool:
    from app.access.tokens import revoke_token

    services = _services(settings)
    try:
        async with services.transaction() as session:
            now = services.clock.now()
            return await revoke_token(session, token=token, token_id=token_id, now=now)
    finally:
        await services.db.dispose()


async def _token_list(settings: Settings) -> list[str]:
    from app.access.tokens import list_tokens
    from app.graphql.ids import to_global_id

    services = _services(settings)
    try:
        async with services.db.read() as session:
            rows = await list_tokens(session)
    finally:
        await services.db.dispose()
    now = services.clock.now()
    lines = ["id\trole\ttenant\tcreated\texpires\tstate"]
    for row in rows:
        tenant = (
            to_global_id("Customer", row.customer_id)
            if row.customer_id is not None
            else to_global_id("Reseller", row.reseller_id)
            if row.reseller_id is not None
            else "-"
        )
        if row.revoked_at is not None:
            state = "revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            state = "expired"
        else:
            state = "live"
        expires = row.expires_at.isoformat(timespec="seconds") if row.expires_at else "never"
        created = row.created_at.isoformat(timespec="seconds")
        lines.append(f"{row.id}\t{row.role}\t{tenant}\t{created}\t{expires}\t{state}")
    return lines


REVOKE_HOW = (
    "a token on the command line is visible to every user of this host (the process list); "
    "give it on standard input (python -m app token revoke < token.txt) "
    "or by its id (python -m app token revoke --id N; python -m app token list shows the ids)"
)


def read_token_from_stdin() -> str:
    """The token to revoke, from standard input: typed without echo at a terminal, else the
    first line of what is piped in."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Token to revoke: ").strip()
    return sys.stdin.readline().strip()


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> None:
    if args.token not in (None, "-"):
        raise SystemExit(f"error: {REVOKE_HOW}")
    if args.id is not None:
        if args.token is not None:
            raise SystemExit("error: give --id or the token on standard input, not both")
        revoked = asyncio.run(_token_revoke(settings, token=None, token_id=args.id))
    else:
        token = read_token_from_stdin()
        if not token:
            raise SystemExit(f"error: no token on standard input; {REVOKE_HOW}")
        revoked = asyncio.run(_token_revoke(settings, token=token, token_id=None))
    if not revoked:
        raise SystemExit("error: unknown or already revoked token")
    print("revoked")


def read_documents(paths: list[str]) -> list[tuple[str, str]]:
    """(path, text) of each file, each checked to be a valid document of the schema."""
    from graphql import GraphQLError, parse, validate

    from app.graphql.schema import build_schema
    from app.kernel.strawberry import graphql_schema

    schema = graphql_schema(build_schema())
    documents = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise SystemExit(f"error: {path}: {exc.strerror}") from None
        try:
            errors = validate(schema, parse(text))
        except GraphQLError as exc:
            errors = [exc]
        if errors:
            raise SystemExit(f"error: {path}: {errors[0].message}")
        documents.append((path, text))
    return documents


async def _documents_add(settings: Settings, documents: list[tuple[str, str]]) -> list[str]:
    from app.documents.store import trust

    services = _services(settings)
    try:
        async with services.transaction() as session:
            return [
                await trust(session, text, now=services.clock.now()) for _path, text in documents
            ]
    finally:
        await services.db.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description="OrderPulse order desk API")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate, then run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="seed demo data, print a token per role")
    commands.add_parser("migrate", help="bring the database to the current schema")
    commands.add_parser("export-schema", help="print the GraphQL SDL")
    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="make a token and print it")
    create.add_argument("--role", required=True)
    create.add_argument("--reseller", help="the reseller's GraphQL id (RESELLER tokens)")
    create.add_argument("--customer", help="the customer's GraphQL id (CUSTOMER tokens)")
    create.add_argument(
        "--expires-in",
        type=parse_duration,
        metavar="DURATION",
        help="the token stops working after this long, e.g. 30d, 12h, 15m (default: never)",
    )
    token_commands.add_parser("list", help="list the tokens: id, role, tenant, dates, state")
    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a token read from standard input, or the token of --id",
        description="Revoke a token. Give it on standard input (never on the command line, "
        "where the process list shows it), or give its id.",
    )
    revoke.add_argument(
        "token",
        nargs="?",
        metavar="-",
        help="read the token from standard input (the default without --id)",
    )
    revoke.add_argument("--id", type=int, help="the token's id (token create, token list)")
    documents = commands.add_parser("documents", help="trusted GraphQL documents")
    documents_commands = documents.add_subparsers(dest="documents_command", required=True)
    add = documents_commands.add_parser(
        "add", help="trust these documents (each file's exact text; prints its SHA-256)"
    )
    add.add_argument("files", nargs="+", metavar="FILE.graphql")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "export-schema":
        from app.graphql.schema import export_schema

        sys.stdout.write(export_schema())
        return
    settings = load_settings()
    from app.observability.logs import logging_config

    logging.config.dictConfig(logging_config(settings.log_format))
    if args.command == "migrate":
        cmd_migrate(settings)
    elif args.command == "serve":
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        cmd_serve(args, settings)
    elif args.command == "documents":
        checked = read_documents(args.files)
        cmd_migrate(settings)
        for (path, _text), sha256 in zip(
            checked, asyncio.run(_documents_add(settings, checked)), strict=True
        ):
            print(f"{sha256}  {path}")
    elif args.token_command == "create":  # noqa: S105 (a command name)
        cmd_migrate(settings)
        created, made = asyncio.run(_token_create(settings, args))
        print(created)
        print(f"token id {made} (token revoke --id {made})", file=sys.stderr)
    elif args.token_command == "list":  # noqa: S105 (a command name)
        print("\n".join(asyncio.run(_token_list(settings))))
    else:
        cmd_token_revoke(args, settings)


if __name__ == "__main__":
    main()
