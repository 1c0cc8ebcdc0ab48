"""`OrderStatusChange.actor` for the viewer reading it: app/access/actors.py with the names
loaded by the request's (or the event batch's) loaders."""

from __future__ import annotations

from app.access import actors, policy
from app.access.viewer import Viewer
from app.graphql.loaders import Loaders


async def actor_for(viewer: Viewer, record: str | None, loaders: Loaders) -> str | None:
    """The actor as `viewer` is shown it: a role and a display name, never an internal id
    (support also sees the record)."""
    actor = actors.parse_actor(record)
    name = None
    if actor is not None and actor.customer_id is not None:
        customer = await loaders.customer.load(actor.customer_id)
        if customer is not None and policy.may_see_customer(viewer, customer):
            name = customer.name
    elif actor is not None and actor.reseller_id is not None:
        if policy.may_see_reseller(viewer, actor.reseller_id):
            reseller = await loaders.reseller.load(actor.reseller_id)
            name = reseller.name if reseller is not None else None
    return actors.shown_actor(viewer, record, name=name)
