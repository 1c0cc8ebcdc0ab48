"""Mutation root: parse input, call one domain function in one transaction, map its errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.viewer import Viewer as DomainViewer
from app.errors import DomainError, NotFound, OperationForbidden
from app.graphql.context import Info, forbidden, viewer_of
from app.graphql.ids import parse_pk
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
from app.notifications import models as nm
from app.notifications import service as notifications
from app.orders import flow
from app.orders import service as orders

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    value: T | None
    errors: list[UserError]


def require_pk(value: strawberry.ID, type_name: str, field: str) -> int:
    pk = parse_pk(value, type_name)
    if pk is None:
        raise NotFound(f"{type_name[0].lower()}{type_name[1:]} not found", field=(field,))
    return pk


async def run_mutation(
    info: Info, work: Callable[[AsyncSession, DomainViewer, datetime], Awaitable[T]]
) -> Outcome[T]:
    """Run `work` in one transaction; a DomainError rolls it back and becomes userErrors."""
    viewer = viewer_of(info)
    services = info.context.services
    try:
        async with services.transaction() as session:
            value = await work(session, viewer, services.clock.now())
    except OperationForbidden as exc:
        raise forbidden(str(exc)) from exc
    except DomainError as exc:
        field = ["input", *exc.field] if exc.field else None
        return Outcome(None, [UserError(field=field, message=exc.message, code=exc.code)])
    return Outcome(value, [])


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


@strawberry.input(description="Queue a FAILED notification again.")
class RetryNotificationInput:
    id: strawberry.ID = strawberry.field(description="The notification.")


# --- payloads ---------------------------------------------------------------------------------


@strawberry.type(description="The result of createReseller.")
class CreateResellerPayload:
    reseller: Reseller | None = strawberry.field(description="The new reseller.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of createCustomer.")
class CreateCustomerPayload:
    customer: Customer | None = strawberry.field(description="The new customer.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of updateCustomerContact.")
class UpdateCustomerContactPayload:
    customer: Customer | None = strawberry.field(description="The customer.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of an order mutation.")
class PlaceOrderPayload:
    order: Order | None = strawberry.field(description="The order.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of reportProvisioningResult.")
class ReportProvisioningResultPayload:
    order: Order | None = strawberry.field(description="The order.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of performOrderAction.")
class PerformOrderActionPayload:
    order: Order | None = strawberry.field(description="The order.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of updateNotificationSettings.")
class UpdateNotificationSettingsPayload:
    notification_settings: NotificationSettings | None = strawberry.field(
        description="The settings now."
    )
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of a template mutation.")
class CreateNotificationTemplatePayload:
    notification_template: NotificationTemplate | None = strawberry.field(
        description="The template."
    )
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of updateNotificationTemplate.")
class UpdateNotificationTemplatePayload:
    notification_template: NotificationTemplate | None = strawberry.field(
        description="The template."
    )
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type(description="The result of retryNotification.")
class RetryNotificationPayload:
    notification: Notification | None = strawberry.field(description="The notification.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was written.")


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Add a reseller (support only).")
    async def create_reseller(
        self, info: Info, input: CreateResellerInput
    ) -> CreateResellerPayload:
        result = await run_mutation(
            info,
            lambda s, v, now: orders.create_reseller(
                s, viewer=v, name=input.name, email=input.email, now=now
            ),
        )
        loaders = info.context.loaders
        return CreateResellerPayload(
            reseller=Reseller.wrap(result.value, loaders) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Add a customer to a reseller.")
    async def create_customer(
        self, info: Info, input: CreateCustomerInput
    ) -> CreateCustomerPayload:
        async def work(s: AsyncSession, v: DomainViewer, now: datetime) -> object:
            return await orders.create_customer(
                s,
                viewer=v,
                reseller_id=require_pk(input.reseller_id, "Reseller", "resellerId"),
                name=input.name,
                contact_email=input.contact_email,
                payment_method=flow.PaymentMethod(input.payment_method),
                on_hold=input.on_hold,
                requires_verification=input.requires_verification,
                credit_limit=input.credit_limit,
                now=now,
            )

        result = await run_mutation(info, work)
        return CreateCustomerPayload(
            customer=Customer.wrap(result.value, info.context.loaders) if result.value else None,  # type: ignore[arg-type]
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Change a customer's contact e-mail.")
    async def update_customer_contact(
        self, info: Info, input: UpdateCustomerContactInput
    ) -> UpdateCustomerContactPayload:
        result = await run_mutation(
            info,
            lambda s, v, now: orders.update_customer_contact(
                s,
                viewer=v,
                customer_id=require_pk(input.customer_id, "Customer", "customerId"),
                email=input.email,
            ),
        )
        return UpdateCustomerContactPayload(
            customer=Customer.wrap(result.value, info.context.loaders) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Place an order; the automatic checks decide its status.")
    async def place_order(self, info: Info, input: PlaceOrderInput) -> PlaceOrderPayload:
        items = [
            orders.ItemInput(
                description=i.description, quantity=i.quantity, unit_price=i.unit_price
            )
            for i in input.items
        ]
        result = await run_mutation(
            info,
            lambda s, v, now: orders.place_order(
                s,
                viewer=v,
                customer_id=require_pk(input.customer_id, "Customer", "customerId"),
                order_type=flow.OrderType(input.type),
                currency=input.currency,
                items=items,
                config=info.context.services.desk,
                now=now,
            ),
        )
        return PlaceOrderPayload(
            order=Order.wrap(result.value, info.context.loaders) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="The provisioning platform reports an outcome.")
    async def report_provisioning_result(
        self, info: Info, input: ReportProvisioningResultInput
    ) -> ReportProvisioningResultPayload:
        result = await run_mutation(
            info,
            lambda s, v, now: orders.report_provisioning_result(
                s,
                viewer=v,
                order_id=require_pk(input.order_id, "Order", "orderId"),
                outcome=flow.Outcome(input.outcome),
                reason=flow.FailureReason(input.reason) if input.reason else None,
                details=input.details,
                config=info.context.services.desk,
                now=now,
            ),
        )
        return ReportProvisioningResultPayload(
            order=Order.wrap(result.value, info.context.loaders) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Move an order on with an action (see orderStatuses).")
    async def perform_order_action(
        self, info: Info, input: PerformOrderActionInput
    ) -> PerformOrderActionPayload:
        result = await run_mutation(
            info,
            lambda s, v, now: orders.perform_order_action(
                s,
                viewer=v,
                order_id=require_pk(input.order_id, "Order", "orderId"),
                action=flow.Action(input.action),
                reason=flow.FailureReason(input.reason) if input.reason else None,
                comment=input.comment,
                expected_version=input.expected_version,
                config=info.context.services.desk,
                now=now,
            ),
        )
        return PerformOrderActionPayload(
            order=Order.wrap(result.value, info.context.loaders) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Change who a reseller's failed-order notifications go to.")
    async def update_notification_settings(
        self, info: Info, input: UpdateNotificationSettingsInput
    ) -> UpdateNotificationSettingsPayload:
        template_given = input.order_notification_template_id is not strawberry.UNSET

        async def work(
            s: AsyncSession, v: DomainViewer, now: datetime
        ) -> tuple[nm.NotificationSettings, nm.NotificationTemplate]:
            template_id = None
            if template_given and input.order_notification_template_id is not None:
                template_id = require_pk(
                    input.order_notification_template_id,
                    "NotificationTemplate",
                    "orderNotificationTemplateId",
                )
            return await notifications.update_settings(
                s,
                viewer=v,
                reseller_id=require_pk(input.reseller_id, "Reseller", "resellerId"),
                notify_reseller=input.notify_reseller,
                notify_customer=input.notify_customer,
                template_id=template_id,
                template_given=template_given,
                now=now,
            )

        result = await run_mutation(info, work)
        settings = None
        if result.value is not None:
            row, template = result.value
            settings = NotificationSettings(
                settings=row, template_row=template, loaders=info.context.loaders
            )
        return UpdateNotificationSettingsPayload(
            notification_settings=settings, user_errors=result.errors
        )

    @strawberry.mutation(description="Add a notification template (support only).")
    async def create_notification_template(
        self, info: Info, input: CreateNotificationTemplateInput
    ) -> CreateNotificationTemplatePayload:
        result = await run_mutation(
            info,
            lambda s, v, now: notifications.create_template(
                s, viewer=v, name=input.name, subject=input.subject, body=input.body, now=now
            ),
        )
        return CreateNotificationTemplatePayload(
            notification_template=NotificationTemplate.wrap(result.value) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Edit a notification template (support only).")
    async def update_notification_template(
        self, info: Info, input: UpdateNotificationTemplateInput
    ) -> UpdateNotificationTemplatePayload:
        result = await run_mutation(
            info,
            lambda s, v, now: notifications.update_template(
                s,
                viewer=v,
                template_id=require_pk(input.id, "NotificationTemplate", "id"),
                name=input.name,
                subject=input.subject,
                body=input.body,
                now=now,
            ),
        )
        return UpdateNotificationTemplatePayload(
            notification_template=NotificationTemplate.wrap(result.value) if result.value else None,
            user_errors=result.errors,
        )

    @strawberry.mutation(description="Queue a FAILED notification again (support only).")
    async def retry_notification(
        self, info: Info, input: RetryNotificationInput
    ) -> RetryNotificationPayload:
        result = await run_mutation(
            info,
            lambda s, v, now: notifications.retry_notification(
                s,
                viewer=v,
                notification_id=require_pk(input.id, "Notification", "id"),
                now=now,
            ),
        )
        return RetryNotificationPayload(
            notification=Notification.wrap(result.value, info.context.loaders)
            if result.value
            else None,
            user_errors=result.errors,
        )
