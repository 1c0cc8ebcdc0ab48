"""Who is asking: the Viewer made from an API token."""

from __future__ import annotations

from dataclasses import dataclass

from app.orders.flow import Role


@dataclass(frozen=True)
class Viewer:
    role: Role
    token_id: int | None = None
    reseller_id: int | None = None
    customer_id: int | None = None

    @property
    def actor(self) -> str:
        """How the event log names this viewer."""
        tenant = ""
        if self.customer_id is not None:
            tenant = f" customer:{self.customer_id}"
        elif self.reseller_id is not None:
            tenant = f" reseller:{self.reseller_id}"
        token = f" token:{self.token_id}" if self.token_id is not None else ""
        return f"{self.role.value}{tenant}{token}"
