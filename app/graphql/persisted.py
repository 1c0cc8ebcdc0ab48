"""Automatic persisted queries (`extensions.persistedQuery`) and trusted documents, for every
transport: HTTP POST and GET and websocket `subscribe` all ask `PersistedQueries.document`.

The convention of Apollo clients and urql: `{"version": 1, "sha256Hash": "<hex>"}`. A hash alone
that the deployment does not know is PERSISTED_QUERY_NOT_FOUND (message `PersistedQueryNotFound`,
which the clients look for), and they retry with the query; hash plus query registers it (only an
authenticated caller's, so strangers cannot fill the table), a hash that does not match the query
is BAD_USER_INPUT; later the hash alone runs it, on every process (the table is shared). With
`ORDERPULSE_TRUSTED_DOCUMENTS_ONLY`, only documents an operator added (`python -m app documents
add`) run, whether named by hash or sent whole.
"""

from __future__ import annotations

import re
from typing import Any

from graphql import GraphQLError

from app.access.viewer import Viewer
from app.db import Clock
from app.documents.store import DocumentStore, sha256_of

NOT_FOUND_CODE = "PERSISTED_QUERY_NOT_FOUND"
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class PersistedQueryError(Exception):
    """The request names a document that cannot run; reported before anything is parsed."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def as_graphql_error(self) -> GraphQLError:
        return GraphQLError(self.message, extensions={"code": self.code})


def not_found() -> PersistedQueryError:
    return PersistedQueryError(NOT_FOUND_MESSAGE, NOT_FOUND_CODE)


class PersistedQueries:
    """Turns a request's `query` and `extensions` into the document to run."""

    def __init__(self, store: DocumentStore, *, trusted_only: bool, clock: Clock) -> None:
        self.store = store
        self.trusted_only = trusted_only
        self.clock = clock

    async def document(
        self, query: str | None, extensions: dict[str, Any] | None, *, viewer: Viewer | None
    ) -> str | None:
        """The document to run, None when the request names none (a malformed request)."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if query is not None and self.trusted_only:
                if await self.store.find(sha256_of(query), trusted_only=True) is None:
                    raise not_found()
            return query
        sha256 = _requested_hash(persisted)
        if query is None:
            found = await self.store.find(sha256, trusted_only=self.trusted_only)
            if found is None:
                raise not_found()
            return found
        if sha256_of(query) != sha256:
            raise PersistedQueryError(
                "persistedQuery.sha256Hash does not match the SHA-256 of the query",
                "BAD_USER_INPUT",
            )
        if self.trusted_only:
            if await self.store.find(sha256, trusted_only=True) is None:
                raise not_found()
        elif viewer is not None:
            await self.store.register(query, now=self.clock.now())
        return query


def _requested_hash(persisted: object) -> str:
    if (
        not isinstance(persisted, dict)
        or persisted.get("version") != 1
        or not isinstance(persisted.get("sha256Hash"), str)
        or not _HEX64.match(persisted["sha256Hash"].lower())
    ):
        raise PersistedQueryError(
            "persistedQuery takes {version: 1, sha256Hash: <64 hex digits>}", "BAD_USER_INPUT"
        )
    return str(persisted["sha256Hash"]).lower()
