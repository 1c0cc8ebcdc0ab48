"""Delivering failed-order mail from the outbox to a real SMTP server (aiosmtpd).

The app's own outbox worker runs in every test (it starts with the app): a failure's mail goes
out at once, woken by the commit. Its poll is set to an hour here, so retries happen only when a
test moves the clock and calls `deliver_due` (or commits something that wakes the worker).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, select

from app.db import Database
from app.events.models import TOPIC_NOTIFICATION, Event
from app.graphql.ids import parse_global_id
from app.notifications.mailer import FileMailer, SmtpMailer, mailer_from_settings
from app.notifications.models import Notification
from app.notifications.outbox import (
    DeliveryReport,
    Outcome,
    claim_due,
    deliver_claim,
    deliver_due,
    describe_mailer,
    renew_lease,
    retry_delay,
)
from app.services import Services
from app.settings import Settings
from tests.notifications.helpers import (
    GatedSmtpServer,
    fail_order,
    failed_in_another_process,
    order_notifications,
)
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.clock import FakeClock
from tests.support.polling import eventually
from tests.support.smtp import SmtpServer, free_port

SUPPORT_EMAIL = "support@distributor.example"
RETRY_SECONDS = 30
MAX_ATTEMPTS = 3

SETTINGS = """mutation($input: UpdateNotificationSettingsInput!) {
    updateNotificationSettings(input: $input) {
    notificationSettings { notifyReseller notifyCustomer orderNotificationTemplate { name } }
    userErrors { field message code } } }"""
RETRY = """mutation($id: ID!) { retryNotification(input: {id: $id}) {
    notification { id status attempts lastError messageId } userErrors { field message code } } }"""


@pytest.fixture
def settings_overrides(smtp_server: SmtpServer) -> dict[str, Any]:
    return {
        "smtp_url": smtp_server.url,
        "outbox_poll_seconds": 3600,
        "delivery_retry_seconds": RETRY_SECONDS,
        "delivery_max_attempts": MAX_ATTEMPTS,
    }


class Desk:
    """A reseller with one customer, and the clients that act on them."""

    def __init__(self, api: GraphQLClient, factory: Factory) -> None:
        self.api = api
        self.factory = factory

    async def setup(self) -> Desk:
        self.reseller = await self.factory.reseller(name="Northwind", email="ops@northwind.example")
        await self.factory.notify(self.reseller)  # the reseller is told of failures too
        self.customer = await self.factory.customer(
            self.reseller, name="Acme", contact_email="it@acme.example"
        )
        self.support = self.api.as_(await self.factory.token("SUPPORT"))
        self.system = self.api.as_(await self.factory.token("SYSTEM"))
        self.reseller_client = self.api.as_(
            await self.factory.token("RESELLER", reseller=self.reseller)
        )
        return self

    @property
    def reseller_id(self) -> str:
        return gid("Reseller", self.reseller)

    @property
    def customer_id(self) -> str:
        return gid("Customer", self.customer)

    async def fail(self, **options: Any) -> dict[str, Any]:
        return await fail_order(self.support, self.system, self.customer_id, **options)

    async def settings(self, **values: Any) -> dict[str, Any]:
        data = await self.reseller_client.data(
            SETTINGS, {"input": {"resellerId": self.reseller_id, **values}}
        )
        payload: dict[str, Any] = data["updateNotificationSettings"]
        assert payload["userErrors"] == [], payload
        return payload

    async def notifications(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        return await order_notifications(self.support, order["id"])

    async def settled(self, order: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """The order's `count` notifications once none is in flight (each attempted or done)."""

        async def check() -> list[dict[str, Any]] | None:
            rows = await self.notifications(order)
            done = all(r["status"] != "PENDING" or r["attempts"] > 0 for r in rows)
            return rows if len(rows) == count and done else None

        return await eventually(check)


@pytest.fixture
async def desk(api: GraphQLClient, factory: Factory) -> Desk:
    return await Desk(api, factory).setup()


def by_recipient(messages: list[EmailMessage]) -> dict[str, EmailMessage]:
    return {str(m["To"]): m for m in messages}


async def notification_events(services: Services) -> list[tuple[int, str]]:
    async with services.db.read() as session:
        rows = await session.exec(
            select(Event.notification_id, Event.delivery_status)
            .where(col(Event.topic) == TOPIC_NOTIFICATION)
            .order_by(col(Event.id))
        )
        return [(int(n or 0), str(s)) for n, s in rows.all()]


async def test_failure_mails_support_and_reseller_at_once(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    order = await desk.fail(details="vendor said no")
    messages = await smtp_server.wait_for(2)
    mail = by_recipient(messages)
    assert set(mail) == {SUPPORT_EMAIL, "ops@northwind.example"}
    rows = {r["email"]: r for r in await desk.settled(order, 2)}
    for address, message in mail.items():
        row = rows[address]
        assert message["From"] == "orderpulse@distributor.example"
        assert message["Message-ID"] == row["messageId"]
        assert message["Subject"] == f"Order {order['number']} failed: Service creation failed"
        assert row["subject"] == message["Subject"]
        assert message.get_content() == row["body"]
        assert "What happened: Service creation failed\n" in row["body"]
        assert "What to do:    Verify whether information on the order is correct\n" in row["body"]
        assert "Details:       vendor said no\n" in row["body"]
        assert "by 2026-11-17T12:00:00+00:00." in row["body"]
        assert row["kind"] == "ORDER_PROVISIONING_FAILED"
        assert (row["status"], row["attempts"], row["lastError"]) == ("SENT", 1, None)
        assert row["createdAt"] == row["sentAt"] == clock.now().isoformat()
    assert {r["recipientRole"] for r in rows.values()} == {"SUPPORT", "RESELLER"}
    # Created (PENDING) in the status-change transaction, then one event per delivery status.
    events = await notification_events(services)
    ids = sorted(int(n) for n in {e[0] for e in events})
    assert events[:2] == [(ids[0], "PENDING"), (ids[1], "PENDING")]
    assert sorted(events[2:]) == [(ids[0], "SENT"), (ids[1], "SENT")]
    assert len(smtp_server.messages) == 2


async def test_recipients_follow_the_settings_and_the_contact_email(
    desk: Desk, smtp_server: SmtpServer
) -> None:
    await desk.settings(notifyReseller=False, notifyCustomer=True)
    first = await desk.fail()
    await smtp_server.wait_for(2)
    assert sorted(r.rcpt_tos for r in smtp_server.received) == [
        ("it@acme.example",),
        (SUPPORT_EMAIL,),
    ]
    assert sorted(r["recipientRole"] for r in await desk.settled(first, 2)) == [
        "CUSTOMER",
        "SUPPORT",
    ]

    changed = await desk.reseller_client.data(
        """mutation($c: ID!) { updateCustomerContact(input: {customerId: $c,
        email: "billing@acme.example"}) { customer { contactEmail } userErrors { code } } }""",
        {"c": desk.customer_id},
    )
    assert changed["updateCustomerContact"]["customer"] == {"contactEmail": "billing@acme.example"}
    second = await desk.fail()
    await smtp_server.wait_for(4)
    assert sorted(r.rcpt_tos for r in smtp_server.received[2:]) == [
        ("billing@acme.example",),
        (SUPPORT_EMAIL,),
    ]
    # The earlier notification keeps the address it was sent to.
    assert sorted(r["email"] for r in await desk.settled(first, 2)) == [
        "it@acme.example",
        SUPPORT_EMAIL,
    ]
    assert sorted(r["email"] for r in await desk.settled(second, 2)) == [
        "billing@acme.example",
        SUPPORT_EMAIL,
    ]

    await desk.settings(notifyCustomer=False)
    third = await desk.fail()
    await smtp_server.wait_for(5)
    assert [r["recipientRole"] for r in await desk.settled(third, 1)] == ["SUPPORT"]
    assert smtp_server.received[4].rcpt_tos == (SUPPORT_EMAIL,)
    assert len(smtp_server.messages) == 5


async def test_the_resellers_chosen_template_is_used(desk: Desk, smtp_server: SmtpServer) -> None:
    created = await desk.support.data(
        """mutation($input: CreateNotificationTemplateInput!) {
        createNotificationTemplate(input: $input) {
        notificationTemplate { id name } userErrors { code } } }""",
        {
            "input": {
                "name": "Short",
                "subject": "[{{ reseller.name }}] {{ order.number }} {{ reason }}",
                "body": "{{ customer.name }}: {{ message }} / {{ remedy }} / {{ details }}"
                " / {{ order.total }} by {{ sla_deadline }}\n",
            }
        },
    )
    template = created["createNotificationTemplate"]["notificationTemplate"]
    chosen = await desk.settings(notifyReseller=False, orderNotificationTemplateId=template["id"])
    assert chosen["notificationSettings"]["orderNotificationTemplate"] == {"name": "Short"}
    order = await desk.fail(reason="NO_IP_ADDRESSES", details="pool empty")
    (message,) = await smtp_server.wait_for(1)
    assert message["Subject"] == f"[Northwind] {order['number']} NO_IP_ADDRESSES"
    assert message.get_content() == (
        "Acme: No IP addresses available for allocation / Add addresses to the pool, then"
        " resubmit / pool empty / 50.00 USD by 2026-11-17T12:00:00+00:00\n"
    )


async def test_a_4xx_reply_is_retried_with_backoff_until_it_goes_through(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(2, "451 4.3.0 try again later")
    mailer = mailer_from_settings(services.settings)
    order = await desk.fail()
    (row,) = await desk.settled(order, 1)  # the worker's first attempt, at once
    assert (row["status"], row["attempts"]) == ("PENDING", 1)
    assert row["lastError"] == "server replied 451 4.3.0 try again later"
    failed_at = clock.now()

    # Not due yet: nothing is sent.
    clock.advance(seconds=RETRY_SECONDS - 1)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport()
    # The first retry after ORDERPULSE_DELIVERY_RETRY_SECONDS fails again...
    clock.advance(seconds=1)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport(retrying=1)
    async with services.db.read() as session:
        stored = await session.get(Notification, int(_pk(row["id"])))
        assert stored is not None
        assert stored.attempts == 2
        # ...and the next waits twice as long.
        assert stored.next_attempt_at == failed_at + timedelta(seconds=3 * RETRY_SECONDS)
        assert stored.lease_until is None
    clock.advance(seconds=2 * RETRY_SECONDS - 1)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport()
    assert smtp_server.messages == []
    clock.advance(seconds=1)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport(sent=1)

    (message,) = smtp_server.messages
    (row,) = await desk.notifications(order)
    assert message["Message-ID"] == row["messageId"]
    assert (row["status"], row["attempts"]) == ("SENT", 3)
    assert row["lastError"] == "server replied 451 4.3.0 try again later"
    assert row["sentAt"] == clock.now().isoformat()
    assert await deliver_due(services.outbox, mailer) == DeliveryReport()
    assert len(smtp_server.messages) == 1


async def test_a_refused_connection_is_retried(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "421 4.7.0 too busy")
    order = await desk.fail()
    (row,) = await desk.settled(order, 1)
    assert (row["status"], row["attempts"]) == ("PENDING", 1)

    clock.advance(seconds=RETRY_SECONDS)
    nobody_listens = SmtpMailer(f"smtp://127.0.0.1:{free_port()}", timeout=2)
    assert await deliver_due(services.outbox, nobody_listens) == DeliveryReport(retrying=1)
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("PENDING", 2)
    assert row["lastError"].startswith(("cannot reach the mail server", "mail server error"))

    clock.advance(seconds=2 * RETRY_SECONDS)
    assert await deliver_due(services.outbox, SmtpMailer(smtp_server.url)) == DeliveryReport(sent=1)
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("SENT", 3)
    assert [m["Message-ID"] for m in smtp_server.messages] == [row["messageId"]]


async def test_a_5xx_reply_fails_and_support_can_retry_with_the_same_message_id(
    desk: Desk, smtp_server: SmtpServer, services: Services
) -> None:
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "550 5.1.1 no such user", stage="RCPT")
    order = await desk.fail()
    (row,) = await desk.settled(order, 1)
    assert (row["status"], row["attempts"]) == ("FAILED", 1)
    assert "550 5.1.1 no such user" in row["lastError"]
    assert smtp_server.messages == []

    # Only support may retry; a reseller gets a top-level FORBIDDEN and nothing changes.
    refused = await desk.reseller_client.post(RETRY, {"id": row["id"]})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    retried = await desk.support.data(RETRY, {"id": row["id"]})
    notification = retried["retryNotification"]["notification"]
    assert retried["retryNotification"]["userErrors"] == []
    assert (notification["status"], notification["attempts"]) == ("PENDING", 0)
    (message,) = await smtp_server.wait_for(1)  # the commit woke the worker
    assert message["Message-ID"] == row["messageId"]
    (sent,) = await desk.settled(order, 1)
    assert (sent["status"], sent["attempts"], sent["messageId"]) == ("SENT", 1, row["messageId"])

    again = await desk.support.data(RETRY, {"id": row["id"]})
    assert again["retryNotification"]["notification"] is None
    assert [e["code"] for e in again["retryNotification"]["userErrors"]] == ["BAD_USER_INPUT"]
    nid = _pk(row["id"])
    assert [s for n, s in await notification_events(services) if n == nid] == [
        "PENDING",
        "FAILED",
        "PENDING",
        "SENT",
    ]
    assert len(smtp_server.messages) == 1


async def test_out_of_attempts_is_failed(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(MAX_ATTEMPTS, "452 4.3.1 insufficient storage")
    mailer = mailer_from_settings(services.settings)
    order = await desk.fail()
    await desk.settled(order, 1)
    clock.advance(seconds=RETRY_SECONDS)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport(retrying=1)
    clock.advance(seconds=2 * RETRY_SECONDS)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport(failed=1)
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("FAILED", MAX_ATTEMPTS)
    assert row["lastError"] == "server replied 452 4.3.1 insufficient storage"
    clock.advance(days=1)
    assert await deliver_due(services.outbox, mailer) == DeliveryReport()
    assert smtp_server.messages == []


async def test_a_worker_that_lost_its_lease_records_nothing(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    """A worker too slow to record its result (its lease ran out and another worker took the
    row over) must not overwrite the other's work; the mail goes twice, with one Message-ID."""
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "451 4.3.0 later")
    order = await desk.fail()
    await desk.settled(order, 1)
    clock.advance(seconds=RETRY_SECONDS)
    mailer = mailer_from_settings(services.settings)
    (slow,) = await claim_due(services.outbox, limit=10)
    assert await claim_due(services.outbox, limit=10) == []  # leased: nobody else gets it
    clock.advance(seconds=services.settings.delivery_lease_seconds)
    (fast,) = await claim_due(services.outbox, limit=10)
    assert (fast.id, fast.mail.message_id) == (slow.id, slow.mail.message_id)
    assert fast.lease_until > slow.lease_until
    # The slow worker finishes first, but the row is no longer its to change.
    assert await deliver_claim(services.outbox, mailer, slow) is Outcome.LEASE_LOST
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("PENDING", 1)
    assert await deliver_claim(services.outbox, mailer, fast) is Outcome.SENT
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("SENT", 2)
    assert [m["Message-ID"] for m in smtp_server.messages] == [row["messageId"]] * 2


async def test_a_renewed_lease_keeps_other_workers_off_until_it_runs_out(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    """A worker renews its lease while it sends; once it stops (it died), the row is taken over
    one lease time after the last renewal, and the old lease can no longer be renewed."""
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "451 4.3.0 later")
    order = await desk.fail()
    await desk.settled(order, 1)
    clock.advance(seconds=RETRY_SECONDS)
    outbox = services.outbox
    lease = timedelta(seconds=outbox.policy.lease_seconds)
    assert outbox.policy.renew_every_seconds == outbox.policy.lease_seconds / 3
    (mine,) = await claim_due(outbox, limit=10)
    first_lease = mine.lease_until
    clock.advance(seconds=lease.total_seconds() * 2 / 3)
    assert await renew_lease(outbox, mine)
    assert mine.lease_until == clock.now() + lease > first_lease
    clock.advance(seconds=lease.total_seconds() * 2 / 3)  # past the first lease, not the renewed
    assert clock.now() > first_lease
    assert await claim_due(outbox, limit=10) == []
    clock.advance(seconds=lease.total_seconds())  # no renewal for a whole lease: presumed dead
    (theirs,) = await claim_due(outbox, limit=10)
    assert (theirs.id, theirs.mail.message_id) == (mine.id, mine.mail.message_id)
    assert not await renew_lease(outbox, mine)
    assert await deliver_claim(outbox, mailer_from_settings(services.settings), theirs) is (
        Outcome.SENT
    )
    (row,) = await desk.notifications(order)
    assert (row["status"], row["attempts"]) == ("SENT", 2)


class TestPoll:
    @pytest.fixture
    def settings_overrides(self, smtp_server: SmtpServer) -> dict[str, Any]:
        return {"smtp_url": smtp_server.url, "outbox_poll_seconds": 0.05}

    async def test_rows_written_by_another_process_are_sent_by_the_poll(
        self, settings: Settings, smtp_server: SmtpServer, services: Services, clock: FakeClock
    ) -> None:
        """The worker also finds PENDING rows whose commit did not wake it (another process's,
        or ones left behind by a process that died before claiming them)."""
        other = Services(settings=settings, db=Database(settings.database_url), clock=clock)
        try:
            rows = await failed_in_another_process(other)
            assert [r.status for r in rows] == ["PENDING", "PENDING"]
            assert not services.outbox_wake.is_set()
            messages = await smtp_server.wait_for(2)
            assert sorted(m["Message-ID"] for m in messages) == sorted(r.message_id for r in rows)
            await eventually(lambda: _all_sent(services))
        finally:
            await other.db.dispose()


class TestConcurrency:
    @pytest.fixture
    def gated(self) -> Any:
        with GatedSmtpServer() as server:
            yield server

    @pytest.fixture
    def settings_overrides(self, gated: GatedSmtpServer) -> dict[str, Any]:
        return {"smtp_url": gated.url, "outbox_poll_seconds": 3600}

    async def test_at_most_eight_mails_are_in_flight(
        self, desk: Desk, gated: GatedSmtpServer, services: Services
    ) -> None:
        await desk.settings(notifyReseller=False)
        gated.gate.clear()
        for _ in range(12):
            await desk.fail()
        await gated.wait_until(arrived=8)
        await asyncio.sleep(0.3)  # time enough for a ninth, were there no bound
        assert (len(gated.arrived), gated.held) == (8, 8)
        gated.gate.set()
        _arrived, accepted = await gated.wait_until(accepted=12)
        assert gated.most_held == 8
        assert len({a.message["Message-ID"] for a in accepted}) == 12
        await eventually(lambda: _all_sent(services))
        async with services.db.read() as session:
            assert len((await session.exec(select(Notification.id))).all()) == 12


async def _all_sent(services: Services) -> bool:
    async with services.db.read() as session:
        statuses = (await session.exec(select(Notification.status))).all()
    return set(statuses) == {"SENT"}


class TestWithoutSmtp:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {}

    async def test_mail_is_written_as_eml_files(
        self, desk: Desk, settings: Settings, services: Services
    ) -> None:
        assert settings.smtp_url is None
        folder = Path(settings.mail_dir)
        assert describe_mailer(mailer_from_settings(settings)) == (
            f"no ORDERPULSE_SMTP_URL set: writing mail as .eml files to {folder.resolve()}"
        )
        order = await desk.fail()
        rows = await desk.settled(order, 2)
        assert {r["status"] for r in rows} == {"SENT"}
        files = sorted(folder.glob("*.eml"))
        assert len(files) == 2
        parsed = [
            email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files
        ]
        assert sorted(str(m["Message-ID"]) for m in parsed) == sorted(r["messageId"] for r in rows)
        assert {str(m["To"]) for m in parsed} == {SUPPORT_EMAIL, "ops@northwind.example"}


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(retry_seconds=30, attempts=n).total_seconds() for n in (1, 2, 3, 4)] == [
        30,
        60,
        120,
        240,
    ]
    assert retry_delay(retry_seconds=30, attempts=60) == timedelta(hours=6)


def _pk(global_id: str) -> int:
    parsed = parse_global_id(global_id, "Notification")
    assert parsed is not None
    return parsed[1]


@asynccontextmanager
async def every_statement(services: Services) -> AsyncIterator[list[str]]:
    """Every statement PostgreSQL is asked to run meanwhile, BEGIN and COMMIT included: what
    SQLAlchemy executes (asyncpg runs it prepared, unlogged) and what asyncpg is asked to run
    itself (transaction control, `app.db.CompiledStatement`s), filled in at the end."""
    statements: list[str] = []
    executed: list[str] = []
    sent: list[str] = []

    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        executed.append(text)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        record.driver_connection.add_query_logger(lambda query: sent.append(query.query))

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "checkout", checkout)
    try:
        yield statements
        for _ in range(3):  # asyncpg calls its query loggers with `call_soon`, after the query
            await asyncio.sleep(0)
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "checkout", checkout)
    statements += executed + sent


async def test_on_postgresql_a_claim_is_one_statement_with_no_transaction_round_trips(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock
) -> None:
    """The claim's UPDATE ... RETURNING commits by itself: what the server is sent is that one
    statement, with no BEGIN and COMMIT around it."""
    if services.db.is_sqlite:
        pytest.skip("SQLite claims under its write lock, in a transaction (no round trips)")
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "451 4.3.0 later")
    order = await desk.fail()
    await desk.settled(order, 1)
    clock.advance(seconds=RETRY_SECONDS)
    async with every_statement(services) as statements:
        (claim,) = await claim_due(services.outbox, limit=10)
    assert len(statements) == 1, statements  # no BEGIN, no COMMIT
    assert statements[0].startswith("UPDATE notification SET lease_until")
    assert claim.attempts == 1


async def test_on_postgresql_a_sent_mail_is_recorded_with_its_event_in_one_statement(
    desk: Desk, smtp_server: SmtpServer, services: Services, clock: FakeClock, tmp_path: Path
) -> None:
    """The outcome's UPDATE and its event are one self-committing statement: no BEGIN and
    COMMIT, no second statement; the row is SENT and its event written."""
    if services.db.is_sqlite:
        pytest.skip("SQLite records outcomes under its write lock, in a transaction")
    await desk.settings(notifyReseller=False)
    smtp_server.fail_next(1, "451 4.3.0 later")
    order = await desk.fail()
    await desk.settled(order, 1)
    clock.advance(seconds=RETRY_SECONDS)
    (claim,) = await claim_due(services.outbox, limit=10)
    async with every_statement(services) as statements:
        outcome = await deliver_claim(services.outbox, FileMailer(tmp_path), claim)
    assert outcome is Outcome.SENT
    assert len(statements) == 1, statements  # no BEGIN, no COMMIT, no second statement
    assert " ".join(statements[0].split()).startswith("WITH changed AS (UPDATE notification SET")
    assert "INSERT INTO event" in statements[0]
    async with services.db.read() as session:
        row = await session.get(Notification, claim.id)
        events = (
            await session.exec(
                select(Event).where(col(Event.notification_id) == claim.id).order_by(col(Event.id))
            )
        ).all()
    assert row is not None and (row.status, row.attempts) == ("SENT", 2)
    assert [e.delivery_status for e in events] == ["PENDING", "SENT"]
