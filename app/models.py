"""Every table, imported in one place so the metadata (and Alembic) sees them all."""

from sqlmodel import SQLModel

from app.access.models import ApiToken
from app.documents.models import RegisteredDocument, TrustedDocument
from app.events.models import Event
from app.incidents.models import Incident
from app.notifications.models import Notification, NotificationSettings, NotificationTemplate
from app.orders.models import Customer, OrderItem, Reseller, SalesOrder

metadata = SQLModel.metadata

__all__ = [
    "ApiToken",
    "Customer",
    "Event",
    "Incident",
    "Notification",
    "NotificationSettings",
    "NotificationTemplate",
    "OrderItem",
    "RegisteredDocument",
    "Reseller",
    "SalesOrder",
    "TrustedDocument",
    "metadata",
]
