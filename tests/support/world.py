"""The tenants most tests need: two resellers and three customers, with a viewer and token each.

Reseller A has customers A1 and A2; reseller B has customer B1. Viewers and tokens are named
"support", "system", "reseller a", "reseller b", "customer a1", "customer a2" and "customer b1".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.access.viewer import Viewer
from app.orders.flow import Role
from app.orders.models import Customer, Reseller
from tests.support.api import Factory


@dataclass
class World:
    reseller_a: Reseller
    reseller_b: Reseller
    customer_a1: Customer
    customer_a2: Customer
    customer_b1: Customer
    tokens: dict[str, str] = field(default_factory=dict)
    """An API token per viewer name (filled by `make_world(..., with_tokens=True)`)."""

    @property
    def resellers(self) -> dict[str, Reseller]:
        return {"a": self.reseller_a, "b": self.reseller_b}

    @property
    def customers(self) -> dict[str, Customer]:
        return {"a1": self.customer_a1, "a2": self.customer_a2, "b1": self.customer_b1}

    def viewers(self) -> dict[str, Viewer]:
        """One domain viewer per name, as the token of that name would make it."""
        viewers = {"support": Viewer(role=Role.SUPPORT), "system": Viewer(role=Role.SYSTEM)}
        for label, reseller in self.resellers.items():
            viewers[f"reseller {label}"] = Viewer(role=Role.RESELLER, reseller_id=reseller.id)
        for label, customer in self.customers.items():
            viewers[f"customer {label}"] = Viewer(
                role=Role.CUSTOMER, reseller_id=customer.reseller_id, customer_id=customer.id
            )
        return viewers


async def make_world(factory: Factory, *, with_tokens: bool = False) -> World:
    """Build the world through the domain services (and its tokens, when asked)."""
    reseller_a = await factory.reseller(name="Reseller A")
    reseller_b = await factory.reseller(name="Reseller B")
    world = World(
        reseller_a=reseller_a,
        reseller_b=reseller_b,
        customer_a1=await factory.customer(reseller_a, name="Customer A1"),
        customer_a2=await factory.customer(reseller_a, name="Customer A2"),
        customer_b1=await factory.customer(reseller_b, name="Customer B1"),
    )
    if with_tokens:
        world.tokens = {"support": await factory.token("SUPPORT")}
        world.tokens["system"] = await factory.token("SYSTEM")
        for label, reseller in world.resellers.items():
            world.tokens[f"reseller {label}"] = await factory.token("RESELLER", reseller=reseller)
        for label, customer in world.customers.items():
            world.tokens[f"customer {label}"] = await factory.token("CUSTOMER", customer=customer)
    return world
