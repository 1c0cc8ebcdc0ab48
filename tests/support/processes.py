"""Real OrderPulse server processes (`python -m app serve`), for the tests that need a process:
the multi-process tests and the outbox crash test. Clients are tests/support's own.

server = ServerProcess.launch(env, log_dir=tmp_path, name="a")  # `python -m app serve`, free port
await server.wait_ready()
data = await server.api(token).data(query, variables)  # tests/support/api.py's GraphQLClient
async with subscription(server, token, query) as sub:  # tests/support/ws.py's WSClient
    payload = await sub.next("1", timeout=10)
server.stop()
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.api import GraphQLClient
from tests.support.server import LiveServer
from tests.support.smtp import free_port
from tests.support.ws import WSClient, connected

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 40.0


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a server process: ours without ORDERPULSE_*, plus the given settings
    (keyword `smtp_url` becomes ORDERPULSE_SMTP_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPULSE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ORDERPULSE_DATABASE_URL"] = database_url
    env["ORDERPULSE_SUPPORT_EMAIL"] = "support@distributor.example"
    env["ORDERPULSE_MAIL_FROM"] = "orderpulse@distributor.example"
    # as in tests/conftest.py: per-order tests fail many orders with one reason, which is an
    # incident by default (SPEC 10); an incident test gives the threshold it tests
    env["ORDERPULSE_INCIDENT_THRESHOLD"] = "1000"
    for name, value in settings.items():
        env["ORDERPULSE_" + name.upper()] = value
    return env


def run_app(
    env: Mapping[str, str], workdir: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS...` with `env` in `workdir`, `stdin` on its standard input, bounded in
    time; not checked."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=dict(env),
        cwd=workdir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_cli(env: Mapping[str, str], workdir: Path, *args: str) -> str:
    """`run_app`, which must succeed; its standard output."""
    done = run_app(env, workdir, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class ServerProcess:
    """One `python -m app serve` process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    http: httpx.AsyncClient | None = field(default=None, repr=False)

    @classmethod
    def launch(
        cls, env: Mapping[str, str], *, log_dir: Path, name: str, workers: int = 1
    ) -> ServerProcess:
        """Start the process (it migrates, then serves); `wait_ready` before using it."""
        port = free_port()
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        # cwd: a scratch folder, so no `.env` of the developer's is read.
        args = [sys.executable, "-m", "app", "serve", "--port", str(port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        process = subprocess.Popen(
            args,
            cwd=log_dir,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        return cls(process=process, port=port, log_path=log_path)

    @property
    def endpoint(self) -> LiveServer:
        """Its addresses: `origin`, `http_url`, `ws_url`."""
        return LiveServer("127.0.0.1", self.port)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.endpoint.origin, timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def api(self, token: str) -> GraphQLClient:
        """A client of this server's /graphql that sends `token`."""
        if self.http is None:
            self.http = httpx.AsyncClient(base_url=self.endpoint.origin, timeout=20.0)
        return GraphQLClient(self.http, token)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash), and reap it."""
        if self.process.poll() is None:
            os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM the process group (uvicorn and its workers); SIGKILL after 15 s."""
        if self.process.poll() is None:
            with_group = os.getpgid(self.process.pid)
            os.killpg(with_group, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                self.process.wait(5)


@asynccontextmanager
async def subscription(
    server: ServerProcess, token: str, query: str, variables: dict[str, Any] | None = None
) -> AsyncIterator[WSClient]:
    """Connect, authenticate (`connection_init` with the bearer token), subscribe as id "1"."""
    async with connected(server.endpoint.ws_url, token, open_timeout=10) as ws:
        await ws.subscribe("1", query, variables or {})
        yield ws
