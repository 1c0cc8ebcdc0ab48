"""Finding, registering and trusting documents by hash (the database is the one truth).

A hash names one text forever, so a document, once found, can be remembered by a process: what a
process remembers can never be stale. Only trust changes (an operator trusts a document a client
registered), so in trusted-documents mode only trusted documents are remembered.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database
from app.documents.models import PersistedDocument

REMEMBERED = 2048


def sha256_of(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True)
class Known:
    document: str
    trusted: bool


class DocumentStore:
    """The known documents of the deployment, with a bounded memory of those found."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._remembered: OrderedDict[str, Known] = OrderedDict()

    async def find(self, sha256: str, *, trusted_only: bool) -> str | None:
        """The document with this hash (if `trusted_only`, only a trusted one), else None."""
        known = self._remembered.get(sha256)
        if known is not None and (known.trusted or not trusted_only):
            self._remembered.move_to_end(sha256)
            return known.document
        async with self.db.read() as session:
            row = await session.get(PersistedDocument, sha256)
        if row is None or (trusted_only and not row.trusted):
            return None
        self._remember(sha256, Known(row.document, row.trusted))
        return row.document

    async def register(self, document: str, *, now: datetime) -> str:
        """Record a client's document (untrusted) if it is new; its hash."""
        sha256 = sha256_of(document)
        if sha256 in self._remembered:
            return sha256
        try:
            async with self.db.write() as session:
                if await session.get(PersistedDocument, sha256) is None:
                    session.add(PersistedDocument(sha256=sha256, document=document, created_at=now))
        except IntegrityError:  # another process registered it meanwhile
            pass
        self._remember(sha256, Known(document, trusted=False))
        return sha256

    def _remember(self, sha256: str, known: Known) -> None:
        self._remembered[sha256] = known
        self._remembered.move_to_end(sha256)
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)


async def trust(session: AsyncSession, document: str, *, now: datetime) -> str:
    """Add `document` as trusted (an operator's `documents add`); its hash."""
    sha256 = sha256_of(document)
    row = await session.get(PersistedDocument, sha256)
    if row is None:
        session.add(
            PersistedDocument(sha256=sha256, document=document, trusted=True, created_at=now)
        )
    elif not row.trusted:
        row.trusted = True
        session.add(row)
    return sha256
