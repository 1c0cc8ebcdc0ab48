"""The one place that decides what a viewer may see and do.

Queries, counts, subscriptions and mutations all ask here; no tenant rule lives anywhere else.
Each visibility rule is written once, as data (`Rule`: for each role, everything, nothing, or the
conditions a row must meet), and bound to a table by a `Scope`. From that one definition come both
forms the code needs: `Scope.sql` (a condition to add to a query; True: everything) and
`Scope.allows` (the same answer for a row already in memory; the fan-out uses it). A rule that
has no entry for a role, and an event topic that has no rule, let the viewer see nothing, in
both forms. tests/access/test_policy_forms.py runs every rule, role and topic through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, true
from sqlmodel import SQLModel, col

from app.access.viewer import Viewer
from app.errors import OperationForbidden
from app.events.models import (
    TOPIC_INCIDENT,
    TOPIC_NOTIFICATION,
    TOPIC_ORDER_STATUS,
    Event,
    EventTenancy,
)
from app.incidents.models import Incident
from app.notifications.models import Notification, RecipientRole
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
    # Incidents (SPEC 10): support lists, resubmits, resolves and follows them; a reseller or
    # customer sees one only through `Order.incident`, counted over ORDERS' scope.
    MANAGE_INCIDENTS = frozenset({Role.SUPPORT})


def require(viewer: Viewer, allowed: frozenset[Role]) -> None:
    if viewer.role not in allowed:
        raise OperationForbidden(f"the {viewer.role.value} role may not do this")


# --- the rules, written once --------------------------------------------------------------------


@dataclass(frozen=True)
class SameTenant:
    """The row's `field` is the viewer's own `field` (`reseller_id` or `customer_id`).

    A viewer without that id (e.g. support, for `customer_id`) matches no row.
    """

    field: str


@dataclass(frozen=True)
class OneOf:
    """The row's `field` is one of `values`."""

    field: str
    values: frozenset[str]


Condition = SameTenant | OneOf
Conditions = tuple[Condition, ...]
EVERYTHING: Conditions = ()
"""No condition: every row."""

Rule = Mapping[Role, Conditions]
"""For each role, the conditions a visible row meets (all of them); other roles see nothing."""

TENANT_RULE: Rule = {
    Role.SUPPORT: EVERYTHING,
    Role.SYSTEM: EVERYTHING,
    Role.RESELLER: (SameTenant("reseller_id"),),
    Role.CUSTOMER: (SameTenant("customer_id"),),
}
"""An order's tenant: support and the platform see all, a reseller its own, a customer its own."""

RESELLER_RULE: Rule = {
    Role.SUPPORT: EVERYTHING,
    Role.SYSTEM: EVERYTHING,
    Role.RESELLER: (SameTenant("reseller_id"),),
    Role.CUSTOMER: (SameTenant("reseller_id"),),
}
"""Resellers: a customer sees its own reseller (its name; see RESELLER_CONTACT_RULE)."""

RESELLER_CONTACT_RULE: Rule = {
    Role.SUPPORT: EVERYTHING,
    Role.SYSTEM: EVERYTHING,
    Role.RESELLER: (SameTenant("reseller_id"),),
}
"""A reseller's e-mail: support, the platform and the reseller itself; not its customers."""

MANAGE_RESELLER_RULE: Rule = {
    Role.SUPPORT: EVERYTHING,
    Role.RESELLER: (SameTenant("reseller_id"),),
}
"""Support manages every reseller; a reseller manages itself."""

ADDRESSEE_RULE: Rule = {
    Role.SUPPORT: EVERYTHING,
    Role.RESELLER: (
        SameTenant("reseller_id"),
        OneOf("recipient_role", frozenset({RecipientRole.RESELLER, RecipientRole.CUSTOMER})),
    ),
    Role.CUSTOMER: (
        SameTenant("customer_id"),
        OneOf("recipient_role", frozenset({RecipientRole.CUSTOMER})),
    ),
}
"""Notifications addressed to the viewer (a reseller: to it or to its customers)."""

SUPPORT_RULE: Rule = {Role.SUPPORT: EVERYTHING}
"""What only support sees: incidents as a whole (their changes on `incidentChanged`)."""

EVENT_RULES: Mapping[str, Rule] = {
    TOPIC_ORDER_STATUS: TENANT_RULE,
    TOPIC_NOTIFICATION: ADDRESSEE_RULE,
    TOPIC_INCIDENT: SUPPORT_RULE,
}
"""The rule of each topic of the event log; a topic not listed is seen by nobody."""

NOBODY: Rule = {}


# --- a rule bound to a table: both forms from one definition -------------------------------------


@dataclass(frozen=True)
class Scope:
    """`rule` over the rows of `model`, whose attribute `columns[field]` holds each rule field."""

    rule: Rule
    model: type[SQLModel]
    columns: Mapping[str, str]

    def sql(self, viewer: Viewer) -> ColumnElement[bool]:
        """The rule as a SQL condition on `model` (True: every row)."""
        conditions = self.rule.get(viewer.role)
        if conditions is None:
            return false()
        clauses: list[ColumnElement[bool]] = []
        for condition in conditions:
            column = col(getattr(self.model, self.columns[condition.field]))
            if isinstance(condition, SameTenant):
                mine = getattr(viewer, condition.field)
                if mine is None:
                    return false()
                clauses.append(column == mine)
            else:
                clauses.append(column.in_(sorted(str(value) for value in condition.values)))
        return and_(*clauses) if clauses else true()

    def allows(self, viewer: Viewer, values: Mapping[str, Any]) -> bool:
        """The rule in memory, for a row whose rule fields are given by name in `values`."""
        conditions = self.rule.get(viewer.role)
        if conditions is None:
            return False
        for condition in conditions:
            value = values[condition.field]
            if isinstance(condition, SameTenant):
                mine = getattr(viewer, condition.field)
                if mine is None or value != mine:
                    return False
            elif value not in condition.values:
                return False
        return True

    def allows_row(self, viewer: Viewer, row: SQLModel | EventTenancy) -> bool:
        """`allows` for a row of `model` (or an object with its rule columns)."""
        return self.allows(
            viewer, {field: getattr(row, name) for field, name in self.columns.items()}
        )


ORDERS = Scope(
    TENANT_RULE, SalesOrder, {"reseller_id": "reseller_id", "customer_id": "customer_id"}
)
CUSTOMERS = Scope(TENANT_RULE, Customer, {"reseller_id": "reseller_id", "customer_id": "id"})
RESELLERS = Scope(RESELLER_RULE, Reseller, {"reseller_id": "id"})
RESELLER_CONTACTS = Scope(RESELLER_CONTACT_RULE, Reseller, {"reseller_id": "id"})
MANAGED_RESELLERS = Scope(MANAGE_RESELLER_RULE, Reseller, {"reseller_id": "id"})
NOTIFICATIONS = Scope(
    ADDRESSEE_RULE,
    Notification,
    {
        "reseller_id": "reseller_id",
        "customer_id": "customer_id",
        "recipient_role": "recipient_role",
    },
)
INCIDENTS = Scope(SUPPORT_RULE, Incident, {})
"""Incidents as a whole (`incidents`, `node`): support only. Others reach one through
`Order.incident`, counted over ORDERS' scope."""
_EVENT_COLUMNS = {
    "reseller_id": "reseller_id",
    "customer_id": "customer_id",
    "recipient_role": "recipient_role",
}


def event_scope_of(topic: str) -> Scope:
    """The scope of one topic of the event log (nobody's, for a topic without a rule)."""
    return Scope(EVENT_RULES.get(topic, NOBODY), Event, _EVENT_COLUMNS)


# --- the questions the rest of the code asks ----------------------------------------------------


def reseller_scope(viewer: Viewer) -> ColumnElement[bool]:
    return RESELLERS.sql(viewer)


def customer_scope(viewer: Viewer) -> ColumnElement[bool]:
    return CUSTOMERS.sql(viewer)


def order_scope(viewer: Viewer) -> ColumnElement[bool]:
    return ORDERS.sql(viewer)


def notification_scope(viewer: Viewer) -> ColumnElement[bool]:
    return NOTIFICATIONS.sql(viewer)


def incident_scope(viewer: Viewer) -> ColumnElement[bool]:
    return INCIDENTS.sql(viewer)


def event_scope(viewer: Viewer, topic: str) -> ColumnElement[bool]:
    """Which rows of the event log the viewer may replay, for one topic."""
    return event_scope_of(topic).sql(viewer)


def may_see_order(viewer: Viewer, *, reseller_id: int, customer_id: int) -> bool:
    return ORDERS.allows(viewer, {"reseller_id": reseller_id, "customer_id": customer_id})


def may_see_customer(viewer: Viewer, customer: Customer) -> bool:
    return CUSTOMERS.allows_row(viewer, customer)


def may_see_reseller(viewer: Viewer, reseller_id: int) -> bool:
    return RESELLERS.allows(viewer, {"reseller_id": reseller_id})


def may_see_reseller_contact(viewer: Viewer, reseller_id: int) -> bool:
    """A customer sees its reseller's name only; support and the reseller itself see its e-mail."""
    return RESELLER_CONTACTS.allows(viewer, {"reseller_id": reseller_id})


def may_see_notification(
    viewer: Viewer, *, reseller_id: int, customer_id: int, recipient_role: str
) -> bool:
    return NOTIFICATIONS.allows(
        viewer,
        {"reseller_id": reseller_id, "customer_id": customer_id, "recipient_role": recipient_role},
    )


def may_see_event(viewer: Viewer, event: Event | EventTenancy) -> bool:
    return event_scope_of(event.topic).allows_row(viewer, event)


def may_manage_reseller(viewer: Viewer, reseller_id: int) -> bool:
    """Support manages every reseller; a reseller manages itself."""
    return MANAGED_RESELLERS.allows(viewer, {"reseller_id": reseller_id})
