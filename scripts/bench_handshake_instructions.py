#!/usr/bin/env python3
"""Instructions the server spends per websocket handshake: valgrind's count, not seconds, so the
same on a busy machine as on an idle one, and a change of a few percent shows.

    .venv/bin/python scripts/bench_handshake_instructions.py [--sockets 2000] [--baseline PATH]
        [--callgrind-out PREFIX]

A uvicorn server with the protocols `python -m app serve` runs (`app.asgi.server_options`: its
HTTP and websocket protocols, event loop and per-message deflate off) and `bench_ws_handshake.py`'s
do-nothing graphql-transport-ws app (it accepts; no init is sent here) runs under `valgrind
--tool=callgrind`, counting nothing until it is listening. This process (not under valgrind) then
opens `--sockets` websockets one after another on 127.0.0.1, each a browser's handshake read up to
its 101, keeps them all open (as a reconnect storm does: the collector walks what they keep), then
closes them, and the server stops counting. Printed: the server's instructions per handshake (its
accept, HTTP parsing, upgrade, the app's accept and the close). With `--baseline PATH` (another
checkout, e.g. a worktree of an earlier commit) the same runs against that checkout's code first,
and the ratio is printed; `--callgrind-out PREFIX` keeps the profiles (PREFIX-baseline.out,
PREFIX-checkout.out; `callgrind_annotate` reads them). Needs valgrind (Debian's package).
Stops by itself; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchlib as b
from bench_ws_handshake import do_nothing

REQUEST = (
    b"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"
    b"Origin: http://127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nCache-Control: no-cache\r\n\r\n"
)


def serve(port: int) -> None:
    """The server (run under valgrind): says `listening` on stdout once it is."""
    import uvicorn

    from app.asgi import server_options
    from app.kernel.collector import tune_garbage_collector
    from app.settings import Settings

    options = server_options(Settings())
    config = uvicorn.Config(
        do_nothing,
        host="127.0.0.1",
        port=port,
        http=options["http"],
        ws=options["ws"],
        loop=options["loop"],
        ws_per_message_deflate=options["ws_per_message_deflate"],
        lifespan="off",
        log_config=None,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    started = server.startup

    async def startup(sockets: Any = None) -> None:
        await started(sockets)
        tune_garbage_collector()  # as the served app does once started
        print("listening", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


async def measure(root: Path, sockets: int, out: str | None) -> int:
    """The server's instructions while `sockets` handshakes come and go, with `root`'s code."""
    port = b.free_port()
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
    server = await asyncio.create_subprocess_exec(
        *(
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out or '/dev/null'}",
        ),
        *(sys.executable, __file__, "--serve", str(port)),
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None and server.stderr is not None
    try:
        line = await asyncio.wait_for(server.stdout.readline(), 600)
        if line.strip() != b"listening":
            raise RuntimeError(f"the server did not start: {line!r}")
        await asyncio.to_thread(callgrind_control, "--instr=on", str(server.pid))
        writers = []
        for _ in range(sockets):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            if not head.startswith(b"HTTP/1.1 101 "):
                raise RuntimeError(f"not accepted: {head!r}")
            writers.append(writer)  # open until all are, as in a reconnect storm
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(2.0)  # the server sees each close (valgrind runs it slowly)
        await asyncio.to_thread(callgrind_control, "--instr=off", str(server.pid))
    finally:
        if server.returncode is None:
            server.terminate()
        errors = (await asyncio.wait_for(server.stderr.read(), 120)).decode()
        await asyncio.wait_for(server.wait(), 60)
    collected = re.findall(r"Collected : (\d+)", errors)
    if not collected:
        raise RuntimeError(f"no count from valgrind:\n{errors[-2000:]}")
    return int(collected[-1])


async def compare(sockets: int, baseline: Path | None, out: str | None) -> None:
    roots = [("baseline", baseline)] if baseline is not None else []
    roots.append(("this checkout", b.ROOT))
    per_socket: dict[str, float] = {}
    for name, root in roots:
        total = await measure(root, sockets, f"{out}-{name.split()[-1]}.out" if out else None)
        per_socket[name] = total / sockets
        print(
            f"{name:<14} {sockets} handshakes: {per_socket[name]:,.0f} instructions of the"
            f" server each ({root})",
            flush=True,
        )
    if baseline is not None:
        ratio = per_socket["this checkout"] / per_socket["baseline"]
        print(f"this checkout / baseline: {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--baseline", help="another checkout, measured first")
    parser.add_argument("--callgrind-out", help="keep callgrind's profiles: PREFIX-<which>.out")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)  # the server's own process, under valgrind
    else:
        baseline = Path(args.baseline).resolve() if args.baseline else None
        asyncio.run(compare(args.sockets, baseline, args.callgrind_out))


if __name__ == "__main__":
    main()
