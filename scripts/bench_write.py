#!/usr/bin/env python3
"""Write benchmark: order status changes per second through the API.

    .venv/bin/python scripts/bench_write.py          # SQLite, PostgreSQL 1 and 2 workers
    .venv/bin/python scripts/bench_write.py --configs pg1 --seconds 5
    .venv/bin/python scripts/bench_write.py --baseline /work/main   # the same runs of another
                                                    # checkout's server, interleaved, with ratios
    .venv/bin/python scripts/bench_write.py --configs pg1 --py-spy /tmp/w  # also profile each
        # server process over the measured window (py-spy, collapsed stacks: /tmp/w-pg1-PID.txt)

Each of `--concurrency` clients owns its own orders (no conflicts) and moves each in turn:
`reportProvisioningResult(FAILED)` (PR -> PF: the change, its event, two notifications with their
events, in one transaction; the outbox then sends both mails, as .eml files) and
`performOrderAction(RESUBMIT)` (PF -> PR: the change and its event). Prints status changes per
second with p50/p99 latency, and what was written. Needs PostgreSQL on 127.0.0.1:5432 for the
pg configurations; everything runs on 127.0.0.1.

Load generator: this script's own asyncio HTTP/1.1 keep-alive client (`benchlib.HttpConnection`),
one connection per client, closed loop, in this process on the same machine. Because the cores
are shared (with the load generator and whatever else runs), it also prints the CPU time the
server processes and their PostgreSQL backends spent per change during the measured window (from
/proc), which does not depend on how much CPU others took, and the ratios of a run to the first
configuration's and (with --baseline) to the baseline checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import benchlib as b

REPORT = """mutation Fail($id: ID!) { reportProvisioningResult(input: {orderId: $id,
  outcome: FAILED, reason: EXTERNAL_SYSTEM_ERROR}) { order { status } userErrors { code } } }"""
RESUBMIT = """mutation Resubmit($id: ID!) { performOrderAction(input: {orderId: $id,
  action: RESUBMIT}) { order { status } userErrors { code } } }"""


async def drive(
    port: int,
    token: str,
    order_ids: list[str],
    *,
    concurrency: int,
    seconds: float,
    on_measure: Callable[[bool], object] | None = None,
) -> b.LoadResult:
    latencies: list[float] = []
    errors = 0
    failed = dict.fromkeys(order_ids, False)  # False: in PR, next is FAILED
    measuring = False
    stop_at = 0.0

    async def client(mine: list[str]) -> None:
        nonlocal errors
        conn = b.HttpConnection(port)
        try:
            i = 0
            while time.monotonic() < stop_at:
                order_id = mine[i % len(mine)]
                i += 1
                query = RESUBMIT if failed[order_id] else REPORT
                body, headers = b.graphql_request(token, query, {"id": order_id})
                started = time.perf_counter()
                status, payload = await conn.post("/graphql", body, headers)
                elapsed = time.perf_counter() - started
                data = json.loads(payload) if status == 200 else {}
                result = next(iter((data.get("data") or {}).values()), None)
                ok = bool(result) and not result["userErrors"]
                if ok:
                    failed[order_id] = not failed[order_id]
                if measuring:
                    latencies.append(elapsed)
                    errors += 0 if ok else 1
        finally:
            await conn.close()

    groups = [order_ids[w::concurrency] for w in range(concurrency)]
    stop_at = time.monotonic() + 2.0  # warm-up
    await asyncio.gather(*(client(g) for g in groups))
    measuring = True
    if on_measure is not None:
        await on_measure(True)  # type: ignore[misc]
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(client(g) for g in groups))
    elapsed = time.monotonic() - started
    if on_measure is not None:
        await on_measure(False)  # type: ignore[misc]
    return b.LoadResult(len(latencies), errors, elapsed, latencies)


async def written(url: str) -> str:
    from sqlalchemy import text

    from app.db import Database

    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            events = (await conn.execute(text("SELECT count(*) FROM event"))).scalar()
            notes = (await conn.execute(text("SELECT count(*) FROM notification"))).scalar()
            sent = (
                await conn.execute(text("SELECT count(*) FROM notification WHERE status='SENT'"))
            ).scalar()
        return f"{events} events, {notes} notifications ({sent} sent by the end)"
    finally:
        await db.dispose()


@dataclass
class Figures:
    changes_per_second: float
    server_cpu_ms: float
    database_cpu_ms: float


async def run_config(config: str, args: argparse.Namespace, *, root: Path, label: str) -> Figures:
    folder = Path(tempfile.mkdtemp(prefix="orderpulse-bench-"))
    url = b.sqlite_url(folder) if config == "sqlite" else await b.create_pg_database()
    workers = 1 if config == "sqlite" else int(config[2:])
    try:
        await b.migrate(url)
        orders = args.concurrency * 8
        await b.seed_core(url, orders=orders, customers=20, resellers=2, statuses=["PR"])
        from app.graphql.ids import to_global_id

        order_ids = [str(to_global_id("Order", i)) for i in range(1, orders + 1)]
        token = await b.make_token(url, "SUPPORT")
        server = b.start_server(
            url,
            workers=workers,
            extra_env={
                "ORDERPULSE_MAIL_DIR": str(folder / "mail"),
                **dict(item.split("=", 1) for item in args.server_env),
            },
            root=root,
        )
        meter = b.CpuMeter(server.process.pid, url)
        profilers: list[subprocess.Popen[bytes]] = []

        async def on_measure(starting: bool) -> None:
            await (meter.begin() if starting else meter.end())
            if args.py_spy is not None and starting:
                profilers.extend(b.start_py_spy(server.process.pid, f"{args.py_spy}-{config}"))
            elif not starting:
                b.stop_py_spy(profilers)

        try:
            result = await drive(
                server.port,
                token,
                order_ids,
                concurrency=args.concurrency,
                seconds=args.seconds,
                on_measure=on_measure,
            )
            await asyncio.sleep(2.0)  # let the outbox finish
        finally:
            server.stop()
        changes = max(result.requests - result.errors, 1)
        figures = Figures(
            result.rps, meter.server * 1000 / changes, meter.database * 1000 / changes
        )
        name = "SQLite       " if config == "sqlite" else f"PostgreSQL {workers}w"
        print(
            f"{label:>9} {name}: {result.line().replace('req/s', 'changes/s')}\n"
            f"{'':>9} {'':13}  CPU per change: server {figures.server_cpu_ms:.1f} ms, "
            f"PostgreSQL {figures.database_cpu_ms:.1f} ms, load generator "
            f"{meter.load_generator * 1000 / changes:.1f} ms (together {meter.cores_busy():.1f}"
            f" of {os.cpu_count()} cores busy); wrote {await written(url)}",
            flush=True,
        )
        return figures
    finally:
        if config != "sqlite":
            await b.drop_pg_database(url)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--configs", default="sqlite,pg1,pg2")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. /work/main): run its server the same way before each run",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile each server process over the measured window into PREFIX-CONFIG-PID.txt"
        " (py-spy's collapsed stacks; needs py-spy in this venv)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the servers, e.g. ORDERPULSE_REDIS_URL=redis://127.0.0.1:6379/0",
    )
    args = parser.parse_args()
    print(
        f"== status changes through the API, concurrency {args.concurrency}, {args.seconds:.0f} s;"
        " load generator: benchlib.HttpConnection (asyncio, keep-alive, closed loop)"
    )
    results: dict[tuple[str, str], Figures] = {}
    for config in args.configs.split(","):
        if args.baseline is not None:
            results["baseline", config] = asyncio.run(
                run_config(config, args, root=args.baseline.resolve(), label="baseline")
            )
        results["this", config] = asyncio.run(run_config(config, args, root=b.ROOT, label="this"))
    print("== ratios (changes/s)")
    configs = args.configs.split(",")
    for (label, config), figures in results.items():
        first = results[label, configs[0]]
        line = f"{label:>9} {config}: {figures.changes_per_second / first.changes_per_second:.2f}"
        line += f" x {configs[0]}"
        if label == "this" and ("baseline", config) in results:
            base = results["baseline", config]
            line += f", {figures.changes_per_second / base.changes_per_second:.2f} x baseline"
            line += f" (server CPU per change {figures.server_cpu_ms / base.server_cpu_ms:.2f} x)"
        print(line)


if __name__ == "__main__":
    main()
