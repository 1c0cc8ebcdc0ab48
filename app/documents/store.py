"""Finding, registering and trusting documents by hash (the database is the one truth).

Two kinds: trusted documents, which an operator added and every client may name; and documents a
token registered (automatic persisted queries), which only that token may name, at most
`max_per_token` of them. A hash names one text forever, so a document, once found, can be
remembered by a process (by hash and owner, in a bounded LRU): what a process remembers can never
be stale, except that a registered document may become trusted, which only widens who may run it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database
from app.documents.cache import LRU
from app.documents.models import RegisteredDocument, TrustedDocument

REMEMBERED = 1024
TRUSTED = None
"""The owner under which trusted documents are remembered (registered ones: their token's id)."""


def sha256_of(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class DocumentStore:
    """The known documents of the deployment, with a bounded memory of those found."""

    def __init__(self, db: Database, *, max_per_token: int) -> None:
        self.db = db
        self.max_per_token = max_per_token
        self._remembered: LRU[tuple[int | None, str], str] = LRU(REMEMBERED)

    async def find(self, sha256: str, *, token_id: int | None, trusted_only: bool) -> str | None:
        """The document with this hash that the token may run: a trusted one, or (unless
        `trusted_only`) one this token registered; else None."""
        owners: list[int | None] = [TRUSTED]
        if not trusted_only and token_id is not None:
            owners.append(token_id)
        for owner in owners:
            remembered = self._remembered.get((owner, sha256))
            if remembered is not None:
                return remembered
        async with self.db.read() as session:
            trusted = await session.get(TrustedDocument, sha256)
            if trusted is not None:
                self._remembered.put((TRUSTED, sha256), trusted.document)
                return trusted.document
            if len(owners) == 1:
                return None
            registered = await session.get(RegisteredDocument, (token_id, sha256))
        if registered is None:
            return None
        self._remembered.put((token_id, sha256), registered.document)
        return registered.document

    def is_remembered(self, sha256: str, *, token_id: int) -> bool:
        """Whether this process knows the token registered the document (no database read)."""
        return (token_id, sha256) in self._remembered

    async def register(self, document: str, *, token_id: int, now: datetime) -> bool:
        """Record a document for one token, unless the token already holds `max_per_token`;
        whether the token has it now."""
        sha256 = sha256_of(document)
        if (token_id, sha256) in self._remembered:
            return True
        try:
            async with self.db.write() as session:
                if await session.get(RegisteredDocument, (token_id, sha256)) is None:
                    held = await session.scalar(
                        select(func.count())
                        .select_from(RegisteredDocument)
                        .where(RegisteredDocument.token_id == token_id)
                    )
                    if (held or 0) >= self.max_per_token:
                        return False
                    session.add(
                        RegisteredDocument(
                            token_id=token_id, sha256=sha256, document=document, created_at=now
                        )
                    )
        except IntegrityError:  # the same token registered it meanwhile, on another process
            pass
        self._remembered.put((token_id, sha256), document)
        return True


async def trust(session: AsyncSession, document: str, *, now: datetime) -> str:
    """Add `document` as trusted (an operator's `documents add`); its hash."""
    sha256 = sha256_of(document)
    if await session.get(TrustedDocument, sha256) is None:
        session.add(TrustedDocument(sha256=sha256, document=document, created_at=now))
    return sha256
