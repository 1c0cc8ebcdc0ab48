"""The event loop `python -m app serve` runs: uvloop's, whose TCP servers accept every waiting
connection at each loop turn (`Loop`, `Listener`). uvicorn's `loop` setting names
`new_event_loop` (`app.asgi.server_options`). It subclasses uvloop's public `Loop` and hands each
accepted socket to uvloop's public `connect_accepted_socket`: no private attribute of uvloop is
read (tested with uvloop 0.23, docs/KERNEL.md)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger(__name__)

ACCEPT_BATCH = 512
"""Connections accepted at most each time a listening socket is readable (what is left waits for
the next loop turn)."""
ACCEPT_RETRY_SECONDS = 1.0
"""After running out of file descriptors or memory: how long accepting pauses (as asyncio's)."""


class Loop(uvloop.Loop):
    """uvloop's event loop, whose TCP servers on a host and port accept every waiting connection
    at each loop turn.

    libuv accepts one connection per loop turn (libuv PR #3696, 1.45: one `accept4` per
    `epoll_pwait`): during a reconnect storm the listen queue holds as many connections as the
    clients are opening at once, and a new connection, a panel page loading, would wait behind
    all of them. Accepted at once, each connection's requests are read at the next turn, in order
    of arrival with everyone else's.

    A socket handed in, which uvicorn's `--workers` share: each worker also listens on a socket
    of its own in one `SO_REUSEPORT` group with it (`_own_socket_beside`), and accepts from both;
    the kernel spreads new connections over the group's sockets evenly, so at most the shared
    socket's share goes to whichever worker wakes first. (Accepting from the shared socket alone,
    greedily, the first worker to wake would take a whole burst of connections, and with one
    accept per turn a burst splits unevenly too.) Without a socket of
    its own (the kernel refused), and for TLS and anything but plain TCP, uvloop serves as it
    does. Everything else is uvloop's: transports and protocols alike."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        **options: Any,
    ) -> asyncio.AbstractServer:
        plain = ssl is None and not options and (host is None or isinstance(host, str))
        if sock is None and plain:
            sockets = await self._bind(host, port, reuse_port)
            return Listener(self, sockets, protocol_factory, backlog)
        if sock is not None and plain:
            own = _own_socket_beside(sock)
            if own is not None:
                return Listener(self, [own, sock], protocol_factory, backlog)
        uvloop_loop: Any = super()
        return await uvloop_loop.create_server(  # type: ignore[no-any-return]
            protocol_factory,
            host,
            port,
            sock=sock,
            backlog=backlog,
            ssl=ssl,
            reuse_address=reuse_address,
            reuse_port=reuse_port,
            **options,
        )

    async def _bind(
        self, host: str | None, port: int | None, reuse_port: bool | None
    ) -> list[socket.socket]:
        """Listening sockets for every address of `host` (all interfaces for None), as asyncio's
        `create_server` makes them."""
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                listening = _listening_socket(family, kind, proto, reuse_port=bool(reuse_port))
                sockets.append(listening)
                try:
                    listening.bind(address)
                except OSError as exc:
                    message = f"error while attempting to bind on address {address!r}: "
                    raise OSError(exc.errno, message + (exc.strerror or "").lower()) from None
        except BaseException:
            for listening in sockets:
                listening.close()
            raise
        return sockets


def _own_socket_beside(shared: socket.socket) -> socket.socket | None:
    """A listening socket of this process's own on the port of `shared` (which uvicorn's
    `--workers` processes share), both in one `SO_REUSEPORT` group: the kernel spreads new
    connections over the group's sockets by their addresses, evenly, where the workers accepting
    from one shared socket split them as they happened to wake. None if the kernel refuses."""
    if shared.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(
        socket, "SO_REUSEPORT"
    ):
        return None
    own: socket.socket | None = None
    try:
        v6only = shared.family == socket.AF_INET6 and bool(
            shared.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        )
        own = _listening_socket(
            shared.family, socket.SOCK_STREAM, 0, reuse_port=True, v6only=v6only
        )
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(shared.getsockname())
    except OSError as exc:
        log.warning("no listening socket of this process's own (%s): the shared one serves", exc)
        if own is not None:
            own.close()
        return None
    return own


def _listening_socket(
    family: int, kind: int, proto: int, *, reuse_port: bool, v6only: bool = True
) -> socket.socket:
    """A socket to bind and listen on, with the options asyncio's `create_server` sets
    (SO_REUSEADDR; IPV6_V6ONLY for IPv6), and SO_REUSEPORT if asked."""
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    except OSError:
        listening.close()
        raise
    return listening


class Listener(asyncio.AbstractServer):
    """A TCP server of `Loop`: each time a listening socket is readable, up to `ACCEPT_BATCH`
    connections are accepted and handed to uvloop's own transports
    (`loop.connect_accepted_socket`)."""

    def __init__(
        self,
        loop: Loop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sockets = sockets
        self._protocol_factory = protocol_factory
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._fds = [listening.fileno() for listening in sockets]
        for listening in sockets:
            listening.setblocking(False)
            listening.listen(backlog)
        self._serving = False
        self._start()

    def _start(self) -> None:
        if self._sockets and not self._serving:
            self._serving = True
            for fd, listening in zip(self._fds, self._sockets, strict=True):
                self._loop.add_reader(fd, self._accept, listening)

    def _pause(self) -> None:
        if self._serving:
            self._serving = False
            for fd in self._fds:  # by number: a shared socket may have been closed elsewhere
                self._loop.remove_reader(fd)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before it was accepted
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error(
                        "accepting connections paused for %.0f s: %s", ACCEPT_RETRY_SECONDS, exc
                    )
                    self._pause()
                    self._loop.call_later(ACCEPT_RETRY_SECONDS, self._start)
                    return
                raise
            connection.setblocking(False)
            if connection.family in (socket.AF_INET, socket.AF_INET6):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._connect(connection))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, connection)
        except Exception:
            log.exception("could not set up an accepted connection")
            connection.close()

    # --- asyncio.AbstractServer -----------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections are left alone)."""
        self._pause()
        for listening in self._sockets:
            listening.close()
        self._sockets = []
        self._closed.set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    async def start_serving(self) -> None:
        self._start()

    async def serve_forever(self) -> None:
        self._start()
        await self._closed.wait()

    async def wait_closed(self) -> None:
        """Returns at once: connections are closed by their own protocols (uvicorn's shutdown)."""


def new_event_loop() -> Loop:
    """The event loop `python -m app serve` runs (uvicorn's `loop` setting names it)."""
    return Loop()
