"""The GraphQL context: the process's services, the viewer, and per-request loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import strawberry
from graphql import GraphQLError

from app.access.viewer import Viewer
from app.graphql.loaders import Loaders
from app.services import Services

if TYPE_CHECKING:
    from app.graphql.subscriptions import StreamHandoff


@dataclass
class Context:
    services: Services
    viewer: Viewer | None
    loaders: Loaders
    request: Any = None
    response: Any = None
    connection_params: Any = None
    token: str | None = None
    stream_handoff: StreamHandoff | None = None
    """Set by the websocket endpoint: a subscription's stream is handed to it (its groups)."""


Info = strawberry.Info[Context, None]


def unauthenticated() -> GraphQLError:
    return GraphQLError(
        "authentication required: send Authorization: Bearer <token>",
        extensions={"code": "UNAUTHENTICATED"},
    )


def forbidden(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "FORBIDDEN"})


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def viewer_of(info: Info) -> Viewer:
    """The authenticated viewer, or a top-level UNAUTHENTICATED error."""
    viewer = info.context.viewer
    if viewer is None:
        raise unauthenticated()
    return viewer
