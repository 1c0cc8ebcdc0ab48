"""A write the order store knows to be one statement runs on PostgreSQL without BEGIN and COMMIT
(`Database.one_statement_write`, chosen by `OrderStore.unit`): its guard lets exactly one
`CompiledStatement` write through and stops anything else before it runs (a bug, never retried),
a change that is more than one statement is written in a transaction, chosen before anything is
written, and what the fast path writes is what the same work writes in a transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, func, select, text, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.access.viewer import Viewer
from app.db import CompiledStatement, NotOneStatement, SecondWriteOutsideTransaction
from app.errors import Conflict
from app.orders import service
from app.orders.flow import Action, FailureReason, ProvisioningOutcome, Role
from app.orders.models import Customer, SalesOrder
from app.orders.service import perform_order_action, report_provisioning_result
from app.services import Services
from tests.support.api import Factory
from tests.support.world import World, make_world
from tests.support.writes import counting_order_reads, fail_and_resubmit, written

SUPPORT = Viewer(role=Role.SUPPORT)
ORDER = SalesOrder.__table__  # type: ignore[attr-defined]
SET_COMMENT = CompiledStatement(
    update(SalesOrder)
    .where(ORDER.c.id == bindparam("order_id"))
    .values(failure_details=bindparam("details"))
    .returning(ORDER.c.id)
)
READ_COMMENT = CompiledStatement(
    select(ORDER.c.failure_details).where(ORDER.c.id == bindparam("order_id"))
)

LOCK_ORDER = CompiledStatement(
    select(ORDER.c.id).where(ORDER.c.id == bindparam("order_id")).with_for_update()
)


@pytest.fixture
def postgres_only(services: Services) -> None:
    if services.db.is_sqlite:
        pytest.skip("SQLite writes always take Database.write() (its one-writer lock)")


@pytest.fixture
async def tenants(factory: Factory) -> World:
    world = await make_world(factory)
    await factory.notify(world.reseller_a, reseller_mail=True, customer_mail=True)
    return world


async def _details(services: Services, order: SalesOrder) -> Any:
    async with services.db.read_connection() as conn:
        row = await READ_COMMENT.first(conn, {"order_id": order.id})
    assert row is not None
    return row[0]


@pytest.mark.usefixtures("postgres_only")
async def test_one_compiled_write_commits_on_its_own_and_a_second_is_refused(
    services: Services, factory: Factory
) -> None:
    order = await factory.order(status="PR")
    with pytest.raises(SecondWriteOutsideTransaction):
        async with services.db.one_statement_write() as session:
            conn = await session.connection()
            for _ in range(3):  # reads: any number
                assert await READ_COMMENT.first(conn, {"order_id": order.id}) == (None,)
            assert await SET_COMMENT.all(conn, {"order_id": order.id, "details": "first"})
            await SET_COMMENT.all(conn, {"order_id": order.id, "details": "second"})
    # the first write committed by itself (no transaction to roll back); the second never ran
    assert await _details(services, order) == "first"


@pytest.mark.usefixtures("postgres_only")
async def test_a_write_the_guard_cannot_allow_stops_before_anything_iswritten(
    services: Services, factory: Factory
) -> None:
    order = await factory.order(status="PR")
    customer_id = order.customer_id

    async def orm_flush(session: AsyncSession) -> None:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        customer.on_hold = True
        await session.flush()

    async def pending_orm_change_then_compiled_write(session: AsyncSession) -> None:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        customer.on_hold = True
        await SET_COMMENT.all(await session.connection(), {"order_id": order.id, "details": "x"})

    async def statement_through_sqlalchemy(session: AsyncSession) -> None:
        conn = await session.connection()
        await conn.execute(
            update(SalesOrder).where(ORDER.c.id == order.id).values(failure_details="x")
        )

    async def text_statement(session: AsyncSession) -> None:  # e.g. the writer's announcement
        conn = await session.connection()
        await conn.execute(text("SELECT pg_advisory_xact_lock_shared(1, 2)"))

    async def locking_read(session: AsyncSession) -> None:  # its lock would end with it
        await session.exec(select(SalesOrder).where(ORDER.c.id == order.id).with_for_update())

    async def compiled_locking_read(session: AsyncSession) -> None:
        await LOCK_ORDER.all(await session.connection(), {"order_id": order.id})

    for work in (
        locking_read,
        compiled_locking_read,
        orm_flush,
        pending_orm_change_then_compiled_write,
        statement_through_sqlalchemy,
        text_statement,
    ):
        with pytest.raises(NotOneStatement):
            async with services.db.one_statement_write() as session:
                await work(session)
                await session.flush()
        assert await _details(services, order) is None, work.__name__
        async with services.db.read() as session:
            customer = await session.get(Customer, customer_id)
            assert customer is not None and customer.on_hold is False, work.__name__


@pytest.mark.usefixtures("postgres_only")
async def test_a_change_of_the_customer_too_is_written_in_a_transaction_by_one_run(
    services: Services, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ACTIVATE_ACCOUNT writes the customer and the order: the store writes both in a
    transaction, chosen before it writes anything (the guard of the one-statement session never
    sees a write), and the use case runs once."""
    order = await factory.order(status="TM")
    assert order.id is not None and order.status == "TM"
    reads = counting_order_reads(monkeypatch)
    guarded: list[str] = []
    original_guard = db._before_write

    def before_write(options: Any, *, by_compiled_statement: bool) -> None:
        if options.get(db._ONE_WRITE) is not None:
            guarded.append("write")
        original_guard(options, by_compiled_statement=by_compiled_statement)

    monkeypatch.setattr(db, "_before_write", before_write)
    async with services.orders.unit() as unit:
        moved = await perform_order_action(
            unit,
            viewer=SUPPORT,
            order_id=order.id,
            action=Action.ACTIVATE_ACCOUNT,
            config=services.desk,
            now=services.clock.now(),
        )
    assert reads == [order.id] and guarded == []
    assert moved.version == order.version + 1 and moved.status != "TM"
    async with services.db.read() as session:
        stored = await session.get(SalesOrder, order.id)
        customer = await session.get(Customer, order.customer_id)
        events = (
            await (await session.connection()).execute(
                text("SELECT count(*) FROM event WHERE order_id = :id AND action = :action"),
                {"id": order.id, "action": "ACTIVATE_ACCOUNT"},
            )
        ).scalar_one()
    assert stored is not None and stored.version == moved.version
    assert stored.status == moved.status and stored.settled_checks == moved.settled_checks
    assert customer is not None and customer.requires_verification is False
    assert events == 1


@pytest.mark.usefixtures("postgres_only")
async def test_one_statement_writes_equal_those_of_a_transaction(
    services: Services, factory: Factory, tenants: World
) -> None:
    """Differential: a failure (its notifications to three recipients and every event) and a
    resubmit, on an autocommit connection and in a transaction, leave the same rows."""
    fast = await factory.order(tenants.customer_a1, status="PR")
    await fail_and_resubmit(services, fast, one_statement=True)
    reference = await factory.order(tenants.customer_a1, status="PR")
    await fail_and_resubmit(services, reference)
    fast_rows, reference_rows = await written(services, fast), await written(services, reference)
    assert fast_rows == reference_rows
    assert [e["to_status"] for e in fast_rows["events"]] == ["PR", "PF", None, None, None, "PR"]
    assert [n["recipient_role"] for n in fast_rows["notifications"]] == [
        "SUPPORT",
        "RESELLER",
        "CUSTOMER",
    ]


@pytest.mark.usefixtures("postgres_only")
async def test_a_conflict_on_the_fast_path_writes_nothing(
    services: Services, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = await factory.order(status="PR")
    async with services.db.read_connection() as conn:
        before = (await conn.execute(select(func.count()).select_from(text("event")))).scalar()
    # someone else moves the order between this work's read and its write
    original = service._visible_order

    async def read_then_bump(
        session: AsyncSession, viewer: Viewer, order_id: int, *, failure_mail: bool
    ) -> Any:
        read = await original(session, viewer, order_id, failure_mail=failure_mail)
        async with services.db.write() as other:
            await (await other.connection()).execute(
                update(SalesOrder).where(ORDER.c.id == order_id).values(version=read[0].version + 5)
            )
        return read

    monkeypatch.setattr(service, "_visible_order", read_then_bump)
    with pytest.raises(Conflict):
        async with services.orders.unit() as unit:
            await report_provisioning_result(
                unit,
                viewer=SUPPORT,
                order_id=order.id,  # type: ignore[arg-type]
                outcome=ProvisioningOutcome.FAILED,
                reason=FailureReason.OTHER,
                details="disk full",
                config=services.desk,
                now=services.clock.now(),
            )
    async with services.db.read_connection() as conn:
        after = (await conn.execute(select(func.count()).select_from(text("event")))).scalar()
        status = (await conn.execute(select(ORDER.c.status).where(ORDER.c.id == order.id))).scalar()
        notes = (
            await conn.execute(
                text("SELECT count(*) FROM notification WHERE order_id = :id"), {"id": order.id}
            )
        ).scalar()
    assert (after, status, notes) == (before, "PR", 0)
