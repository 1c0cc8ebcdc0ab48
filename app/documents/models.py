"""The tables of known documents, shared by every process through the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class TrustedDocument(SQLModel, table=True):
    """A document an operator added (`python -m app documents add`): any client may name it by
    its hash, and in trusted-documents mode only these run."""

    __tablename__ = "trusted_document"

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    document: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class RegisteredDocument(SQLModel, table=True):
    """A document one token registered (an automatic persisted query): only that token may name
    it by its hash, so no tenant learns what another sent."""

    __tablename__ = "registered_document"

    token_id: int = Field(
        sa_column=Column(Integer, ForeignKey("api_token.id"), primary_key=True, autoincrement=False)
    )
    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    document: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
