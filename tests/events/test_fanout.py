"""The fan-out: one read of the log per batch, tenancy per audience, replay seams, bounded queues.

Most tests drive a fan-out of their own by hand (`catch_up()`), so what is dispatched when is
exact; the reader task itself is tested with the bus and with its fallback poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest
from sqlalchemy import event as sa_event
from sqlmodel import col, select

from app.access.viewer import Viewer
from app.events.bus import EventBus
from app.events.fanout import (
    Batch,
    CursorChecks,
    Delivery,
    EventFilter,
    Fanout,
    SubscriberTooSlow,
)
from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import NotificationSettings
from app.orders.flow import Role
from app.orders.models import SalesOrder
from app.services import Services
from tests.support.api import Factory
from tests.support.events import record_note
from tests.support.world import World, make_world

TIMEOUT = 5.0


@pytest.fixture
async def tenants(factory: Factory) -> World:
    return await make_world(factory)


def manual_fanout(services: Services, *, queue_size: int = 16, page: int = 100) -> Fanout:
    """A fan-out nobody runs: the test calls `catch_up()` itself."""
    return Fanout(
        db=services.db,
        bus=EventBus(),
        queue_size=queue_size,
        replay_page_size=page,
    )


async def last_event_id(services: Services) -> int:
    async with services.db.read() as session:
        ids = (await session.exec(select(col(Event.id)).order_by(col(Event.id).desc()))).first()
    return ids or 0


async def events_after(services: Services, event_id: int) -> list[Event]:
    async with services.db.read() as session:
        query = select(Event).where(col(Event.id) > event_id).order_by(col(Event.id))
        return list((await session.exec(query)).all())


async def take(deliveries: AsyncGenerator[Delivery, None], count: int) -> list[Delivery]:
    async with asyncio.timeout(TIMEOUT):
        return [await anext(deliveries) for _ in range(count)]


def ids(items: Sequence[Delivery | Event]) -> list[int | None]:
    return [item.event.id if isinstance(item, Delivery) else item.id for item in items]


@dataclass
class Recorder:
    """An audience that records what it is handed."""

    event_filter: EventFilter
    batches: list[Batch] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        self.batches.append(batch)
        self.events.extend(events)


async def support_recording_from_now(services: Services) -> tuple[Fanout, Recorder]:
    """A hand-driven fan-out positioned at the end of the log, with support's order events."""
    fanout = manual_fanout(services)
    fanout.position = await last_event_id(services)
    audience = Recorder(EventFilter(viewer=Viewer(role=Role.SUPPORT), topic=TOPIC_ORDER_STATUS))
    fanout.add(audience)
    return fanout, audience


async def test_each_audience_is_handed_what_it_may_see_in_order_from_one_read(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout = manual_fanout(services)
    fanout.position = await last_event_id(services)
    viewers = tenants.viewers()
    audiences = {
        name: Recorder(EventFilter(viewer=viewer, topic=TOPIC_ORDER_STATUS))
        for name, viewer in viewers.items()
    }
    for audience in audiences.values():
        fanout.add(audience)
    a1 = await factory.order(tenants.customer_a1, status="PR")
    a2 = await factory.order(tenants.customer_a2, status="PR")
    b1 = await factory.order(tenants.customer_b1, status="PR")

    await fanout.catch_up()

    by_order = {a1.id: "a1", a2.id: "a2", b1.id: "b1"}
    seen = {name: [by_order[e.order_id] for e in a.events] for name, a in audiences.items()}
    assert seen == {
        "support": ["a1", "a2", "b1"],
        "system": ["a1", "a2", "b1"],
        "reseller a": ["a1", "a2"],
        "reseller b": ["b1"],
        "customer a1": ["a1"],
        "customer a2": ["a2"],
        "customer b1": ["b1"],
    }
    # one batch, read once, the same rows and scratch space for everyone
    assert {id(a.batches[0]) for a in audiences.values()} == {id(audiences["support"].batches[0])}
    support_events = audiences["support"].events
    assert audiences["customer a1"].events[0] is support_events[0]
    assert fanout.position == support_events[-1].id


async def test_a_batch_shares_one_scratch_space_and_the_next_batch_gets_a_new_one(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout, audience = await support_recording_from_now(services)
    await factory.order(tenants.customer_a1, status="PR")
    await fanout.catch_up()
    await factory.order(tenants.customer_a1, status="PR")
    await fanout.catch_up()

    first, second = audience.batches
    made: list[object] = []
    value = first.shared("loaders", lambda: made.append(object()) or made[-1])
    assert first.shared("loaders", lambda: made.append(object()) or made[-1]) is value
    assert second.shared("loaders", lambda: made.append(object()) or made[-1]) is not value
    assert len(made) == 2


async def test_with_no_audience_the_reader_reads_nothing_and_the_next_one_starts_at_the_end(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout = manual_fanout(services)
    # PR, not PF: a failure's mail would be delivered meanwhile by the app's outbox, whose
    # delivery events could commit between the join's read of the end and this test's
    await factory.order(tenants.customer_a1, status="PR")
    assert await last_event_id(services) > 0
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    engine = services.db.engine.sync_engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        await fanout.catch_up()  # a wake-up with nobody listening
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert statements == [] and fanout.position == 0

    audience = Recorder(EventFilter(viewer=Viewer(role=Role.SUPPORT), topic=TOPIC_ORDER_STATUS))
    await fanout.join(audience)
    assert fanout.position == await last_event_id(services)
    later = await factory.order(tenants.customer_a2, status="PR")
    await fanout.catch_up()
    assert [(e.order_id, e.to_status) for e in audience.events] == [(later.id, "PR")]


async def test_an_audience_joining_after_prepare_gets_what_committed_in_between(
    services: Services, factory: Factory, tenants: World
) -> None:
    """Wake-ups that found nobody between `prepare_to_add` and `add` are read once added."""
    bus = EventBus()
    wake = bus.listen()
    fanout = Fanout(db=services.db, bus=bus, queue_size=16)
    await fanout.catch_up()  # nobody listens: behind
    await fanout.prepare_to_add()
    between = await factory.order(tenants.customer_a1, status="PR")
    await fanout.catch_up()  # its wake-up, still nobody
    assert not wake.is_set()
    audience = Recorder(EventFilter(viewer=Viewer(role=Role.SUPPORT), topic=TOPIC_ORDER_STATUS))
    fanout.add(audience)
    assert wake.is_set()  # the reader is woken for what it skipped
    await fanout.catch_up()
    assert [(e.order_id, e.to_status) for e in audience.events] == [(between.id, "PR")]


async def test_replay_then_live_has_no_gap_and_no_duplicate_at_the_seam(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout = manual_fanout(services, page=2)
    viewer = tenants.viewers()["reseller a"]
    start = await last_event_id(services)
    fanout.position = start
    for _ in range(3):
        await factory.order(tenants.customer_a1, status="PR")
    await factory.order(tenants.customer_b1, status="PR")  # another tenant's, never delivered
    logged = await events_after(services, start)
    resume_after = logged[0].id
    assert resume_after is not None
    subscriber = fanout.subscribe(
        EventFilter(viewer=viewer, topic=TOPIC_ORDER_STATUS), after_id=resume_after
    )
    async with aclosing(subscriber.deliveries()) as deliveries:
        received = await take(deliveries, 1)  # registered live, replaying its first page
        await fanout.catch_up()  # live: everything after `start`, replayed or not
        await factory.order(tenants.customer_a2, status="PR")
        await fanout.catch_up()
        received += await take(deliveries, 2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(deliveries), 0.05)

    visible = [
        e for e in await events_after(services, resume_after) if e.reseller_id == viewer.reseller_id
    ]
    assert ids(received) == ids(visible)
    assert len(visible) == 3  # two replayed (one of them also dispatched live), one live
    assert fanout.audience_count == 0


async def test_a_full_queue_drops_that_subscriber_alone_and_names_where_to_resume(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout = manual_fanout(services, queue_size=2)
    fanout.position = await last_event_id(services)
    support = EventFilter(viewer=Viewer(role=Role.SUPPORT), topic=TOPIC_ORDER_STATUS)
    stuck = fanout.subscribe(support)
    healthy = Recorder(support)
    fanout.add(healthy)
    async with aclosing(stuck.deliveries()) as deliveries:
        first = await asyncio.wait_for(
            _first_after_registration(fanout, deliveries, factory, tenants), TIMEOUT
        )
        for _ in range(3):
            await factory.order(tenants.customer_a1, status="PR")
        await fanout.catch_up()
        assert fanout.audience_count == 1  # the stuck one is gone, the other stays
        queued = await take(deliveries, 2)
        with pytest.raises(SubscriberTooSlow) as raised:
            await asyncio.wait_for(anext(deliveries), TIMEOUT)

    assert raised.value.resume_after_id == queued[-1].event.id
    assert ids([first, *queued]) == ids(healthy.events[:3])
    assert len(healthy.events) == 4


async def _first_after_registration(
    fanout: Fanout,
    deliveries: AsyncGenerator[Delivery, None],
    factory: Factory,
    tenants: World,
) -> Delivery:
    """Register the subscriber (by reading) and hand it one event."""
    reading = asyncio.ensure_future(anext(deliveries))
    await asyncio.sleep(0)  # the generator runs up to its first wait: registered
    await factory.order(tenants.customer_a1, status="PR")
    await fanout.catch_up()
    return await reading


async def first_delivery(fanout: Fanout, trigger: Callable[[], Awaitable[object]]) -> Delivery:
    """Run `fanout`'s reader, subscribe support to order events, `trigger`; the first delivery."""
    await fanout.start()
    try:
        subscriber = fanout.subscribe(
            EventFilter(viewer=Viewer(role=Role.SUPPORT), topic=TOPIC_ORDER_STATUS)
        )
        async with aclosing(subscriber.deliveries()) as deliveries:
            reading = asyncio.ensure_future(take(deliveries, 1))
            await asyncio.sleep(0)
            await trigger()
            (delivery,) = await reading
    finally:
        await fanout.stop()
    return delivery


async def test_the_reader_wakes_on_commit(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout = Fanout(db=services.db, bus=services.bus, queue_size=8, poll_seconds=60)
    placed: list[SalesOrder] = []

    async def place() -> None:
        placed.append(await factory.order(tenants.customer_a1, status="PR"))

    delivery = await first_delivery(fanout, place)  # well before the 60 s poll
    assert delivery.event.order_id == placed[0].id


async def test_the_reader_polls_for_a_wake_up_that_never_came(
    services: Services, factory: Factory, tenants: World
) -> None:
    order = await factory.order(tenants.customer_a1, status="PR")
    fanout = Fanout(db=services.db, bus=EventBus(), queue_size=8, poll_seconds=0.05)

    async def touch_without_telling_any_bus() -> None:
        async with services.db.write() as session:
            await record_note(session, order, action="TOUCHED", at=services.clock.now())

    delivery = await first_delivery(fanout, touch_without_telling_any_bus)
    assert (delivery.event.order_id, delivery.event.action) == (order.id, "TOUCHED")


async def test_sql_and_in_memory_rules_agree_for_every_viewer_topic_and_filter(
    services: Services, factory: Factory, tenants: World
) -> None:
    async with services.transaction() as session:
        session.add(
            NotificationSettings(
                reseller_id=tenants.reseller_a.id or 0,
                notify_reseller=True,
                notify_customer=True,
                updated_at=services.clock.now(),
            )
        )
    start = await last_event_id(services)
    await factory.order(tenants.customer_a1, status="PF")
    await factory.order(tenants.customer_a2, status="PR")
    await factory.order(tenants.customer_b1, status="PF")
    await factory.order(tenants.customer_a1, status="CP")
    logged = await events_after(services, start)
    last = logged[-1].id or 0
    assert {e.topic for e in logged} == {TOPIC_ORDER_STATUS, TOPIC_NOTIFICATION}
    a, b = tenants.reseller_a.id, tenants.reseller_b.id
    narrowings: list[dict[str, object]] = [
        {},
        {"statuses": frozenset({"PF"})},
        {"statuses": frozenset()},
        {"reseller_id": a},
        {"reseller_id": b},
        {"customer_id": tenants.customer_a1.id},
        {"customer_id": tenants.customer_b1.id, "statuses": frozenset({"PF", "PR"})},
        {"matches_nothing": True},
    ]
    fanout = manual_fanout(services, page=3)
    checked = 0
    for viewer in tenants.viewers().values():
        for topic in (TOPIC_ORDER_STATUS, TOPIC_NOTIFICATION):
            for narrowing in narrowings:
                event_filter = EventFilter(viewer=viewer, topic=topic, **narrowing)  # type: ignore[arg-type]
                in_memory = [e.id for e in logged if event_filter.accepts(e)]
                in_sql = [
                    e.id
                    async for batch in fanout.replay(event_filter, after_id=start)
                    for e in batch.events
                    if (e.id or 0) <= last  # the outbox may log deliveries meanwhile
                ]
                assert in_sql == in_memory, (viewer, topic, narrowing)
                checked += bool(in_memory)
    assert checked > 20  # the rules were exercised with events, not just with empty answers


async def test_a_cursor_is_a_visible_event_of_the_streams_topic(
    services: Services, factory: Factory, tenants: World
) -> None:
    start = await last_event_id(services)
    order_b = await factory.order(tenants.customer_b1, status="PF")
    logged = await events_after(services, start)
    order_event = next(e for e in logged if e.topic == TOPIC_ORDER_STATUS)
    notification_event = next(e for e in logged if e.topic == TOPIC_NOTIFICATION)
    unknown = (logged[-1].id or 0) + 1000
    viewers = tenants.viewers()
    checks = CursorChecks(services.db)

    async def visible(viewer: str, topic: str, event_id: int | None) -> bool:
        event_filter = EventFilter(viewer=viewers[viewer], topic=topic)
        return await checks.is_visible(event_id=event_id or 0, event_filter=event_filter)

    assert order_event.order_id == order_b.id
    assert notification_event.recipient_role == "SUPPORT"  # the reseller's mail is off
    for _ in range(2):  # the second round answers from the tenancy read in the first
        assert await visible("support", TOPIC_ORDER_STATUS, order_event.id)
        assert await visible("reseller b", TOPIC_ORDER_STATUS, order_event.id)
        assert not await visible("reseller a", TOPIC_ORDER_STATUS, order_event.id)
        assert not await visible("customer a1", TOPIC_ORDER_STATUS, order_event.id)
        assert not await visible("support", TOPIC_NOTIFICATION, order_event.id)  # another topic
        assert await visible("support", TOPIC_NOTIFICATION, notification_event.id)
        assert not await visible("reseller b", TOPIC_NOTIFICATION, notification_event.id)
        assert not await visible("support", TOPIC_ORDER_STATUS, unknown)
    assert checks.reads == 2 + 2  # each event once; the unknown id each time


async def test_an_id_not_yet_in_the_log_is_not_remembered_as_invisible(
    services: Services, factory: Factory, tenants: World
) -> None:
    checks = CursorChecks(services.db)
    next_id = await last_event_id(services) + 1
    support = tenants.viewers()["support"]
    topics = (TOPIC_ORDER_STATUS, TOPIC_NOTIFICATION)
    for topic in topics:
        event_filter = EventFilter(viewer=support, topic=topic)
        assert not await checks.is_visible(event_id=next_id, event_filter=event_filter)
    await factory.order(tenants.customer_a1, status="PF")
    committed = next(e for e in await events_after(services, next_id - 1) if e.id == next_id)
    event_filter = EventFilter(viewer=support, topic=committed.topic)
    assert await checks.is_visible(event_id=next_id, event_filter=event_filter)


async def test_remembered_tenancies_are_bounded_and_the_oldest_is_read_again(
    services: Services, factory: Factory, tenants: World
) -> None:
    start = await last_event_id(services)
    for _ in range(3):
        await factory.order(tenants.customer_a1, status="PR")
    orders = [e for e in await events_after(services, start) if e.topic == TOPIC_ORDER_STATUS]
    assert len(orders) == 3
    checks = CursorChecks(services.db, capacity=2)
    event_filter = EventFilter(viewer=tenants.viewers()["reseller a"], topic=TOPIC_ORDER_STATUS)
    for event in [*orders[:3], orders[2], orders[0]]:
        assert await checks.is_visible(event_id=event.id or 0, event_filter=event_filter)
    assert checks.reads == 4  # the first one was dropped for the third, then read again


async def test_rows_are_those_committed_when_the_batch_is_read(
    services: Services, factory: Factory, tenants: World
) -> None:
    fanout, audience = await support_recording_from_now(services)
    order = await factory.order(tenants.customer_a1, status="PF")
    await fanout.catch_up()
    assert [(e.from_status, e.to_status) for e in audience.events] == [(None, "PR"), ("PR", "PF")]
    async with services.db.read() as session:
        row = await session.get(SalesOrder, order.id)
    assert row is not None and row.status == "PF"
