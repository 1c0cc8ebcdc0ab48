"""Mutation root: parse input, call one domain function in one transaction, map its errors.

Every resolver is one `run_mutation(info, work=..., wrap=...)`: `work` is the domain call, run in
one transaction (an order's action or outcome: `run_order_mutation`, in the unit of work the order
store opens); `wrap` turns what it returns into the payload. A domain error rolls the
transaction back and becomes the payload's `userErrors` (the object field stays null), in one
place. Payload types are declared with `@payload_type`: only their object field, named for the
object; `userErrors` is declared once, by the decorator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar, dataclass_transform

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.viewer import Viewer
from app.errors import DomainError, NotFound, OperationForbidden
from app.graphql.context import Info, forbidden, viewer_of
from app.graphql.ids import parse_pk
from app.graphql.incidents import Incident
from app.graphql.loaders import Loaders
from app.graphql.types import (
    Customer,
    FailureReason,
    Notification,
    NotificationSettings,
    NotificationTemplate,
    Order,
    OrderAction,
    OrderType,
    PaymentMethod,
    ProvisioningOutcome,
    Reseller,
    UserError,
)
from app.incidents import rules as incidents
from app.notifications import models as nm
from app.notifications import service as notifications
from app.orders import flow
from app.orders import service as orders
from app.orders.store import OrderUnit

T = TypeVar("T")
P = TypeVar("P", bound="Payload")

Work = Callable[[AsyncSession, Viewer, datetime], Awaitable[T]]
"""A mutation's domain call: (session, viewer, now) -> what it made or changed."""
OrderWork = Callable[[OrderUnit, Viewer, datetime], Awaitable[T]]
"""An order's action or outcome: (its unit of work, viewer, now) -> the order."""

USER_ERRORS_DESCRIPTION = "Why nothing was written."

InputType = TypeVar("InputType")
Input = Annotated[
    InputType, strawberry.argument(description="What to do (see the input type's fields).")
]
"""A mutation's one argument, `input: FooBarInput!`, described."""


class Payload:
    """Base of every mutation payload: one object field (null when nothing was written), then
    `userErrors`. Subclasses are declared with `@payload_type`, which adds `userErrors`."""


@dataclass_transform(field_specifiers=(strawberry.field,))
def payload_type(*, description: str) -> Callable[[type[P]], type[P]]:
    """Make a `Payload` subclass a GraphQL type, with `userErrors` after its object field."""

    def make(cls: type[P]) -> type[P]:
        cls.__annotations__["user_errors"] = list[UserError]
        cls.user_errors = strawberry.field(  # type: ignore[attr-defined]
            default_factory=list, description=USER_ERRORS_DESCRIPTION
        )
        made: type[P] = strawberry.type(cls, description=description)
        return made

    return make


def require_pk(value: strawberry.ID, type_name: str, field: str) -> int:
    pk = parse_pk(value, type_name)
    if pk is None:
        raise NotFound(f"{type_name[0].lower()}{type_name[1:]} not found", field=(field,))
    return pk


def declared_payload(info: Info) -> Any:
    """The payload type the mutation field being resolved declares (a `Payload` subclass)."""
    declared = info.return_type
    if not (isinstance(declared, type) and issubclass(declared, Payload)):
        raise TypeError(f"mutation {info.field_name} must return a Payload, not {declared!r}")
    return declared


async def run_mutation(info: Info, work: Work[T], wrap: Callable[[T, Loaders], P]) -> P:
    """Run `work` in one transaction and `wrap` its result in the payload (`answer`)."""
    viewer = viewer_of(info)
    services = info.context.services
    # the time is read in the transaction
    written = services.run_write(lambda session: work(session, viewer, services.clock.now()))
    return await answer(info, written, wrap)


async def run_order_mutation(info: Info, work: OrderWork[T], wrap: Callable[[T, Loaders], P]) -> P:
    """`run_mutation` for an order's action or outcome: `work` runs in the unit of work the order
    store opens (`OrderStore.unit`), which chooses how its change is written."""
    viewer = viewer_of(info)
    services = info.context.services

    async def written() -> T:
        async with services.orders.unit() as unit:
            return await work(unit, viewer, services.clock.now())

    return await answer(info, written(), wrap)


async def answer(info: Info, written: Awaitable[T], wrap: Callable[[T, Loaders], P]) -> P:
    """The payload: what `written` returns, wrapped by `wrap`.

    A DomainError (the unit of work rolled back) becomes the `userErrors` of the payload type
    this mutation field returns, with its object null; a forbidden operation is a top-level error.
    """
    try:
        value = await written
    except OperationForbidden as exc:
        raise forbidden(str(exc)) from exc
    except DomainError as exc:
        field = ["input", *exc.field] if exc.field else None
        error = UserError(field=field, message=exc.message, code=exc.code)
        failed: P = declared_payload(info)(user_errors=[error])
        return failed
    return wrap(value, info.context.loaders)


# --- inputs ---------------------------------------------------------------------------------


@strawberry.input(description="A new reseller.")
class CreateResellerInput:
    name: str = strawberry.field(description="The reseller's name.")
    email: str = strawberry.field(description="Where the reseller's notifications go.")


@strawberry.input(description="A new customer of a reseller.")
class CreateCustomerInput:
    reseller_id: strawberry.ID = strawberry.field(description="The customer's reseller.")
    name: str = strawberry.field(description="The customer's name.")
    contact_email: str = strawberry.field(description="The contact e-mail.")
    payment_method: PaymentMethod = strawberry.field(
        default=flow.PaymentMethod.AUTOMATIC, description="How the customer pays."
    )
    on_hold: bool = strawberry.field(default=False, description="Whether the account is on hold.")
    requires_verification: bool = strawberry.field(
        default=False, description="Whether the account needs manual verification."
    )
    credit_limit: Decimal = strawberry.field(
        default=Decimal(0), description="Cash/check orders up to this total go on credit."
    )


@strawberry.input(description="A customer's new contact e-mail.")
class UpdateCustomerContactInput:
    customer_id: strawberry.ID = strawberry.field(description="The customer.")
    email: str = strawberry.field(description="The new contact e-mail.")


@strawberry.input(description="One line of a new order.")
class OrderItemInput:
    description: str = strawberry.field(description="What is sold.")
    quantity: int = strawberry.field(description="How many; at least 1.")
    unit_price: Decimal = strawberry.field(description="Price of one; not negative.")


@strawberry.input(description="A new order.")
class PlaceOrderInput:
    customer_id: strawberry.ID = strawberry.field(description="The customer ordering.")
    items: list[OrderItemInput] = strawberry.field(description="At least one line item.")
    type: OrderType = strawberry.field(default=flow.OrderType.SO, description="The order type.")
    currency: str = strawberry.field(default="USD", description="ISO 4217 currency code.")


@strawberry.input(description="What the provisioning platform reports for an order.")
class ReportProvisioningResultInput:
    order_id: strawberry.ID = strawberry.field(description="The order (in PR or LO).")
    outcome: ProvisioningOutcome = strawberry.field(description="What happened.")
    reason: FailureReason | None = strawberry.field(
        default=None, description="Why it failed (required with FAILED)."
    )
    details: str | None = strawberry.field(default=None, description="Details for people.")


@strawberry.input(description="An operator's action on an order.")
class PerformOrderActionInput:
    order_id: strawberry.ID = strawberry.field(description="The order.")
    action: OrderAction = strawberry.field(description="The action.")
    reason: FailureReason | None = strawberry.field(
        default=None, description="With MARK_FAILED: why (default MARKED_FAILED_MANUALLY)."
    )
    comment: str | None = strawberry.field(default=None, description="The operator's comment.")
    expected_version: int | None = strawberry.field(
        default=None, description="Refuse with CONFLICT unless the order is at this version."
    )


@strawberry.input(description="Change a reseller's notification settings; omitted fields stay.")
class UpdateNotificationSettingsInput:
    reseller_id: strawberry.ID = strawberry.field(description="The reseller.")
    notify_reseller: bool | None = strawberry.field(default=None, description="Tell the reseller.")
    notify_customer: bool | None = strawberry.field(default=None, description="Tell the customer.")
    order_notification_template_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description="The template to use; null resets to the built-in default.",
    )


@strawberry.input(description="A new notification template.")
class CreateNotificationTemplateInput:
    name: str = strawberry.field(description="A unique name.")
    subject: str = strawberry.field(description="Jinja subject template.")
    body: str = strawberry.field(description="Jinja plain-text body template.")


@strawberry.input(description="Change a template; omitted fields stay.")
class UpdateNotificationTemplateInput:
    id: strawberry.ID = strawberry.field(description="The template.")
    name: str | None = strawberry.field(default=None, description="A unique name.")
    subject: str | None = strawberry.field(default=None, description="Jinja subject template.")
    body: str | None = strawberry.field(default=None, description="Jinja body template.")


@strawberry.input(description="Resubmit every failed order of an incident.")
class ResubmitIncidentOrdersInput:
    incident_id: strawberry.ID = strawberry.field(description="The incident.")
    comment: str | None = strawberry.field(
        default=None, description="Added to each order's history entry, after the incident."
    )


@strawberry.input(description="Close an incident.")
class ResolveIncidentInput:
    incident_id: strawberry.ID = strawberry.field(description="The incident.")
    comment: str | None = strawberry.field(default=None, description="Why, for the record.")


@strawberry.input(description="Queue a FAILED notification again.")
class RetryNotificationInput:
    id: strawberry.ID = strawberry.field(description="The notification.")


# --- payloads ---------------------------------------------------------------------------------


@payload_type(description="The result of createReseller.")
class CreateResellerPayload(Payload):
    reseller: Reseller | None = strawberry.field(default=None, description="The new reseller.")


@payload_type(description="The result of createCustomer.")
class CreateCustomerPayload(Payload):
    customer: Customer | None = strawberry.field(default=None, description="The new customer.")


@payload_type(description="The result of updateCustomerContact.")
class UpdateCustomerContactPayload(Payload):
    customer: Customer | None = strawberry.field(default=None, description="The customer.")


@payload_type(description="The result of an order mutation.")
class PlaceOrderPayload(Payload):
    order: Order | None = strawberry.field(default=None, description="The order.")


@payload_type(description="The result of reportProvisioningResult.")
class ReportProvisioningResultPayload(Payload):
    order: Order | None = strawberry.field(default=None, description="The order.")


@payload_type(description="The result of performOrderAction.")
class PerformOrderActionPayload(Payload):
    order: Order | None = strawberry.field(default=None, description="The order.")


@payload_type(description="The result of updateNotificationSettings.")
class UpdateNotificationSettingsPayload(Payload):
    notification_settings: NotificationSettings | None = strawberry.field(
        default=None, description="The settings now."
    )


@payload_type(description="The result of a template mutation.")
class CreateNotificationTemplatePayload(Payload):
    notification_template: NotificationTemplate | None = strawberry.field(
        default=None, description="The template."
    )


@payload_type(description="The result of updateNotificationTemplate.")
class UpdateNotificationTemplatePayload(Payload):
    notification_template: NotificationTemplate | None = strawberry.field(
        default=None, description="The template."
    )


@payload_type(description="The result of retryNotification.")
class RetryNotificationPayload(Payload):
    notification: Notification | None = strawberry.field(
        default=None, description="The notification."
    )


@payload_type(description="The result of resubmitIncidentOrders.")
class ResubmitIncidentOrdersPayload(Payload):
    incident: Incident | None = strawberry.field(default=None, description="The incident now.")
    resubmitted: int = strawberry.field(
        default=0, description="Orders moved from PF to PR, each as its own status change."
    )
    skipped: int = strawberry.field(
        default=0, description="Orders of the incident no longer in PF, left as they are."
    )


@payload_type(description="The result of resolveIncident.")
class ResolveIncidentPayload(Payload):
    incident: Incident | None = strawberry.field(default=None, description="The incident now.")


@strawberry.type(
    description="The changes: each takes one `input` and returns a payload with the object "
    "changed, or `userErrors` (then nothing was written)."
)
class Mutation:
    @strawberry.mutation(description="Add a reseller (support only).")
    async def create_reseller(
        self, info: Info, input: Input[CreateResellerInput]
    ) -> CreateResellerPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: orders.create_reseller(
                session, viewer=viewer, name=input.name, email=input.email, now=now
            ),
            wrap=lambda row, loaders: CreateResellerPayload(reseller=Reseller.wrap(row, loaders)),
        )

    @strawberry.mutation(description="Add a customer to a reseller.")
    async def create_customer(
        self, info: Info, input: Input[CreateCustomerInput]
    ) -> CreateCustomerPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: orders.create_customer(
                session,
                viewer=viewer,
                reseller_id=require_pk(input.reseller_id, "Reseller", "resellerId"),
                name=input.name,
                contact_email=input.contact_email,
                payment_method=flow.PaymentMethod(input.payment_method),
                on_hold=input.on_hold,
                requires_verification=input.requires_verification,
                credit_limit=input.credit_limit,
                now=now,
            ),
            wrap=lambda row, loaders: CreateCustomerPayload(customer=Customer.wrap(row, loaders)),
        )

    @strawberry.mutation(description="Change a customer's contact e-mail.")
    async def update_customer_contact(
        self, info: Info, input: Input[UpdateCustomerContactInput]
    ) -> UpdateCustomerContactPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: orders.update_customer_contact(
                session,
                viewer=viewer,
                customer_id=require_pk(input.customer_id, "Customer", "customerId"),
                email=input.email,
            ),
            wrap=lambda row, loaders: UpdateCustomerContactPayload(
                customer=Customer.wrap(row, loaders)
            ),
        )

    @strawberry.mutation(description="Place an order; the automatic checks decide its status.")
    async def place_order(self, info: Info, input: Input[PlaceOrderInput]) -> PlaceOrderPayload:
        items = [
            orders.ItemInput(
                description=i.description, quantity=i.quantity, unit_price=i.unit_price
            )
            for i in input.items
        ]
        return await run_mutation(
            info,
            work=lambda session, viewer, now: orders.place_order(
                session,
                viewer=viewer,
                customer_id=require_pk(input.customer_id, "Customer", "customerId"),
                order_type=flow.OrderType(input.type),
                currency=input.currency,
                items=items,
                config=info.context.services.desk,
                now=now,
            ),
            wrap=lambda row, loaders: PlaceOrderPayload(order=Order.wrap(row, loaders)),
        )

    @strawberry.mutation(description="The provisioning platform reports an outcome.")
    async def report_provisioning_result(
        self, info: Info, input: Input[ReportProvisioningResultInput]
    ) -> ReportProvisioningResultPayload:
        return await run_order_mutation(
            info,
            work=lambda unit, viewer, now: orders.report_provisioning_result(
                unit,
                viewer=viewer,
                order_id=require_pk(input.order_id, "Order", "orderId"),
                outcome=flow.ProvisioningOutcome(input.outcome),
                reason=flow.FailureReason(input.reason) if input.reason else None,
                details=input.details,
                config=info.context.services.desk,
                now=now,
            ),
            wrap=lambda row, loaders: ReportProvisioningResultPayload(
                order=Order.wrap(row, loaders)
            ),
        )

    @strawberry.mutation(description="Move an order on with an action (see orderStatuses).")
    async def perform_order_action(
        self, info: Info, input: Input[PerformOrderActionInput]
    ) -> PerformOrderActionPayload:
        return await run_order_mutation(
            info,
            work=lambda unit, viewer, now: orders.perform_order_action(
                unit,
                viewer=viewer,
                order_id=require_pk(input.order_id, "Order", "orderId"),
                action=flow.Action(input.action),
                reason=flow.FailureReason(input.reason) if input.reason else None,
                comment=input.comment,
                expected_version=input.expected_version,
                config=info.context.services.desk,
                now=now,
            ),
            wrap=lambda row, loaders: PerformOrderActionPayload(order=Order.wrap(row, loaders)),
        )

    @strawberry.mutation(description="Change who a reseller's failed-order notifications go to.")
    async def update_notification_settings(
        self, info: Info, input: Input[UpdateNotificationSettingsInput]
    ) -> UpdateNotificationSettingsPayload:
        template_given = input.order_notification_template_id is not strawberry.UNSET

        async def work(
            session: AsyncSession, viewer: Viewer, now: datetime
        ) -> tuple[nm.NotificationSettings, nm.NotificationTemplate]:
            template_id = None
            if template_given and input.order_notification_template_id is not None:
                template_id = require_pk(
                    input.order_notification_template_id,
                    "NotificationTemplate",
                    "orderNotificationTemplateId",
                )
            return await notifications.update_settings(
                session,
                viewer=viewer,
                reseller_id=require_pk(input.reseller_id, "Reseller", "resellerId"),
                notify_reseller=input.notify_reseller,
                notify_customer=input.notify_customer,
                template_id=template_id,
                template_given=template_given,
                now=now,
            )

        def wrap(
            rows: tuple[nm.NotificationSettings, nm.NotificationTemplate], loaders: Loaders
        ) -> UpdateNotificationSettingsPayload:
            settings, template = rows
            return UpdateNotificationSettingsPayload(
                notification_settings=NotificationSettings.wrap(settings, template, loaders)
            )

        return await run_mutation(info, work=work, wrap=wrap)

    @strawberry.mutation(description="Add a notification template (support only).")
    async def create_notification_template(
        self, info: Info, input: Input[CreateNotificationTemplateInput]
    ) -> CreateNotificationTemplatePayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: notifications.create_template(
                session,
                viewer=viewer,
                name=input.name,
                subject=input.subject,
                body=input.body,
                now=now,
            ),
            wrap=lambda row, _: CreateNotificationTemplatePayload(
                notification_template=NotificationTemplate.wrap(row)
            ),
        )

    @strawberry.mutation(description="Edit a notification template (support only).")
    async def update_notification_template(
        self, info: Info, input: Input[UpdateNotificationTemplateInput]
    ) -> UpdateNotificationTemplatePayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: notifications.update_template(
                session,
                viewer=viewer,
                template_id=require_pk(input.id, "NotificationTemplate", "id"),
                name=input.name,
                subject=input.subject,
                body=input.body,
                now=now,
            ),
            wrap=lambda row, _: UpdateNotificationTemplatePayload(
                notification_template=NotificationTemplate.wrap(row)
            ),
        )

    @strawberry.mutation(description="Queue a FAILED notification again (support only).")
    async def retry_notification(
        self, info: Info, input: Input[RetryNotificationInput]
    ) -> RetryNotificationPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: notifications.retry_notification(
                session,
                viewer=viewer,
                notification_id=require_pk(input.id, "Notification", "id"),
                now=now,
            ),
            wrap=lambda row, loaders: RetryNotificationPayload(
                notification=Notification.wrap(row, loaders)
            ),
        )

    @strawberry.mutation(
        description="Resubmit every order of an incident still in PF (support only); orders "
        "changed meanwhile are skipped, and a second call resubmits nothing."
    )
    async def resubmit_incident_orders(
        self, info: Info, input: Input[ResubmitIncidentOrdersInput]
    ) -> ResubmitIncidentOrdersPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: incidents.resubmit_incident_orders(
                session,
                viewer=viewer,
                incident_id=require_pk(input.incident_id, "Incident", "incidentId"),
                comment=input.comment,
                now=now,
            ),
            wrap=lambda done, loaders: ResubmitIncidentOrdersPayload(
                incident=Incident.wrap(done.incident, loaders),
                resubmitted=done.resubmitted,
                skipped=done.skipped,
            ),
        )

    @strawberry.mutation(description="Close an open incident (support only).")
    async def resolve_incident(
        self, info: Info, input: Input[ResolveIncidentInput]
    ) -> ResolveIncidentPayload:
        return await run_mutation(
            info,
            work=lambda session, viewer, now: incidents.resolve_incident(
                session,
                viewer=viewer,
                incident_id=require_pk(input.incident_id, "Incident", "incidentId"),
                comment=input.comment,
                now=now,
            ),
            wrap=lambda row, loaders: ResolveIncidentPayload(incident=Incident.wrap(row, loaders)),
        )
