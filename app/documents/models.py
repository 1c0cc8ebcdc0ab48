"""The table of known documents, shared by every process through the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class PersistedDocument(SQLModel, table=True):
    """A document clients may name by its hash alone; `trusted` when an operator added it."""

    __tablename__ = "persisted_document"

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    document: str = Field(sa_column=Column(Text, nullable=False))
    trusted: bool = Field(default=False)
    created_at: datetime = Field(sa_type=UTCDateTime)
