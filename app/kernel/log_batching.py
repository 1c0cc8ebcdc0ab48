"""Log lines written in batches (`LoopBatchedStreamHandler`): the INFO lines logged on the event
loop's thread are written together, at most `LOG_WRITE_DELAY_SECONDS` after the first of them: a
reconnect storm logs a line per websocket, and one write per line is a system call each, where a
busy machine takes the processor away (docs/KERNEL.md has its share of a storm). Lines keep
their order; a WARNING or worse, anything logged outside the event loop's thread, and
`LOG_WRITE_BYTES` of waiting lines are written at once (after whatever is waiting). From the
app's shutdown on (`write_at_once`), every line is: uvicorn logs its last lines and then re-raises
SIGTERM, which ends the process with no further turn of the loop and no exit handlers.

It is a `logging.StreamHandler` of the standard library's, with its public hooks (`emit`, `flush`,
the handler's `lock`), here with the server's other runtime tuning; `app.observability.logs` puts
it in the logging configuration of the CLI and of uvicorn's workers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

LOG_WRITE_DELAY_SECONDS = 0.05
"""How long an INFO line logged on the event loop may wait to be written with the next ones."""
LOG_WRITE_BYTES = 64 * 1024
"""Waiting lines are written at once when they reach this size."""


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose INFO and DEBUG lines logged on an event loop's thread are written
    together, `delay` seconds after the first (0: at the end of the loop's turn); others at once."""

    def __init__(self, stream: Any = None, delay: float = LOG_WRITE_DELAY_SECONDS) -> None:
        super().__init__(stream)
        self.delay = delay
        self.batching = True
        """False from `write_at_once` on: every line is written when logged."""
        self._waiting: list[str] = []
        self._waiting_size = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop that will write `_waiting`."""

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self.batching or record.levelno >= logging.WARNING:
            self._write_waiting()
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        self._waiting_size += len(line)
        if self._waiting_size >= LOG_WRITE_BYTES:
            self._write_waiting()
        elif self._loop is not loop:  # the first line waiting (or the first on a new loop)
            self._loop = loop
            if self.delay > 0:
                loop.call_later(self.delay, self._write_turn)
            else:
                loop.call_soon(self._write_turn)

    def _write_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._loop = None
            self._write_waiting()

    def _write_waiting(self) -> None:
        if not self._waiting:
            return
        text, self._waiting, self._waiting_size = "".join(self._waiting), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))

    def write_at_once(self) -> None:
        """From now on, write every line when it is logged (after what is waiting)."""
        with self.lock:  # type: ignore[union-attr]
            self.batching = False
            self._write_waiting()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
        super().flush()
