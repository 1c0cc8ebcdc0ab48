"""incidents (SPEC 10): the incident table, the order's, notification's and event's link to it,
and the built-in templates of incident mail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:00:00

At most one OPEN incident per reason: a partial unique index (PostgreSQL and SQLite both have
them). Recent failures are found by (status, failure_reason, failed_at), an incident's orders by
(incident_id, id).
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import app.db
from app.incidents.templates import INCIDENT_TEMPLATES

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# PostgreSQL: does this failure open or join an incident? Asked inside the failure's one
# statement (app/incidents/rules.py `unless_involved`): the reason's lock first, then a query with
# a fresh snapshot (a VOLATILE PL/pgSQL function in READ COMMITTED), which sees every failure the
# previous holder of the lock committed.
INVOLVED_FUNCTION = """
CREATE FUNCTION orderpulse_incident_involved(
    p_reason text, p_order_id integer, p_since timestamp, p_threshold integer,
    p_lock_class integer, p_reason_key integer
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_class, p_reason_key);
    RETURN EXISTS (SELECT 1 FROM incident WHERE reason = p_reason AND status = 'OPEN')
        OR (SELECT count(*) FROM sales_order
            WHERE status = 'PF' AND failure_reason = p_reason AND failed_at >= p_since
              AND id <> p_order_id AND incident_id IS NULL) + 1 >= p_threshold;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("opened_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", app.db.UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("first_order_id", sa.Integer(), nullable=False),
        sa.Column("last_mailed_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("mailed_order_count", sa.Integer(), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolution_comment", sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(["first_order_id"], ["sales_order.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_incident_status_id", "incident", ["status", "id"], unique=False)
    op.create_index(
        "ux_incident_open_reason",
        "incident",
        ["reason"],
        unique=True,
        sqlite_where=sa.text("status = 'OPEN'"),
        postgresql_where=sa.text("status = 'OPEN'"),
    )
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_sales_order_status_failure_reason_failed_at",
            ["status", "failure_reason", "failed_at"],
            unique=False,
        )
        batch_op.create_index("ix_sales_order_incident_id_id", ["incident_id", "id"], unique=False)
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_notification_incident_id", ["incident_id"], unique=False)
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))

    if op.get_bind().dialect.name == "postgresql":
        op.execute(INVOLVED_FUNCTION)

    now = datetime.now(UTC)
    templates = sa.table(
        "notification_template",
        sa.column("name", sa.String),
        sa.column("subject", sa.String),
        sa.column("body", sa.Text),
        sa.column("is_builtin", sa.Boolean),
        sa.column("created_at", app.db.UTCDateTime),
        sa.column("updated_at", app.db.UTCDateTime),
    )
    existing = {row[0] for row in op.get_bind().execute(sa.select(templates.c.name)).fetchall()}
    op.bulk_insert(
        templates,
        [
            {
                "name": t.name,
                "subject": t.subject,
                "body": t.body,
                "is_builtin": True,
                "created_at": now,
                "updated_at": now,
            }
            for t in INCIDENT_TEMPLATES
            if t.name not in existing
        ],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS orderpulse_incident_involved"
            "(text, integer, timestamp, integer, integer, integer)"
        )
    templates = sa.table("notification_template", sa.column("name", sa.String))
    op.execute(templates.delete().where(templates.c.name.in_([t.name for t in INCIDENT_TEMPLATES])))
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("incident_id")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_incident_id")
        batch_op.drop_column("incident_id")
    with op.batch_alter_table("sales_order", schema=None) as batch_op:
        batch_op.drop_index("ix_sales_order_incident_id_id")
        batch_op.drop_index("ix_sales_order_status_failure_reason_failed_at")
        batch_op.drop_column("incident_id")
    op.drop_index("ux_incident_open_reason", table_name="incident")
    op.drop_index("ix_incident_status_id", table_name="incident")
    op.drop_table("incident")
