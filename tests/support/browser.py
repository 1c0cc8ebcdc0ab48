"""Debian's headless Chromium, launched one way for the browser tests and the panel benchmark.

`ORDERPULSE_CHROMIUM` names another executable. The flags keep the browser from reaching out on
its own (updates, sync, background requests), so a page's only traffic is the one under test.
"""

from __future__ import annotations

import os

from playwright.async_api import Browser, Playwright

CHROMIUM = os.environ.get("ORDERPULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def launch_chromium(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
