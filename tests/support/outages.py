"""Dependencies of our own to break: a PostgreSQL cluster, a Redis server, a TCP proxy.

The machine's PostgreSQL and Redis are shared, so outages are played on servers started here, in
temporary folders on free ports, and stopped at the end:

    pg = OwnPostgres.start()                       # initdb + pg_ctl in a temp folder, trust auth
    url = pg.create_database()                     # a migrated database on it
    pg.stop(); pg.restart()                        # an outage, and its end
    redis = OwnRedis.start(tmp_path / "redis")     # redis-server --save "" --appendonly no
    redis.stop(); redis.start_again()
    proxy = await PartitionProxy.start(pg.port)    # 127.0.0.1:proxy.port -> the server
    proxy.partition(); proxy.heal()                # packets stop (no reset), then flow again

A partition is played as the network plays one: bytes are neither delivered nor refused. The
proxy stops reading from both sides (what was sent waits in the kernel's buffers, as unacked
segments wait to be retransmitted) and new connections are accepted but not forwarded; when it
heals, everything still open flows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tests.support.smtp import free_port

START_SECONDS = 30.0


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server program (initdb, pg_ctl), newest version first."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if found:
        return found[0]
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} (PostgreSQL's server programs) is not installed")
    return path


def own_servers_unavailable() -> str | None:
    """Why PostgreSQL or Redis servers of our own cannot be started here, or None."""
    try:
        postgres_bin("initdb")
        postgres_bin("pg_ctl")
    except FileNotFoundError as exc:
        return str(exc)
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of this test's own (trust auth, 127.0.0.1 only)."""

    directory: Path
    port: int

    @classmethod
    def start(cls, *, port: int | None = None) -> OwnPostgres:
        """initdb into a new temporary folder and start the server. As root, the server runs as
        the `postgres` user (PostgreSQL refuses to run as root), and the folder is its."""
        directory = Path(tempfile.mkdtemp(prefix="orderpulse-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        server = cls(directory, port or free_port())
        server._run(postgres_bin("initdb"), "-D", str(directory / "data"), "-U", "postgres",
                    "-A", "trust")  # fmt: skip
        server.start_again()
        return server

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=120, cwd=self.directory)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, *, port: int | None = None) -> str:
        """A database's URL, through `port` (a proxy's) if given."""
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        self._run(postgres_bin("pg_ctl"), "-D", str(self.directory / "data"), *args)

    def start_again(self) -> None:
        """Start the server (again), and return once it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
        )
        self._ctl("-w", "-t", str(int(START_SECONDS)), "-l", str(self.directory / "log"),
                  "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends every connection (a restart), `immediate` is a crash."""
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def create_database(self, name: str = "orderpulse", *, migrated: bool = True) -> str:
        """A new database (migrated to the current schema); its URL."""
        self._run(postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", name)  # fmt: skip
        url = self.url(name)
        if migrated:  # (alembic runs its own event loop: in a thread, callable from a test's loop)
            from app.migrate import migrate

            worker = threading.Thread(target=migrate, args=(url,))
            worker.start()
            worker.join(120)
        return url

    def close(self) -> None:
        """Stop the server (if running) and remove its folder."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class OwnRedis:
    """A Redis server of this test's own: no persistence, 127.0.0.1 only."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None) -> OwnRedis:
        directory.mkdir(parents=True, exist_ok=True)
        server = cls(directory, port or free_port())
        server.start_again()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_again(self) -> None:
        """Start the server (again), and return once it answers PING."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        import redis

        deadline = time.monotonic() + START_SECONDS
        while True:
            client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        """Kill the server (its clients see their connections end)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def close(self) -> None:
        self.stop()


class PartitionProxy:
    """A TCP proxy on 127.0.0.1 to `127.0.0.1:target_port` that can stop forwarding (a network
    partition: no reset, no refusal, nothing delivered) and start again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, target_port: int, *, port: int = 0) -> Self:
        proxy = cls(target_port)
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", port)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    @property
    def partitioned(self) -> bool:
        return not self.flowing.is_set()

    def partition(self) -> None:
        """Stop forwarding, in both directions and for new connections."""
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def gate(self, client: asyncio.StreamWriter) -> asyncio.Event:
        """What one client connection's forwarding waits on besides `flowing`: set while it may
        flow. Here every connection shares `flowing`; a subclass can cut some connections only
        (scripts/soak.py cuts one server worker's)."""
        return self.flowing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        gate = self.gate(writer)
        try:
            await self._open(gate)
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
            await asyncio.gather(
                self._pipe(reader, upstream_writer, gate), self._pipe(upstream_reader, writer, gate)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for each in (writer, upstream_writer):
                if each is not None:
                    with contextlib.suppress(Exception):
                        each.close()

    async def _open(self, gate: asyncio.Event) -> None:
        while not (self.flowing.is_set() and gate.is_set()):
            await self.flowing.wait()
            await gate.wait()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        try:
            while True:
                await self._open(gate)
                data = await reader.read(65536)
                if not data:
                    break
                await self._open(gate)  # read just before the partition: held, not sent
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
