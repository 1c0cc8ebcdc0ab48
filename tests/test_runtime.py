"""The served process tunes its garbage collector once started (app/runtime.py); tests and other
embedders of `create_app` keep Python's defaults. Run in a child process: the settings are
process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.runtime import OLDER_THRESHOLDS, YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent
STARTED = """
import asyncio, gc, json
from app.asgi import {factory}

async def main():
    app = {factory}()
    before = (gc.get_threshold(), gc.get_freeze_count())
    async with app.router.lifespan_context(app):
        after = (gc.get_threshold(), gc.get_freeze_count())
    print(json.dumps([before, after]))

asyncio.run(main())
"""


def started(database_url: str, factory: str) -> list[list[object]]:
    env = {
        **os.environ,
        "ORDERPULSE_DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", STARTED.format(factory=factory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: list[list[object]] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_the_served_app_freezes_start_up_and_collects_the_young_less_often(
    database_url: str,
) -> None:
    (defaults, frozen_before), (tuned, frozen_after) = started(database_url, "serve_app")
    assert defaults == [700, 10, 10]
    assert tuned == [YOUNG_THRESHOLD, *OLDER_THRESHOLDS]
    assert frozen_before == 0
    assert isinstance(frozen_after, int) and frozen_after > 50_000


def test_an_app_made_with_create_app_leaves_the_collector_alone(database_url: str) -> None:
    (defaults, frozen_before), (after, frozen_after) = started(database_url, "create_app")
    assert after == defaults == [700, 10, 10]
    assert frozen_after == frozen_before == 0
