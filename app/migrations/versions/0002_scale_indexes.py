"""indexes that keep large tables fast: the escalation worker's, a customer's orders by status

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:30:00

At a million orders with 50,000 failures already escalated, the escalation worker's two queries
(overdue failures; the next deadline), run on every poll of every process, read every escalated
failure through (status, sla_deadline), more with every escalation. With `escalated_at` in the index
between the two, `status = 'PF' AND escalated_at IS NULL` is a range of the index, so they read only
the failures still waiting. (Not a partial index: its predicate would not match the bound `status`
parameter once PostgreSQL switches a prepared statement to its generic plan.) A customer's orders
filtered by status get the index a reseller's already have.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_status_sla_deadline")
        batch_op.create_index(
            "ix_sales_order_status_escalated_sla_deadline",
            ["status", "escalated_at", "sla_deadline"],
            unique=False,
        )
        batch_op.create_index(
            "ix_sales_order_customer_status_id", ["customer_id", "status", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_customer_status_id")
        batch_op.drop_index("ix_sales_order_status_escalated_sla_deadline")
        batch_op.create_index(
            "ix_sales_order_status_sla_deadline", ["status", "sla_deadline"], unique=False
        )
