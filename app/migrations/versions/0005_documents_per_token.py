"""documents a client registers are its token's alone; trusted documents get their own table

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 15:00:00

`persisted_document` held both kinds, keyed by hash alone: any tenant could run (and learn of)
another's documents. Trusted rows move to `trusted_document` (everyone's); a client's rows, whose
token was never recorded, are dropped: Apollo clients and urql register a document again when
its hash is PERSISTED_QUERY_NOT_FOUND, now into `registered_document` under their token.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trusted_document",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.execute(
        "INSERT INTO trusted_document (sha256, document, created_at) "
        "SELECT sha256, document, created_at FROM persisted_document WHERE trusted"
    )
    op.drop_table("persisted_document")
    op.create_table(
        "registered_document",
        sa.Column("token_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_token.id"]),
        sa.PrimaryKeyConstraint("token_id", "sha256"),
    )


def downgrade() -> None:
    op.create_table(
        "persisted_document",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.execute(
        "INSERT INTO persisted_document (sha256, document, trusted, created_at) "
        "SELECT sha256, document, TRUE, created_at FROM trusted_document"
    )
    op.drop_table("registered_document")
    op.drop_table("trusted_document")
