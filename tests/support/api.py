"""Talking to the ASGI app as a client would, and building rows with factories."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from app.access.tokens import create_token
from app.access.viewer import Viewer
from app.graphql.ids import to_global_id
from app.notifications.service import update_settings
from app.orders import flow, service
from app.orders.flow import Action, FailureReason, OrderType, PaymentMethod, Role, Status
from app.orders.models import Customer, Reseller, SalesOrder
from app.orders.store import OrderUnit
from app.services import Services

SUPPORT = Viewer(role=Role.SUPPORT)
PLATFORM = Viewer(role=Role.SYSTEM)


@dataclass
class GraphQLClient:
    http: httpx.AsyncClient
    token: str | None = None

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result

    def as_(self, token: str | None) -> GraphQLClient:
        return GraphQLClient(self.http, token)


@dataclass
class Factory:
    """Builds rows through the domain services (so every row is one the API could make)."""

    services: Services
    counter: int = field(default=0)

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    async def reseller(self, name: str | None = None, email: str | None = None) -> Reseller:
        n = self._next()
        async with self.services.transaction() as s:
            return await service.create_reseller(
                s,
                viewer=SUPPORT,
                name=name or f"Reseller {n}",
                email=email or f"reseller{n}@resellers.example",
                now=self.services.clock.now(),
            )

    async def customer(self, reseller: Reseller | None = None, **options: Any) -> Customer:
        reseller = reseller or await self.reseller()
        n = self._next()
        assert reseller.id is not None
        async with self.services.transaction() as s:
            return await service.create_customer(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                name=options.pop("name", f"Customer {n}"),
                contact_email=options.pop("contact_email", f"customer{n}@customers.example"),
                payment_method=PaymentMethod(options.pop("payment_method", "AUTOMATIC")),
                credit_limit=Decimal(str(options.pop("credit_limit", 0))),
                now=self.services.clock.now(),
                **options,
            )

    async def order(
        self,
        customer: Customer | None = None,
        *,
        status: str = "PR",
        total: str = "100.00",
        reason: FailureReason = FailureReason.SERVICE_CREATION_FAILED,
    ) -> SalesOrder:
        """An order brought to `status` through the real flow."""
        target = Status(status)
        if customer is None:
            options: dict[str, Any] = {}
            if target is Status.HL:
                options["on_hold"] = True
            elif target is Status.TM:
                options["requires_verification"] = True
            elif target is Status.NP:
                options["payment_method"] = PaymentMethod.NONE
            elif target in (Status.WP, Status.WZ):
                options["payment_method"] = PaymentMethod.CASH_OR_CHECK
                if target is Status.WZ:
                    options["credit_limit"] = Decimal("1000000")
            customer = await self.customer(**options)
        if target is Status.WA:
            total = "6000.00"
        assert customer.id is not None
        now = self.services.clock.now
        desk = self.services.desk
        async with self.services.transaction() as s:
            order = await service.place_order(
                s,
                viewer=SUPPORT,
                customer_id=customer.id,
                order_type=OrderType.SO,
                currency="USD",
                items=[service.ItemInput("Cloud seat", 1, Decimal(total))],
                config=desk,
                now=now(),
            )
            assert order.id is not None
            outcome = {
                Status.PF: flow.ProvisioningOutcome.FAILED,
                Status.CP: flow.ProvisioningOutcome.SUCCEEDED,
                Status.WZ: flow.ProvisioningOutcome.SUCCEEDED,
                Status.LO: flow.ProvisioningOutcome.LONG_RUNNING,
                Status.MO: flow.ProvisioningOutcome.MANUAL_OPERATION_REQUIRED,
            }.get(target)
            if outcome is not None:
                order = await service.report_provisioning_result(
                    OrderUnit(s),
                    viewer=PLATFORM,
                    order_id=order.id,
                    outcome=outcome,
                    reason=reason if outcome is flow.ProvisioningOutcome.FAILED else None,
                    details=None,
                    config=desk,
                    now=now(),
                )
            elif target is Status.CL:
                order = await service.perform_order_action(
                    OrderUnit(s),
                    viewer=SUPPORT,
                    order_id=order.id,
                    action=Action.CANCEL,
                    config=desk,
                    now=now(),
                )
        assert order.status == target.value, (order.status, target)
        return order

    async def notify(
        self, reseller: Reseller, *, reseller_mail: bool = True, customer_mail: bool = False
    ) -> None:
        """Turn the reseller's failure notifications on (both are off until enabled, SPEC 3)."""
        assert reseller.id is not None
        async with self.services.transaction() as s:
            await update_settings(
                s,
                viewer=SUPPORT,
                reseller_id=reseller.id,
                notify_reseller=reseller_mail,
                notify_customer=customer_mail,
                now=self.services.clock.now(),
            )

    async def token(
        self,
        role: str,
        *,
        reseller: Reseller | None = None,
        customer: Customer | None = None,
        expires_in: timedelta | None = None,
    ) -> str:
        async with self.services.transaction() as s:
            return await create_token(
                s,
                role=Role(role),
                reseller_id=reseller.id if reseller else None,
                customer_id=customer.id if customer else None,
                now=self.services.clock.now(),
                expires_in=expires_in,
            )


def refused(object_field: str, field: list[str] | None, message: str, code: str) -> dict[str, Any]:
    """The payload of a mutation that wrote nothing: its object null, and this one user error."""
    return {object_field: None, "userErrors": [{"field": field, "message": message, "code": code}]}


def gid(type_name: str, row: Any) -> str:
    return str(to_global_id(type_name, row.id))
