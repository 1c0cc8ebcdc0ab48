"""The order desk reads a mutation's order with a `CompiledStatement` and checks visibility with
`policy.may_see_order`: it must find what the ORM's query with `policy.order_scope` finds, for
every viewer, with the same values of the same types."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from app.access import policy
from app.errors import NotFound
from app.orders.models import SalesOrder
from app.orders.service import _ORDER_BY_ID, get_visible_order
from app.services import Services
from tests.support.api import Factory
from tests.support.world import make_world


def typed(order: SalesOrder) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k, v in order.model_dump().items()}


async def test_the_compiled_order_read_equals_the_orms(
    services: Services, factory: Factory
) -> None:
    world = await make_world(factory)
    orders = [
        await factory.order(customer, status=status, total=total)
        for customer, status, total in [
            (world.customer_a1, "PR", "100.00"),
            (world.customer_a2, "PF", "0.0001"),
            (world.customer_b1, "PF", "12.3456"),
        ]
    ]
    seen = 0
    for name, viewer in world.viewers().items():
        for order in orders:
            assert order.id is not None
            async with services.db.read() as session:
                query = select(SalesOrder).where(
                    col(SalesOrder.id) == order.id, policy.order_scope(viewer)
                )
                expected = (await session.exec(query)).first()
                expected_values = None if expected is None else typed(expected)
            async with services.db.read() as session:
                try:
                    got: dict[str, tuple[type, Any]] | None = typed(
                        await get_visible_order(session, viewer, order.id)
                    )
                except NotFound:
                    got = None
            assert got == expected_values, (name, order.id)
            seen += got is not None
    assert 0 < seen < len(world.viewers()) * len(orders)  # some found, some refused
    # it ran on the driver, not through SQLAlchemy (asyncpg's Numeric asked the cursor before)
    assert _ORDER_BY_ID._compile(services.db.engine.dialect) is not None
