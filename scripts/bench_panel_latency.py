"""How long from a reported failure to its "!" in an open Reseller Control Panel?

Starts the real server (`python -m app serve`, SQLite in a temporary folder), opens the reseller's
panel (/panel) in Debian's headless Chromium driven by Playwright, and beside it, as the peer, a
plain graphql-transport-ws subscriber in this process (the `websockets` library) for the same
reseller, subscribed with the panel's own `orderStatusChanged` document (so the server puts both
in one group and sends them the same text at the same moment: the difference is the browser's
side). Then, one order at a time: places an order through the API (and waits until the panel
shows its row), reports `reportProvisioningResult(outcome: FAILED)` as the provisioning platform
over HTTP (httpx), and measures:

- panel: from the moment the mutation's HTTP response has been read to the moment the order's
  `[data-failed-mark]` ("!") is in the page's DOM. The page itself timestamps it: a
  MutationObserver notes `performance.timeOrigin + performance.now()` when the mark appears
  (epoch milliseconds of this machine's clock, the same clock as this process's `time.time()`),
  so Playwright's own polling is not part of the figure. The panel's path: server fan-out ->
  graphql-ws in the page -> the panel's handler -> the row re-rendered.
- peer: from the same moment to the raw subscriber receiving the order's `PF` change.

A figure can be slightly negative: the event can reach a subscriber before the mutation's own
response is read. Prints p50/p99/max of both and the panel/peer ratio of the medians.

    .venv/bin/python scripts/bench_panel_latency.py [--count 50] [--warmup 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (
    CREATE_CUSTOMER,
    CREATE_RESELLER,
    FAIL,
    PLACE,
    make_token,
    migrate,
    sqlite_url,
    start_server,
)

# The browser tests' own launch of Chromium (importing benchlib put the root on sys.path).
from tests.support.browser import launch_chromium

PROTOCOL = Subprotocol("graphql-transport-ws")
OBSERVER = """() => {
  window.__failedAt = {};
  const note = () => {
    for (const mark of document.querySelectorAll('tr[data-order-number] [data-failed-mark]')) {
      const number = mark.closest('tr').dataset.orderNumber;
      if (!(number in window.__failedAt))
        window.__failedAt[number] = performance.timeOrigin + performance.now();
    }
  };
  note();
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true});
}"""


async def gql(http: httpx.AsyncClient, token: str, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: p50 {statistics.median(values):7.1f} ms  p99 {percentile(values, 0.99):7.1f} ms"
        f"  max {max(values):7.1f} ms  ({len(values)} failures)"
    )


class Peer:
    """A raw graphql-transport-ws subscriber: when each order's PF change arrived (epoch ms)."""

    def __init__(self, url: str, token: str, document: str) -> None:
        self.url = url
        self.token = token
        self.document = document
        self.arrived: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with connect(self.url, subprotocols=[PROTOCOL]) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"Authorization": f"Bearer {self.token}"},
                    }
                )
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            payload = {"query": self.document, "variables": {"after": None}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            self.ready.set()
            async for raw in ws:
                at = time.time() * 1000
                message = json.loads(raw)
                if message.get("type") == "next":
                    change = message["payload"]["data"]["orderStatusChanged"]
                    if change["to"] == "PF":
                        self.arrived.setdefault(change["order"]["number"], at)


async def run(count: int, warmup: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="orderpulse-bench-panel-"))
    url = sqlite_url(workdir)
    await migrate(url)
    support = await make_token(url, "SUPPORT")
    system = await make_token(url, "SYSTEM")
    server = start_server(url)
    origin = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=origin, timeout=30) as http:
            from app.graphql.ids import parse_pk

            reseller_id = (await gql(http, support, CREATE_RESELLER))["createReseller"]["reseller"][
                "id"
            ]
            customer_id = (await gql(http, support, CREATE_CUSTOMER, r=reseller_id))[
                "createCustomer"
            ]["customer"]["id"]
            reseller = await make_token(
                url, "RESELLER", reseller_id=parse_pk(reseller_id, "Reseller")
            )

            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright)
                page = await browser.new_page()
                await page.goto(f"{origin}/panel")
                await page.fill("input[name=token]", reseller)
                await page.click("button[name=sign-in]")
                await page.wait_for_selector('[data-connection="live"]')
                await page.evaluate(OBSERVER)
                document = await page.evaluate(
                    "import('/panel/static/api.js').then(api => api.ORDER_CHANGES)"
                )
                peer = Peer(f"ws://127.0.0.1:{server.port}/graphql", reseller, document)
                peer_task = asyncio.create_task(peer.run())
                await asyncio.wait_for(peer.ready.wait(), 10)

                panel_ms: list[float] = []
                peer_ms: list[float] = []
                for i in range(warmup + count):
                    order = (await gql(http, support, PLACE, c=customer_id))["placeOrder"]["order"]
                    number = order["number"]
                    await page.wait_for_selector(f'tr[data-order-number="{number}"]')
                    await gql(http, system, FAIL, o=order["id"])
                    responded = time.time() * 1000
                    await page.wait_for_function(
                        "n => n in window.__failedAt", arg=number, timeout=10_000
                    )
                    marked = await page.evaluate("n => window.__failedAt[n]", number)
                    for _ in range(200):
                        if number in peer.arrived:
                            break
                        await asyncio.sleep(0.01)
                    if i >= warmup:
                        panel_ms.append(marked - responded)
                        peer_ms.append(peer.arrived[number] - responded)
                await browser.close()
            peer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer_task
    finally:
        server.stop()

    print('reported failure (mutation response read) -> the order\'s "!" in an open reseller panel')
    print("server: python -m app serve, SQLite, 1 process; browser: Debian chromium, Playwright;")
    print(
        "orders placed and failures reported one after another over HTTP (httpx), all on 127.0.0.1"
    )
    print(summary('panel ("!" in the DOM)      ', panel_ms))
    print(summary("peer (raw graphql-ws socket)", peer_ms))
    ratio = statistics.median(panel_ms) / max(statistics.median(peer_ms), 0.001)
    print(f"panel/peer ratio of the medians: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.count, args.warmup))


if __name__ == "__main__":
    main()
