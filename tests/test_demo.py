"""`serve --demo`'s seeds: the demo reseller has turned failure mail on, so its failed order told
support, the reseller and the customer; a reseller made later starts with both off (SPEC 3)."""

from __future__ import annotations

from sqlmodel import col, select

from app.demo import seed_demo
from app.notifications.models import Notification
from app.services import Services
from tests.support.api import Factory, GraphQLClient, gid

SETTINGS = (
    """query($r: ID) { notificationSettings(resellerId: $r) { notifyReseller notifyCustomer } }"""
)


async def test_the_demo_reseller_and_customer_are_told_of_the_failed_order(
    services: Services, factory: Factory, api: GraphQLClient
) -> None:
    tokens = await seed_demo(services)
    assert sorted(tokens) == ["CUSTOMER", "RESELLER", "SUPPORT", "SYSTEM"]
    async with services.db.read() as session:
        rows = (await session.exec(select(Notification).order_by(col(Notification.id)))).all()
        assert sorted((r.recipient_role, r.email) for r in rows) == [
            ("CUSTOMER", "it@acme.example"),
            ("RESELLER", "ops@northwind.example"),
            ("SUPPORT", "support@distributor.example"),
        ]
    again = await seed_demo(services)  # seeding twice adds tokens only
    assert again.keys() == tokens.keys() and again != tokens

    support = api.as_(tokens["SUPPORT"])
    reseller_view = await api.as_(tokens["RESELLER"]).data(SETTINGS)
    assert reseller_view == {
        "notificationSettings": {"notifyReseller": True, "notifyCustomer": True}
    }
    newcomer = await factory.reseller()
    fresh = await support.data(SETTINGS, {"r": gid("Reseller", newcomer)})
    assert fresh == {"notificationSettings": {"notifyReseller": False, "notifyCustomer": False}}
