"""API tokens: only a hash of each token is stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    role: str = Field(max_length=10)
    reseller_id: int | None = Field(default=None, foreign_key="reseller.id")
    customer_id: int | None = Field(default=None, foreign_key="customer.id")
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    """None: the token works until revoked."""
