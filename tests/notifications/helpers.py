"""Helpers for the notification tests: a failing order through the API, polling, a gated SMTP server.

`GatedSmtpServer` is a real aiosmtpd server whose DATA reply can be held back: while the gate is
closed a message has `arrived` but is not answered yet, so a test can see a delivery in the middle
of its SMTP transaction (and kill the sender there). A message is `accepted` once answered 250.
If the client disconnects while held, aiosmtpd cancels the handler and the message never counts
as accepted, as with a real mail server.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import col, select

from app.notifications.models import Notification
from app.services import Services
from tests.support.api import Factory, GraphQLClient
from tests.support.polling import eventually
from tests.support.smtp import ControlledSmtpServer, parse_data

T = TypeVar("T")

NOTIFICATION_FIELDS = """id kind recipientRole email subject body status attempts lastError
    messageId createdAt sentAt order { id number }"""

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id number status } userErrors { field message code } } }"""
REPORT = """mutation($input: ReportProvisioningResultInput!) {
    reportProvisioningResult(input: $input) {
    order { id number status failure { reason message remedy failedAt slaDeadline escalatedAt } }
    userErrors { field message code } } }"""
ORDER_NOTIFICATIONS = (
    """query($id: ID!) { order(id: $id) { notifications { %s } } }""" % NOTIFICATION_FIELDS
)


async def outbox_idle(services: Services) -> None:
    """Wait until no notification is being sent (each PENDING one attempted, none leased)."""

    async def check() -> bool:
        async with services.db.read() as session:
            busy = await session.exec(
                select(Notification.id).where(
                    col(Notification.status) == "PENDING",
                    (col(Notification.attempts) == 0) | col(Notification.lease_until).is_not(None),
                )
            )
            return busy.first() is None

    await eventually(check)


async def failed_in_another_process(services: Services) -> list[Notification]:
    """Fail an order through `services` (standing for another process) for a reseller that has
    its own mail enabled (support and reseller: two rows); its notification rows."""
    rows = Factory(services)
    reseller = await rows.reseller()
    await rows.notify(reseller)
    order = await rows.order(await rows.customer(reseller), status="PF")
    async with services.db.read() as session:
        query = select(Notification).where(col(Notification.order_id) == order.id)
        return list((await session.exec(query)).all())


async def fail_order(
    support: GraphQLClient,
    system: GraphQLClient,
    customer_id: str,
    *,
    reason: str = "SERVICE_CREATION_FAILED",
    details: str | None = None,
) -> dict[str, Any]:
    """Place an order for the customer and have the platform report it FAILED; the order."""
    placed = await support.data(
        PLACE,
        {
            "input": {
                "customerId": customer_id,
                "items": [{"description": "Cloud seat", "quantity": 2, "unitPrice": "25.00"}],
            }
        },
    )
    order = placed["placeOrder"]["order"]
    assert order["status"] == "PR", placed
    reported = await system.data(
        REPORT,
        {
            "input": {
                "orderId": order["id"],
                "outcome": "FAILED",
                "reason": reason,
                "details": details,
            }
        },
    )
    payload = reported["reportProvisioningResult"]
    assert payload["userErrors"] == [], payload
    assert payload["order"]["status"] == "PF"
    result: dict[str, Any] = payload["order"]
    return result


async def order_notifications(client: GraphQLClient, order_id: str) -> list[dict[str, Any]]:
    data = await client.data(ORDER_NOTIFICATIONS, {"id": order_id})
    result: list[dict[str, Any]] = data["order"]["notifications"]
    return result


@dataclass(frozen=True)
class Arrival:
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class _GatedHandler:
    def __init__(self, server: GatedSmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrival = Arrival(rcpt_tos=tuple(envelope.rcpt_tos), message=parse_data(envelope))
        owner = self.server
        with owner.lock:
            owner.arrived.append(arrival)
            owner.held += 1
            owner.most_held = max(owner.most_held, owner.held)
        try:
            while not owner.gate.is_set():  # cancelled if the client goes away meanwhile
                await asyncio.sleep(0.005)
        finally:
            with owner.lock:
                owner.held -= 1
        with owner.lock:
            owner.accepted.append(arrival)
        return "250 Message accepted for delivery"


class GatedSmtpServer(ControlledSmtpServer):
    """An aiosmtpd server on 127.0.0.1 whose DATA replies wait while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.arrived: list[Arrival] = []
        self.accepted: list[Arrival] = []
        self.held = 0
        self.most_held = 0

    def handler(self) -> object:
        return _GatedHandler(self)

    def stop(self) -> None:
        self.gate.set()
        super().stop()

    def snapshot(self) -> tuple[list[Arrival], list[Arrival]]:
        """(arrived, accepted), oldest first."""
        with self.lock:
            return list(self.arrived), list(self.accepted)

    async def wait_until(
        self, *, arrived: int | None = None, accepted: int | None = None, timeout: float = 5.0
    ) -> tuple[list[Arrival], list[Arrival]]:
        async def check() -> tuple[list[Arrival], list[Arrival]] | None:
            now_arrived, now_accepted = self.snapshot()
            if arrived is not None and len(now_arrived) < arrived:
                return None
            if accepted is not None and len(now_accepted) < accepted:
                return None
            return now_arrived, now_accepted

        return await eventually(check, timeout=timeout)
