"""Demo data for `serve --demo`: a reseller, customers, orders in several statuses, tokens."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import col, select

from app.access.tokens import create_token
from app.access.viewer import Viewer
from app.notifications.service import update_settings
from app.orders import service
from app.orders.flow import (
    Action,
    FailureReason,
    OrderType,
    PaymentMethod,
    ProvisioningOutcome,
    Role,
)
from app.orders.models import Customer, Reseller
from app.orders.store import OrderUnit
from app.services import Services

DEMO_RESELLER = "Northwind Cloud Partners"
SUPPORT = Viewer(role=Role.SUPPORT)
PLATFORM = Viewer(role=Role.SYSTEM)

# The demo reseller's customers, by key: what `create_customer` is given besides the reseller.
DEMO_CUSTOMERS: dict[str, dict[str, Any]] = {
    "acme": {"name": "Acme Corp", "contact_email": "it@acme.example"},
    "cash": {
        "name": "Globex (pays by check)",
        "contact_email": "billing@globex.example",
        "payment_method": PaymentMethod.CASH_OR_CHECK,
    },
    "held": {
        "name": "Initech (account on hold)",
        "contact_email": "admin@initech.example",
        "on_hold": True,
    },
}
# The orders, in the order they are placed: the customer, the unit price of its ten seats, and
# what happens to it next (a provisioning outcome, an operator's action, or nothing).
DEMO_ORDERS: list[tuple[str, str, ProvisioningOutcome | Action | None]] = [
    ("acme", "12.50", None),  # PR
    ("acme", "25.00", ProvisioningOutcome.FAILED),  # PF, with DEMO_FAILURE
    ("acme", "8.00", ProvisioningOutcome.SUCCEEDED),  # CP
    ("acme", "900.00", None),  # WA: at or above the approval threshold
    ("cash", "40.00", None),  # WP
    ("held", "15.00", None),  # HL
    ("held", "15.00", Action.CANCEL),  # CL
]
DEMO_FAILURE = (FailureReason.NO_IP_ADDRESSES, "Pool eu-west-1 exhausted")


async def seed_demo(services: Services) -> dict[str, str]:
    """Seed once (by the demo reseller's name) and return a fresh token for each role."""
    now = services.clock.now
    desk = services.desk
    async with services.transaction() as s:
        reseller = (
            await s.exec(select(Reseller).where(col(Reseller.name) == DEMO_RESELLER))
        ).first()
        if reseller is None:
            reseller = await service.create_reseller(
                s, viewer=SUPPORT, name=DEMO_RESELLER, email="ops@northwind.example", now=now()
            )
            assert reseller.id is not None
            # Failure mail to the reseller and its customers is off until enabled (SPEC 3); the
            # demo reseller has turned both on, so the failed order below tells all three.
            await update_settings(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                notify_reseller=True,
                notify_customer=True,
                now=now(),
            )
            customer_ids: dict[str, int] = {}
            for key, fields in DEMO_CUSTOMERS.items():
                made = await service.create_customer(
                    s, viewer=SUPPORT, reseller_id=reseller.id, now=now(), **fields
                )
                assert made.id is not None
                customer_ids[key] = made.id
            for key, price, then in DEMO_ORDERS:
                order = await service.place_order(
                    s,
                    viewer=SUPPORT,
                    customer_id=customer_ids[key],
                    order_type=OrderType.SO,
                    currency="USD",
                    items=[
                        service.ItemInput("Microsoft 365 Business Standard", 10, Decimal(price))
                    ],
                    config=desk,
                    now=now(),
                )
                assert order.id is not None
                if isinstance(then, ProvisioningOutcome):
                    reason, details = (
                        DEMO_FAILURE if then is ProvisioningOutcome.FAILED else (None, None)
                    )
                    await service.report_provisioning_result(
                        OrderUnit(s),
                        viewer=PLATFORM,
                        order_id=order.id,
                        outcome=then,
                        reason=reason,
                        details=details,
                        config=desk,
                        now=now(),
                    )
                elif then is not None:
                    await service.perform_order_action(
                        OrderUnit(s),
                        viewer=SUPPORT,
                        order_id=order.id,
                        action=then,
                        config=desk,
                        now=now(),
                    )
        assert reseller.id is not None
        customer = (
            await s.exec(select(Customer).where(col(Customer.reseller_id) == reseller.id))
        ).first()
        assert customer is not None
        bound_to = {Role.RESELLER: (reseller.id, None), Role.CUSTOMER: (None, customer.id)}
        tokens = {}
        for role in (Role.SUPPORT, Role.RESELLER, Role.CUSTOMER, Role.SYSTEM):
            reseller_id, customer_id = bound_to.get(role, (None, None))
            tokens[role.value] = await create_token(
                s, role=role, reseller_id=reseller_id, customer_id=customer_id, now=now()
            )
    return tokens
