"""The one place that decides what a viewer may see and do.

Queries, counts, subscriptions and mutations all ask here; no tenant rule lives anywhere else.
Each `*_scope` returns a SQL condition to add to a query (True: everything); each `may_see_*`
answers the same question for a row already in memory (the fan-out uses those).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, true
from sqlmodel import col

from app.access.viewer import Viewer
from app.errors import OperationForbidden
from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification
from app.orders.flow import Role
from app.orders.models import Customer, Reseller, SalesOrder


class Operation:
    """Role lists for whole operations; a role not listed gets a top-level FORBIDDEN."""

    CREATE_RESELLER = frozenset({Role.SUPPORT})
    LIST_RESELLERS = frozenset({Role.SUPPORT, Role.RESELLER, Role.CUSTOMER, Role.SYSTEM})
    CREATE_CUSTOMER = frozenset({Role.SUPPORT, Role.RESELLER})
    UPDATE_CUSTOMER_CONTACT = frozenset({Role.SUPPORT, Role.RESELLER})
    PLACE_ORDER = frozenset({Role.SUPPORT, Role.RESELLER, Role.CUSTOMER})
    REPORT_PROVISIONING = frozenset({Role.SYSTEM, Role.SUPPORT})
    ORDER_ACTION = frozenset({Role.SUPPORT, Role.RESELLER, Role.CUSTOMER})
    NOTIFICATION_SETTINGS = frozenset({Role.SUPPORT, Role.RESELLER})
    LIST_TEMPLATES = frozenset({Role.SUPPORT, Role.RESELLER})
    MANAGE_TEMPLATES = frozenset({Role.SUPPORT})
    RETRY_NOTIFICATION = frozenset({Role.SUPPORT})
    READ_NOTIFICATIONS = frozenset({Role.SUPPORT, Role.RESELLER, Role.CUSTOMER})


def require(viewer: Viewer, allowed: frozenset[Role]) -> None:
    if viewer.role not in allowed:
        raise OperationForbidden(f"the {viewer.role.value} role may not do this")


# --- SQL scopes --------------------------------------------------------------------------------


def reseller_scope(viewer: Viewer) -> ColumnElement[bool]:
    if viewer.role in (Role.SUPPORT, Role.SYSTEM):
        return true()
    return col(Reseller.id) == viewer.reseller_id


def customer_scope(viewer: Viewer) -> ColumnElement[bool]:
    if viewer.role in (Role.SUPPORT, Role.SYSTEM):
        return true()
    if viewer.role is Role.RESELLER:
        return col(Customer.reseller_id) == viewer.reseller_id
    return col(Customer.id) == viewer.customer_id


def _tenant_rows(viewer: Viewer, reseller_id: Any, customer_id: Any) -> ColumnElement[bool]:
    """Rows of an order's tenant: everything, the reseller's, or the customer's."""
    if viewer.role in (Role.SUPPORT, Role.SYSTEM):
        return true()
    if viewer.role is Role.RESELLER:
        return col(reseller_id) == viewer.reseller_id
    return col(customer_id) == viewer.customer_id


def _addressed_rows(
    viewer: Viewer, reseller_id: Any, customer_id: Any, recipient_role: Any
) -> ColumnElement[bool]:
    """Notifications addressed to the viewer (a reseller: to it or to its customers)."""
    if viewer.role is Role.SUPPORT:
        return true()
    if viewer.role is Role.RESELLER:
        return and_(
            col(reseller_id) == viewer.reseller_id,
            col(recipient_role).in_([Role.RESELLER.value, Role.CUSTOMER.value]),
        )
    if viewer.role is Role.CUSTOMER:
        return and_(
            col(customer_id) == viewer.customer_id,
            col(recipient_role) == Role.CUSTOMER.value,
        )
    return false()


def order_scope(viewer: Viewer) -> ColumnElement[bool]:
    return _tenant_rows(viewer, SalesOrder.reseller_id, SalesOrder.customer_id)


def notification_scope(viewer: Viewer) -> ColumnElement[bool]:
    return _addressed_rows(
        viewer, Notification.reseller_id, Notification.customer_id, Notification.recipient_role
    )


def event_scope(viewer: Viewer, topic: str) -> ColumnElement[bool]:
    """Which rows of the event log the viewer may replay, for one topic."""
    if topic == TOPIC_ORDER_STATUS:
        return _tenant_rows(viewer, Event.reseller_id, Event.customer_id)
    return _addressed_rows(viewer, Event.reseller_id, Event.customer_id, Event.recipient_role)


# --- In-memory checks (same rules as above) -----------------------------------------------------


def may_see_order(viewer: Viewer, *, reseller_id: int, customer_id: int) -> bool:
    if viewer.role in (Role.SUPPORT, Role.SYSTEM):
        return True
    if viewer.role is Role.RESELLER:
        return reseller_id == viewer.reseller_id
    return customer_id == viewer.customer_id


def may_see_customer(viewer: Viewer, customer: Customer) -> bool:
    if viewer.role in (Role.SUPPORT, Role.SYSTEM):
        return True
    if viewer.role is Role.RESELLER:
        return customer.reseller_id == viewer.reseller_id
    return customer.id == viewer.customer_id


def may_see_reseller(viewer: Viewer, reseller_id: int) -> bool:
    return viewer.role in (Role.SUPPORT, Role.SYSTEM) or viewer.reseller_id == reseller_id


def may_see_reseller_contact(viewer: Viewer, reseller_id: int) -> bool:
    """A customer sees its reseller's name only; support and the reseller itself see its e-mail."""
    return viewer.role in (Role.SUPPORT, Role.SYSTEM) or (
        viewer.role is Role.RESELLER and viewer.reseller_id == reseller_id
    )


def may_see_notification(
    viewer: Viewer, *, reseller_id: int, customer_id: int, recipient_role: str
) -> bool:
    if viewer.role is Role.SUPPORT:
        return True
    if viewer.role is Role.RESELLER:
        return reseller_id == viewer.reseller_id and recipient_role in (
            Role.RESELLER.value,
            Role.CUSTOMER.value,
        )
    if viewer.role is Role.CUSTOMER:
        return customer_id == viewer.customer_id and recipient_role == Role.CUSTOMER.value
    return False


def may_see_event(viewer: Viewer, event: Event) -> bool:
    if event.topic == TOPIC_ORDER_STATUS:
        return may_see_order(viewer, reseller_id=event.reseller_id, customer_id=event.customer_id)
    if event.topic == TOPIC_NOTIFICATION:
        return may_see_notification(
            viewer,
            reseller_id=event.reseller_id,
            customer_id=event.customer_id,
            recipient_role=event.recipient_role or "",
        )
    return False


def may_manage_reseller(viewer: Viewer, reseller_id: int) -> bool:
    """Support manages every reseller; a reseller manages itself."""
    return viewer.role is Role.SUPPORT or (
        viewer.role is Role.RESELLER and viewer.reseller_id == reseller_id
    )
