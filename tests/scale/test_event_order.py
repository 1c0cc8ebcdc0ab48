"""The event log on PostgreSQL without a global lock: concurrent writers, readers that never skip.

Writers take ids from the sequence in any order relative to their commits. A reader that simply
read `id > position` would pass an id whose transaction commits later; these tests build that
situation on a real PostgreSQL and show that the fan-out and the replay hold back until it is
settled, and that under many concurrent writers (some rolling back) every reader gets every
committed event once, in id order, and a replay from any cursor gives exactly the rest.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import pytest
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.viewer import Viewer
from app.events.bus import EventBus
from app.events.fanout import Batch, EventFilter, Fanout
from app.events.log import event_params, notification_event, readable_horizon, record_event
from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.graphql.ids import to_cursor
from app.notifications.models import Notification
from app.notifications.outbox import (
    claim_due,
    status_change_event,
    status_change_params,
    status_change_statement,
)
from app.orders.flow import Action, FailureReason, ProvisioningOutcome, Role
from app.orders.models import SalesOrder
from app.orders.service import perform_order_action, report_provisioning_result
from app.orders.store import OrderUnit
from app.services import Services
from tests.scale.test_multiprocess import STATUS_CHANGES, fail_orders, last_cursor
from tests.support.api import Factory, gid
from tests.support.events import record_note
from tests.support.processes import ServerProcess, subscription

pytestmark = pytest.mark.postgres

SUPPORT = Viewer(role=Role.SUPPORT)
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Recorder:
    """An audience that records what it is handed."""

    event_filter: EventFilter = field(
        default_factory=lambda: EventFilter(viewer=SUPPORT, topic=TOPIC_ORDER_STATUS)
    )
    ids: list[int] = field(default_factory=list)

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        self.ids.extend(e.id or 0 for e in events)


def manual_fanout(services: Services) -> Fanout:
    return Fanout(db=services.db, bus=EventBus(), queue_size=10_000, replay_page_size=7)


class Watched(NamedTuple):
    """An order, and a fanout read by hand from the end of the log with one `Recorder`."""

    order: SalesOrder
    fanout: Fanout
    start: int
    audience: Recorder


@pytest.fixture
async def watched(direct: Services, rows: Factory) -> Watched:
    order = await rows.order(status="PR")
    fanout = manual_fanout(direct)
    await fanout.seek_end()
    audience = Recorder()
    fanout.add(audience)
    return Watched(order, fanout, fanout.position, audience)


async def write_event(session: AsyncSession, order: SalesOrder, note: str) -> int:
    event = await record_note(session, order, action="TEST", actor=note, at=AT)
    assert event.id is not None
    return event.id


async def committed_ids_after(services: Services, after: int) -> list[int]:
    async with services.db.read() as session:
        query = select(col(Event.id)).where(col(Event.id) > after).order_by(col(Event.id))
        return [i for i in (await session.exec(query)).all() if i is not None]


async def replayed(fanout: Fanout, after: int) -> list[int]:
    event_filter = EventFilter(viewer=SUPPORT, topic=TOPIC_ORDER_STATUS)
    return [
        e.id or 0
        async for batch in fanout.replay(event_filter, after_id=after)
        for e in batch.events
    ]


async def test_an_event_committed_before_a_smaller_id_is_held_back_until_that_id_settles(
    direct: Services, watched: Watched
) -> None:
    order, fanout, start, audience = watched

    async with direct.db.sessions() as slow, slow.begin():
        early = await write_event(slow, order, "slow writer")  # drawn first, still open
        async with direct.transaction() as fast:
            late = await write_event(fast, order, "fast writer")
        assert early < late
        # The hazard: the log as a plain read sees the later id and not the earlier one, so a
        # reader that took `id > position` would hand out `late` and pass `early` for good.
        assert await committed_ids_after(direct, start) == [late]

        await fanout.catch_up()
        assert audience.ids == []
        assert fanout.position == start
        assert await replayed(fanout, start) == []
        async with direct.db.read() as session:
            assert await readable_horizon(session) == early - 1

    await fanout.catch_up()
    assert audience.ids == [early, late]
    assert await replayed(fanout, start) == [early, late]


async def test_an_order_change_announces_itself_with_its_update(
    direct: Services, rows: Factory, watched: Watched
) -> None:
    """The order service's writer is announced by its version-checked UPDATE (no statement of
    its own): while its transaction is open, a later id committed by another writer is held
    back, exactly as for a writer announced by `record_events`."""
    order, fanout, _, audience = watched
    failed = await rows.order(status="PF")
    assert failed.id is not None
    await fanout.catch_up()  # the new order's own events
    audience.ids.clear()
    async with direct.db.sessions() as slow, slow.begin():
        await perform_order_action(
            OrderUnit(slow),
            viewer=SUPPORT,
            order_id=failed.id,
            action=Action.RESUBMIT,
            config=direct.desk,
            now=AT,
        )
        early = (await slow.exec(select(func.max(col(Event.id))))).one()
        assert early is not None and early > fanout.position
        async with direct.transaction() as fast:
            late = await write_event(fast, order, "fast writer")
        assert early < late
        await fanout.catch_up()
        assert audience.ids == []
        async with direct.db.read() as session:
            assert await readable_horizon(session) == early - 1
    await fanout.catch_up()
    assert audience.ids == [early, late]


async def test_a_failure_announces_itself_in_its_one_statement(
    direct: Services, rows: Factory, watched: Watched
) -> None:
    """On PostgreSQL a failure is one write (the order's UPDATE, its notifications and all the
    events): held open, it holds back a later writer's id; once committed, its events come in
    id order, the order's first, then each notification's."""
    order, fanout, _, audience = watched
    reseller = await rows.reseller()
    await rows.notify(reseller, reseller_mail=True)  # support and the reseller are told
    provisioning = await rows.order(await rows.customer(reseller), status="PR")
    assert provisioning.id is not None
    audience.event_filter = EventFilter(viewer=SUPPORT, topic=TOPIC_ORDER_STATUS)
    notes = Recorder(EventFilter(viewer=SUPPORT, topic=TOPIC_NOTIFICATION))
    fanout.add(notes)
    await fanout.catch_up()  # the new order's own events
    audience.ids.clear()
    async with direct.db.sessions() as slow, slow.begin():
        await report_provisioning_result(
            OrderUnit(slow),
            viewer=SUPPORT,
            order_id=provisioning.id,
            outcome=ProvisioningOutcome.FAILED,
            reason=FailureReason.EXTERNAL_SYSTEM_ERROR,
            details=None,
            config=direct.desk,
            now=AT,
        )
        query = select(Event).where(col(Event.id) > fanout.position).order_by(col(Event.id))
        written = list((await slow.exec(query)).all())
        async with direct.transaction() as fast:
            late = await write_event(fast, order, "fast writer")
        await fanout.catch_up()
        assert audience.ids == [] and notes.ids == []
        async with direct.db.read() as session:
            assert await readable_horizon(session) == (written[0].id or 0) - 1
    await fanout.catch_up()
    first, *rest = written
    assert (first.topic, first.order_id, first.to_status) == (
        TOPIC_ORDER_STATUS,
        provisioning.id,
        "PF",
    )
    assert audience.ids == [first.id, late]
    assert notes.ids == [e.id for e in rest]
    async with direct.db.read() as session:
        made = (
            await session.exec(
                select(Notification)
                .where(col(Notification.order_id) == provisioning.id)
                .order_by(col(Notification.id))
            )
        ).all()
    assert [(e.notification_id, e.recipient_role, e.delivery_status) for e in rest] == [
        (n.id, n.recipient_role, "PENDING") for n in made
    ]
    assert [n.recipient_role for n in made] == ["SUPPORT", "RESELLER"]


async def test_a_delivery_outcome_announces_itself_in_its_one_statement(
    direct: Services, rows: Factory, watched: Watched
) -> None:
    """The outbox records a new delivery status and its event in one self-committing statement;
    run inside an open transaction here, so that it can be held open: its lock is taken before
    its event's id is drawn, so a later id committed by another writer is held back until it
    ends, as for any writer."""
    order, fanout, _, audience = watched
    await rows.order(status="PF")  # a PENDING notification to support
    (claim,) = await claim_due(direct.outbox, limit=10)
    audience.event_filter = EventFilter(viewer=SUPPORT, topic=TOPIC_NOTIFICATION)
    await fanout.catch_up()  # the new order's own events
    audience.ids.clear()
    values: dict[str, object] = {
        "attempts": 1,
        "lease_until": None,
        "status": "SENT",
        "sent_at": AT,
    }
    async with direct.db.sessions() as slow, slow.begin():
        values["next_attempt_at"] = None
        params = {
            **status_change_params(claim, values),
            "claim_lease_until": claim.lease_until,
            **event_params(
                status_change_event(claim, values, AT),
                from_source=("order_id", "reseller_id", "customer_id", "recipient_role"),
            ),
        }
        statement = status_change_statement(tuple(values))
        (early,) = (await (await slow.connection()).execute(statement, params)).one()
        assert early > fanout.position
        async with direct.transaction() as fast:
            assert order.id is not None
            late = await record_event(
                fast,
                notification_event(
                    notification_id=claim.id,
                    order_id=order.id,
                    reseller_id=order.reseller_id,
                    customer_id=order.customer_id,
                    recipient_role="SUPPORT",
                    delivery_status="PENDING",
                    at=AT,
                ),
            )
        assert early < (late.id or 0)
        await fanout.catch_up()
        assert audience.ids == []
        async with direct.db.read() as session:
            assert await readable_horizon(session) == early - 1
    await fanout.catch_up()
    assert audience.ids == [early, late.id]
    async with direct.db.read() as session:
        written = await session.get(Event, early)
        sent = await session.get(Notification, claim.id)
    assert written is not None and sent is not None and sent.status == "SENT"
    assert (written.topic, written.notification_id, written.delivery_status) == (
        TOPIC_NOTIFICATION,
        claim.id,
        "SENT",
    )
    assert (written.order_id, written.reseller_id, written.customer_id, written.recipient_role) == (
        sent.order_id,
        sent.reseller_id,
        sent.customer_id,
        sent.recipient_role,
    )


async def test_a_rolled_back_writer_holds_nothing_back_once_it_ends(
    direct: Services, watched: Watched
) -> None:
    order, fanout, start, audience = watched

    slow = direct.db.sessions()
    transaction = await slow.begin()
    await write_event(slow, order, "will roll back")
    async with direct.transaction() as fast:
        late = await write_event(fast, order, "fast writer")
    await fanout.catch_up()
    assert audience.ids == []

    await transaction.rollback()
    await slow.close()
    await fanout.catch_up()
    assert audience.ids == [late]
    assert await replayed(fanout, start) == [late]


async def test_concurrent_writers_and_readers_see_every_committed_event_once_in_id_order(
    direct: Services, watched: Watched
) -> None:
    order, fanout, start, audience = watched
    rng = random.Random(8)
    writing = True

    async def writer(name: str, transactions: int) -> None:
        for n in range(transactions):
            events = rng.randint(1, 3)
            pause = rng.random() / 50
            roll_back = rng.random() < 0.15
            async with direct.db.sessions() as session, session.begin() as transaction:
                for e in range(events):
                    await write_event(session, order, f"{name}-{n}-{e}")
                    await asyncio.sleep(pause)  # hold ids open while others commit
                if roll_back:
                    await transaction.rollback()
            direct.bus.wake_local()

    async def reader() -> None:
        while writing:
            await fanout.catch_up()
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(f"w{w}", 25) for w in range(8)))
    writing = False
    await reading
    await fanout.catch_up()

    committed = await committed_ids_after(direct, start)
    assert len(committed) > 100
    assert audience.ids == committed  # each once, in id order, none skipped
    for cursor in rng.sample(committed, 10):
        assert await replayed(fanout, cursor) == [i for i in committed if i > cursor]


async def test_two_processes_writing_at_once_give_every_subscriber_the_same_gapless_stream(
    two_servers: list[ServerProcess], rows: Factory, direct: Services
) -> None:
    a, b = two_servers
    token = await rows.token("SUPPORT")
    system = await rows.token("SYSTEM")
    customer = await rows.customer()
    orders = [await rows.order(customer, status="PR") for _ in range(16)]
    start = await last_cursor(b, token, gid("Order", orders[-1]))

    async with (
        subscription(a, token, STATUS_CHANGES, {"after": start}) as on_a,
        subscription(b, token, STATUS_CHANGES, {"after": start}) as on_b,
    ):
        await fail_orders([a, b], system, orders)  # at once, half through each process
        got_a = [(await on_a.next("1", timeout=15))["orderStatusChanged"] for _ in orders]
        got_b = [(await on_b.next("1", timeout=15))["orderStatusChanged"] for _ in orders]
        await on_a.nothing_within(0.5)

    async with direct.db.read() as session:
        query = (
            select(col(Event.id))
            .where(
                col(Event.topic) == TOPIC_ORDER_STATUS,
                col(Event.order_id).in_([o.id for o in orders]),
                col(Event.to_status) == "PF",
            )
            .order_by(col(Event.id))
        )
        committed = [to_cursor("event", i or 0) for i in (await session.exec(query)).all()]
    assert len(committed) == len(orders)
    assert [c["cursor"] for c in got_a] == committed
    assert [c["cursor"] for c in got_b] == committed
    assert sorted(c["order"]["number"] for c in got_a) == sorted(o.number for o in orders)

    middle = got_a[7]["cursor"]
    async with subscription(b, token, STATUS_CHANGES, {"after": middle}) as resumed:
        rest = [
            (await resumed.next("1", timeout=15))["orderStatusChanged"]["cursor"]
            for _ in orders[8:]
        ]
        await resumed.nothing_within(0.5)
    assert rest == committed[8:]


async def test_a_history_cursor_never_lies_beyond_an_event_still_being_committed(
    direct: Services, rows: Factory
) -> None:
    """Resuming from an order's history cursor misses nothing another writer commits later."""
    from app.graphql.loaders import Loaders

    order = await rows.order(status="PR")
    other = await rows.order(status="PR")
    async with direct.db.sessions() as slow, slow.begin():
        early = await write_event(slow, other, "slow writer")  # drawn first, still open
        async with direct.transaction() as fast:
            late = await write_event(fast, order, "fast writer")
        history = await Loaders(direct.db).history.load(order.id or 0)
        # the change of `order` is committed, but a cursor after it would skip `early`
        assert late not in [e.id for e in history]
        assert all((e.id or 0) < early for e in history)
    history = await Loaders(direct.db).history.load(order.id or 0)
    assert [e.id for e in history][-1] == late
    fanout = manual_fanout(direct)
    resume_from = max((e.id or 0) for e in history if (e.id or 0) < early)
    assert early in await replayed(fanout, resume_from)
