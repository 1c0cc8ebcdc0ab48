#!/usr/bin/env python3
"""Read benchmark: a reseller panel's order page, and one status page at 10k vs 1M orders.

    .venv/bin/python scripts/bench_read.py                   # everything (about 6 minutes)
    .venv/bin/python scripts/bench_read.py --configs sqlite,pg1 --seconds 5 --skip-big
    .venv/bin/python scripts/bench_read.py --profile pg1      # also sample the server with py-spy

1. Seeds 100,000 orders over 200 customers and 20 resellers (bulk INSERTs through SQLAlchemy
   core), then posts the panel query as one reseller at concurrency 32 for `--seconds` (after a
   2 s warm-up) and prints req/s, p50 and p99, for SQLite/1 process and PostgreSQL/1, 2, 4 workers.
2. On PostgreSQL, seeds 10,000 and 1,000,000 orders (generate_series) and prints the sequential
   latency of `orders(first: 50, filter: {status: [PF]})` for support and for a reseller, with
   the query plan of its page.

Needs PostgreSQL on 127.0.0.1:5432 (ORDERPULSE_BENCH_POSTGRES_URL to change). Everything runs on
127.0.0.1; databases are dropped at the end. The load generator shares the machine's CPUs with
the server, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib as b

PANEL = """query Panel { orders(first: 50) { edges { node { number status total { amount currency }
  customer { name } reseller { name } failure { reason message } } } } }"""
FAILED_PAGE = """query Failed { orders(first: 50, filter: {status: [PF]}) {
  edges { node { number status failure { reason message } } } } }"""


def has_50_orders(body: dict[str, object]) -> bool:
    return len(body["data"]["orders"]["edges"]) == 50  # type: ignore[index]


async def panel_load(url: str, workers: int, token: str, seconds: float, profile: bool) -> str:
    server = b.start_server(url, workers=workers)
    try:
        body, headers = b.graphql_request(token, PANEL)
        spy = start_profiler(server, seconds) if profile else None
        result = await b.load(
            server.port,
            lambda _: (body, headers),
            concurrency=32,
            seconds=seconds,
            check=has_50_orders,
        )
        line = result.line()
        if spy is not None:
            line += "\n" + finish_profiler(spy)
        return line
    finally:
        server.stop()


def start_profiler(server: b.Server, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")  # type: ignore[attr-defined]
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    process = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(server.process.pid),
            "--duration",
            str(int(seconds) + 1),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, out


PACKAGES = [
    ("asyncpg", "asyncpg"),
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlmodel", "SQLModel"),
    ("graphql/", "graphql-core"),
    ("strawberry", "strawberry"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("starlette", "starlette"),
    ("pydantic", "pydantic"),
    ("/app/", "app (OrderPulse)"),
    ("json", "json"),
    ("asyncio", "asyncio event loop"),
    ("uvloop", "asyncio event loop"),
]


def _package(frame: str) -> str:
    for needle, name in PACKAGES:
        if needle in frame:
            return name
    return "other"


def finish_profiler(spy: tuple[subprocess.Popen[bytes], Path]) -> str:
    process, out = spy
    _, err = process.communicate(timeout=120)
    if not out.exists():
        return f"  (py-spy gave no profile: {err.decode()[-300:]})"
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if "idle" in leaf or ("select" in leaf.split(" ")[0] and "selectors" in leaf):
            continue  # waiting in the event loop's poll: not CPU
        total += count
        self_time[_package(leaf)] += count
        for package in {_package(f) for f in frames}:
            inclusive[package] += count
    if total == 0:
        return "  (empty profile)"
    lines = ["  profile (py-spy, CPU samples of the server process, by package):"]
    lines.append(
        "    self time:      "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in self_time.most_common(8))
    )
    lines.append(
        "    inclusive time: "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in inclusive.most_common(8))
    )
    return "\n".join(lines)


async def panel_benchmarks(args: argparse.Namespace) -> None:
    configs = args.configs.split(",")
    print(f"== panel query, reseller token, concurrency 32, {args.seconds:.0f} s per run ==")
    print(f"   seeding {args.orders:,} orders, 200 customers, 20 resellers (SQLAlchemy core)")
    if "sqlite" in configs:
        folder = Path(tempfile.mkdtemp(prefix="orderpulse-bench-"))
        url = b.sqlite_url(folder)
        await b.migrate(url)
        started = time.monotonic()
        seeded = await b.seed_core(url, orders=args.orders, customers=200, resellers=20)
        print(f"   SQLite seeded in {time.monotonic() - started:.1f} s")
        token = await b.make_token(url, "RESELLER", reseller_id=seeded.reseller_ids[0])
        line = await panel_load(url, 1, token, args.seconds, args.profile == "sqlite")
        print(f"SQLite     1 process : {line}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    pg = [c for c in configs if c.startswith("pg")]
    if pg:
        url = await b.create_pg_database()
        try:
            await b.migrate(url)
            started = time.monotonic()
            seeded = await b.seed_core(url, orders=args.orders, customers=200, resellers=20)
            print(f"   PostgreSQL seeded in {time.monotonic() - started:.1f} s")
            token = await b.make_token(url, "RESELLER", reseller_id=seeded.reseller_ids[0])
            for config in pg:
                workers = int(config[2:])
                line = await panel_load(url, workers, token, args.seconds, args.profile == config)
                print(
                    f"PostgreSQL {workers} worker{'s' if workers > 1 else ' '}: {line}", flush=True
                )
        finally:
            await b.drop_pg_database(url)


async def explain(url: str, reseller_id: int) -> list[str]:
    import asyncpg

    from app.events.transport import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        lines = []
        for label, where in (
            ("support", "status IN ('PF')"),
            ("reseller", f"reseller_id = {reseller_id} AND status IN ('PF')"),
        ):
            plan = await conn.fetch(
                f"EXPLAIN ANALYZE SELECT * FROM sales_order WHERE {where} ORDER BY id DESC LIMIT 51"
            )
            text = [r[0] for r in plan]
            lines.append(f"    plan ({label}): {text[1].strip()}  [{text[-1].strip()}]")
        return lines
    finally:
        await conn.close()


async def big_table_benchmarks(args: argparse.Namespace) -> None:
    print("== orders(first: 50, filter: {status: [PF]}) on PostgreSQL, 1 worker, sequential ==")
    for orders in (10_000, args.big):
        url = await b.create_pg_database()
        try:
            await b.migrate(url)
            started = time.monotonic()
            seeded = await b.seed_generate_series(url, orders=orders, customers=200, resellers=20)
            seeded_in = time.monotonic() - started
            support = await b.make_token(url, "SUPPORT")
            reseller = await b.make_token(url, "RESELLER", reseller_id=seeded.reseller_ids[0])
            server = b.start_server(url)
            try:
                for label, token in (("support ", support), ("reseller", reseller)):
                    request = b.graphql_request(token, FAILED_PAGE)
                    latencies = await b.sequential_latency(
                        server.port, lambda _, r=request: r, requests=300
                    )
                    print(f"{orders:>9,} orders, {label}: {b.summary_ms(latencies)}")
            finally:
                server.stop()
            print(f"    (seeded in {seeded_in:.1f} s)")
            for line in await explain(url, seeded.reseller_ids[0]):
                print(line)
        finally:
            await b.drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--configs", default="sqlite,pg1,pg2,pg4")
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-panel", action="store_true")
    parser.add_argument("--profile", choices=["sqlite", "pg1", "pg2", "pg4"])
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}")
    if not args.skip_panel:
        asyncio.run(panel_benchmarks(args))
    if not args.skip_big:
        asyncio.run(big_table_benchmarks(args))


if __name__ == "__main__":
    main()
