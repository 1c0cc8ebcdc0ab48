"""Demo data for `serve --demo`: a reseller, customers, orders in several statuses, tokens."""

from __future__ import annotations

from decimal import Decimal

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
from app.services import Services

DEMO_RESELLER = "Northwind Cloud Partners"
SUPPORT = Viewer(role=Role.SUPPORT)
PLATFORM = Viewer(role=Role.SYSTEM)


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
                template_id=None,
                template_given=False,
                now=now(),
            )
            acme = await service.create_customer(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                name="Acme Corp",
                contact_email="it@acme.example",
                now=now(),
            )
            cash = await service.create_customer(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                name="Globex (pays by check)",
                contact_email="billing@globex.example",
                payment_method=PaymentMethod.CASH_OR_CHECK,
                now=now(),
            )
            held = await service.create_customer(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                name="Initech (account on hold)",
                contact_email="admin@initech.example",
                on_hold=True,
                now=now(),
            )
            assert acme.id and cash.id and held.id

            def items(price: str) -> list[service.ItemInput]:
                return [service.ItemInput("Microsoft 365 Business Standard", 10, Decimal(price))]

            async def order(customer_id: int, price: str) -> int:
                placed = await service.place_order(
                    s,
                    viewer=SUPPORT,
                    customer_id=customer_id,
                    order_type=OrderType.SO,
                    currency="USD",
                    items=items(price),
                    config=desk,
                    now=now(),
                )
                assert placed.id is not None
                return placed.id

            await order(acme.id, "12.50")  # PR
            failed = await order(acme.id, "25.00")
            await service.report_provisioning_result(
                s,
                viewer=PLATFORM,
                order_id=failed,
                outcome=ProvisioningOutcome.FAILED,
                reason=FailureReason.NO_IP_ADDRESSES,
                details="Pool eu-west-1 exhausted",
                config=desk,
                now=now(),
            )
            done = await order(acme.id, "8.00")
            await service.report_provisioning_result(
                s,
                viewer=PLATFORM,
                order_id=done,
                outcome=ProvisioningOutcome.SUCCEEDED,
                reason=None,
                details=None,
                config=desk,
                now=now(),
            )
            await order(acme.id, "900.00")  # WA: at or above the approval threshold
            await order(cash.id, "40.00")  # WP
            await order(held.id, "15.00")  # HL
            cancelled = await order(held.id, "15.00")
            await service.perform_order_action(
                s,
                viewer=SUPPORT,
                order_id=cancelled,
                action=Action.CANCEL,
                config=desk,
                now=now(),
            )
        assert reseller.id is not None
        customer = (
            await s.exec(select(Customer).where(col(Customer.reseller_id) == reseller.id))
        ).first()
        assert customer is not None
        tokens = {
            "SUPPORT": await create_token(
                s, role=Role.SUPPORT, reseller_id=None, customer_id=None, now=now()
            ),
            "RESELLER": await create_token(
                s, role=Role.RESELLER, reseller_id=reseller.id, customer_id=None, now=now()
            ),
            "CUSTOMER": await create_token(
                s, role=Role.CUSTOMER, reseller_id=None, customer_id=customer.id, now=now()
            ),
            "SYSTEM": await create_token(
                s, role=Role.SYSTEM, reseller_id=None, customer_id=None, now=now()
            ),
        }
    return tokens
