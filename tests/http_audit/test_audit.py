"""GraphQL over HTTP: the `graphql-http` server audit (npm, pinned in this folder's lock file) run
against a real uvicorn server. No MUST and no SHOULD may fail; the counts are printed."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.support.server import LiveServer

HERE = Path(__file__).parent


def level(name: str) -> str:
    return name.split(" ", 1)[0]  # MUST, SHOULD or MAY


async def test_the_graphql_http_audit_finds_no_must_or_should_failure(
    live_server: LiveServer,
) -> None:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "graphql-http").is_dir():
        pytest.fail("node and `npm ci` in tests/http_audit are needed (scripts/test runs it)")
    process = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "audit.mjs"),
        live_server.http_url,
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    results = json.loads(stdout)
    counts = Counter((level(r["name"]), r["status"] == "ok") for r in results)
    print(
        "graphql-http audit:",
        ", ".join(
            f"{lvl} {counts[(lvl, True)]} passed / {counts[(lvl, False)]} failed"
            for lvl in ("MUST", "SHOULD", "MAY")
        ),
    )
    failures = [r for r in results if r["status"] != "ok" and level(r["name"]) != "MAY"]
    assert failures == []
    assert counts[("MUST", True)] > 0 and counts[("SHOULD", True)] > 0
