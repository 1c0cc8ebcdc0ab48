"""Who did it: the actor of an order's status change, as each viewer is shown it (SPEC 8).

The event log records the actor as `Viewer.actor` writes it, with internal ids:
`RESELLER reseller:1 token:2`, `CUSTOMER customer:7 token:9`, `SUPPORT token:3`, `SYSTEM token:4`,
or `SYSTEM` for the process itself. That record stays as it is (old rows included), for support
and audits. Resellers and customers are shown a role and a display name instead, made when the
history or a subscription is read, so rows written before this rule are covered too:

    Reseller Northwind Cloud     Customer Acme Corp     Support
    Provisioning platform        OrderPulse (the process itself)

A name is shown only to a viewer who may see that reseller or customer (`policy`); otherwise the
role alone. Support sees the same display followed by the record in brackets:
`Reseller Northwind Cloud (RESELLER reseller:1 token:2)`: which token acted, for audits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.access.viewer import Viewer
from app.orders.flow import Role

ROLE_NAMES: dict[Role, str] = {
    Role.SUPPORT: "Support",
    Role.SYSTEM: "Provisioning platform",
    Role.RESELLER: "Reseller",
    Role.CUSTOMER: "Customer",
}
PROCESS_NAME = "OrderPulse"
"""The actor of what the process does by itself (SYSTEM with no token)."""

_RECORD = re.compile(
    r"(?P<role>[A-Z]+)(?: reseller:(?P<reseller>\d+)| customer:(?P<customer>\d+))?"
    r"(?: token:(?P<token>\d+))?"
)


@dataclass(frozen=True)
class ActorRecord:
    """An actor record of the event log, read back."""

    role: Role
    reseller_id: int | None = None
    customer_id: int | None = None
    token_id: int | None = None


def parse_actor(record: str | None) -> ActorRecord | None:
    """The record `Viewer.actor` wrote, or None if `record` is not one."""
    match = _RECORD.fullmatch(record or "")
    if match is None or match["role"] not in Role.__members__:
        return None
    reseller, customer, token = match["reseller"], match["customer"], match["token"]
    return ActorRecord(
        role=Role(match["role"]),
        reseller_id=int(reseller) if reseller else None,
        customer_id=int(customer) if customer else None,
        token_id=int(token) if token else None,
    )


def display_name(actor: ActorRecord, *, name: str | None) -> str:
    """ "Reseller Northwind Cloud", "Support", ...: the role, and the tenant's `name` if given."""
    if actor.role is Role.SYSTEM and actor.token_id is None:
        return PROCESS_NAME
    role = ROLE_NAMES[actor.role]
    return f"{role} {name}" if name and actor.role in (Role.RESELLER, Role.CUSTOMER) else role


def shown_actor(viewer: Viewer, record: str | None, *, name: str | None) -> str | None:
    """The actor `record` as `viewer` is shown it; `name`: the reseller's or customer's name
    it names, if this viewer may see it (None otherwise). A record that cannot be read is shown
    to support only."""
    actor = parse_actor(record)
    if actor is None:
        return record if viewer.role is Role.SUPPORT else None
    shown = display_name(actor, name=name)
    return f"{shown} ({record})" if viewer.role is Role.SUPPORT else shown
