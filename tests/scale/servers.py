"""Real OrderPulse server processes for the multi-process tests, and clients to talk to them.

server = ServerProcess.start(env, log_dir=tmp_path)      # `python -m app serve` on a free port
body = await server.graphql(token, query, variables)
async with subscription(server, token, query) as sub:    # graphql-transport-ws
    payload = await sub.next(timeout=10)
server.stop()
"""

from __future__ import annotations

import asyncio
import json
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
import websockets

from tests.support.smtp import free_port

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
    for name, value in settings.items():
        env["ORDERPULSE_" + name.upper()] = value
    return env


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
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
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

    async def graphql(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The response body of one POST /graphql (status 200 required)."""
        if self.http is None:
            self.http = httpx.AsyncClient(base_url=self.base_url, timeout=20.0)
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(
        self, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = await self.graphql(token, query, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

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


@dataclass
class Subscription:
    """One graphql-transport-ws subscription on its own websocket."""

    ws: Any
    id: str = "1"

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        """The `data` of the next `next` message (an error or `complete` fails the test)."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                assert message["type"] == "next", message
                payload = message["payload"]
                assert "errors" not in payload, payload
                data: dict[str, Any] = payload["data"]
                return data

    async def nothing_within(self, seconds: float) -> None:
        """Assert that no further event arrives within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = json.loads(await self.ws.recv())
                    if message["type"] != "ping":
                        raise AssertionError(f"unexpected message {message}")
        except TimeoutError:
            return


@asynccontextmanager
async def subscription(
    server: ServerProcess, token: str, query: str, variables: dict[str, Any] | None = None
) -> AsyncIterator[Subscription]:
    """Connect, authenticate (`connection_init` with the bearer token), subscribe."""
    async with websockets.connect(
        server.ws_url,
        subprotocols=["graphql-transport-ws"],
        open_timeout=10,  # type: ignore[list-item]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        async with asyncio.timeout(10):
            ack = json.loads(await ws.recv())
        assert ack["type"] == "connection_ack", ack
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}},
                }
            )
        )
        yield Subscription(ws)
