"""Automatic persisted queries (`extensions.persistedQuery`) and trusted documents, for every
transport: HTTP POST and GET and websocket `subscribe` all ask `PersistedQueries.document`.

The convention of Apollo clients and urql: `{"version": 1, "sha256Hash": "<hex>"}`. A hash alone
that the token does not know is PERSISTED_QUERY_NOT_FOUND (message `PersistedQueryNotFound`,
which the clients look for), and they retry with the query; hash plus query registers it, a hash
that does not match the query is BAD_USER_INPUT; later the hash alone runs it, on every process
(the tables are shared). With `ORDERPULSE_TRUSTED_DOCUMENTS_ONLY`, only documents an operator
added (`python -m app documents add`) run, whether named by hash or sent whole.

What a client registers is its token's alone (strangers register nothing): a document another
token registered is PERSISTED_QUERY_NOT_FOUND until this one registers it too, so no tenant can
learn what another sent; trusted documents are everyone's. A document is stored only once it has
passed every guard (size, parse with the token limit, validation with the depth, alias and list
rules, list sizes and cost with the request's variables), and a token holds at most
`ORDERPULSE_MAX_PERSISTED_PER_TOKEN` (past that, its documents run but are not stored). A document
over `ORDERPULSE_MAX_DOCUMENT_BYTES` is refused here, before it is hashed, whatever the transport.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError, GraphQLSchema

from app.access.viewer import Viewer
from app.db import Clock
from app.documents.store import DocumentStore, sha256_of
from app.graphql.guards import TOO_COMPLEX, Guards

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

    def __init__(
        self,
        store: DocumentStore,
        *,
        trusted_only: bool,
        clock: Clock,
        guards: Guards,
        schema: GraphQLSchema,
    ) -> None:
        self.store = store
        self.trusted_only = trusted_only
        self.clock = clock
        self.guards = guards
        self.schema = schema

    async def document(
        self,
        query: str | None,
        extensions: dict[str, Any] | None,
        *,
        viewer: Viewer | None,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> str | None:
        """The document to run, None when the request names none (a malformed request)."""
        if query is not None:
            size_error = self.guards.document_size_error(query)
            if size_error is not None:
                raise PersistedQueryError(size_error.message, TOO_COMPLEX)
        token_id = viewer.token_id if viewer is not None else None
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if query is not None and self.trusted_only:
                trusted = await self.store.find(sha256_of(query), token_id=None, trusted_only=True)
                if trusted is None:
                    raise not_found()
            return query
        sha256 = _requested_hash(persisted)
        if query is None:
            found = await self.store.find(sha256, token_id=token_id, trusted_only=self.trusted_only)
            if found is None:
                raise not_found()
            return found
        if sha256_of(query) != sha256:
            raise PersistedQueryError(
                "persistedQuery.sha256Hash does not match the SHA-256 of the query",
                "BAD_USER_INPUT",
            )
        if self.trusted_only:
            if await self.store.find(sha256, token_id=None, trusted_only=True) is None:
                raise not_found()
        elif token_id is not None and not self.store.is_remembered(sha256, token_id=token_id):
            # a document that fails a guard is answered with its errors when it runs, not stored
            errors = self.guards.document_errors(self.schema, query, operation_name, variables)
            if not errors:
                await self.store.register(query, token_id=token_id, now=self.clock.now())
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
