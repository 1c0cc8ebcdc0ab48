"""Request ids and log lines: X-Request-ID on every HTTP response (the client's when sane), and
`ORDERPULSE_LOG_FORMAT=json` makes every line a real server writes one JSON object."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from app.kernel.log_batching import LOG_WRITE_BYTES, LoopBatchedStreamHandler
from app.observability.logs import write_at_once
from tests.support.api import GraphQLClient
from tests.support.processes import ServerProcess, server_env

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize("path", ["/graphql", "/healthz", "/readyz", "/metrics", "/nowhere"])
async def test_every_response_carries_a_request_id(api: GraphQLClient, path: str) -> None:
    response = await api.http.post(path, json={"query": "{ viewer { role } }"})
    assert GENERATED.match(response.headers["x-request-id"]), response.headers
    again = await api.http.post(path, json={"query": "{ viewer { role } }"})
    assert again.headers["x-request-id"] != response.headers["x-request-id"]


async def test_the_clients_request_id_is_echoed_when_sane(api: GraphQLClient) -> None:
    for sane in ("abc-123", "0f7c2a1e-5b7d-4c55-9d0e-2f4b0f6f3a10", "trace:01/span=7"):
        response = await api.http.get("/healthz", headers={"X-Request-ID": sane})
        assert response.headers["x-request-id"] == sane
    for insane in ("x" * 129, "two words", 'quote"d', "new\tline", "é"):
        response = await api.http.get(
            "/healthz", headers=[("X-Request-ID", insane.encode("utf-8"))]
        )
        assert GENERATED.match(response.headers["x-request-id"]), insane


async def test_json_logs_of_a_real_server(tmp_path: Path) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'logs.db'}", log_format="json")
    server = ServerProcess.launch(env, log_dir=tmp_path, name="json")
    try:
        await server.wait_ready()
        async with httpx.AsyncClient(base_url=server.endpoint.origin, timeout=10) as http:
            response = await http.post(
                "/graphql",
                json={"query": "{ viewer { role } }"},
                headers={"X-Request-ID": "req-json-42"},
            )
            assert response.headers["x-request-id"] == "req-json-42"
    finally:
        server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    # the CLI prints its addresses (GraphiQL, the panels) on stdout; the rest are logs
    printed = re.compile(r"^[A-Za-z ]+: http://127\.0\.0\.1:\d+/\w+$")
    logs = [line for line in lines if not printed.match(line)]
    assert len(logs) >= 3, lines
    records = [json.loads(line) for line in logs]
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= record.keys(), record
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", record["time"])
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert [r["request_id"] for r in access if "POST /graphql" in r["message"]] == ["req-json-42"]


class RecordingStream:
    """A stream that keeps each write separately."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def batched_logger(stream: RecordingStream, delay: float = 0.0) -> logging.Logger:
    handler = LoopBatchedStreamHandler(stream, delay)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.batched.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_info_lines_of_one_loop_turn_are_written_together_in_order() -> None:
    stream = RecordingStream()
    log = batched_logger(stream)
    log.info("one")
    log.info("two")
    assert stream.writes == []  # until the end of this turn
    await asyncio.sleep(0)
    log.info("three")
    log.warning("four")  # at once, after what is waiting
    log.info("five")
    await asyncio.sleep(0)
    assert stream.writes == [
        "INFO one\nINFO two\n",
        "INFO three\n",
        "WARNING four\n",
        "INFO five\n",
    ]


def test_lines_logged_outside_an_event_loop_are_written_at_once() -> None:
    stream = RecordingStream()
    log = batched_logger(stream)
    log.info("one")
    log.info("two")
    assert stream.writes == ["INFO one\n", "INFO two\n"]


async def test_a_line_waiting_when_the_handler_is_flushed_is_written() -> None:
    stream = RecordingStream()
    log = batched_logger(stream)
    log.info("one")
    for handler in log.handlers:
        handler.flush()  # as logging.shutdown() does at exit
    assert stream.writes == ["INFO one\n"]


async def test_waiting_lines_are_written_at_once_when_they_reach_the_size_limit() -> None:
    stream = RecordingStream()
    log = batched_logger(stream, delay=3600.0)
    line = "x" * 1000
    count = LOG_WRITE_BYTES // len("INFO \n" + line) + 1
    for _ in range(count):
        log.info(line)
    assert stream.writes == ["".join(f"INFO {line}\n" for _ in range(count))]
    log.info("after")
    assert len(stream.writes) == 1  # waits for the delay again
    log.error("boom")
    assert stream.writes[1:] == ["INFO after\n", "ERROR boom\n"]


async def test_from_shutdown_on_every_line_is_written_when_logged() -> None:
    """uvicorn ends the process right after its last lines: none may wait for a loop turn."""
    stream = RecordingStream()
    handler = LoopBatchedStreamHandler(stream, 0.0)
    root = logging.getLogger()
    log = logging.getLogger("test.shutdown")
    log.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        log.info("waiting")
        write_at_once()
        log.info("last")
    finally:
        root.removeHandler(handler)
    assert stream.writes == ["waiting\n", "last\n"]
