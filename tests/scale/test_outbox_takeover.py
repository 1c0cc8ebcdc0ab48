"""A server dies while sending mail; another server on the same PostgreSQL database sends it.

Real processes, a real SMTP server that holds the DATA reply, SIGKILL, and the default lease
(renewed while sending): the survivor takes the notifications over within 30 s of the crash and
sends them once each, with the Message-IDs of the interrupted attempts.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from sqlmodel import col, select

from app.notifications.models import Notification
from app.services import Services
from tests.notifications.helpers import GatedSmtpServer, eventually
from tests.scale.conftest import Launch
from tests.support.api import Factory

pytestmark = pytest.mark.postgres


@pytest.fixture
def gated() -> Iterator[GatedSmtpServer]:
    with GatedSmtpServer() as server:
        yield server


async def test_a_survivor_sends_a_dead_servers_mail_within_30_seconds(
    scale_database_url: str,
    launch: Launch,
    direct: Services,
    rows: Factory,
    gated: GatedSmtpServer,
) -> None:
    gated.gate.clear()
    # Both run before the failure is committed (here, so neither is woken by its own commit):
    # the sender polls the outbox often and claims first; the survivor looks every 5 s, and
    # also when the sender's lease is due to run out.
    (sender,) = await launch(
        scale_database_url, count=1, smtp_url=gated.url, outbox_poll_seconds="0.1"
    )
    (survivor,) = await launch(
        scale_database_url, count=1, smtp_url=gated.url, outbox_poll_seconds="5"
    )
    order = await rows.order(status="PF")
    async with direct.db.read() as session:
        pending = (
            await session.exec(select(Notification).where(col(Notification.order_id) == order.id))
        ).all()
    expected = sorted(n.message_id for n in pending)
    arrived, _ = await gated.wait_until(arrived=len(expected), timeout=20)
    assert sorted(str(a.message["Message-ID"]) for a in arrived) == expected

    # Killed in the middle of the SMTP transactions (before its client's 10 s timeout).
    sender.process.send_signal(signal.SIGKILL)
    sender.process.wait(timeout=10)
    crashed_at = time.monotonic()

    async def nothing_held() -> bool:
        with gated.lock:
            return gated.held == 0

    await eventually(nothing_held)
    gated.gate.set()
    assert gated.snapshot()[1] == []  # the dead server's attempts were never accepted
    _, accepted = await gated.wait_until(accepted=len(expected), timeout=30)
    delivered_after = time.monotonic() - crashed_at
    assert sorted(str(a.message["Message-ID"]) for a in accepted) == expected
    assert delivered_after < 30, delivered_after

    async def all_sent() -> list[tuple[str, int]] | None:
        async with direct.db.read() as session:
            found = (
                await session.exec(
                    select(Notification).where(col(Notification.order_id) == order.id)
                )
            ).all()
        states = sorted((n.status, n.attempts) for n in found)
        return states if {s for s, _ in states} == {"SENT"} else None

    assert await eventually(all_sent, timeout=10) == [("SENT", 1)] * len(expected)
    assert survivor.process.poll() is None
