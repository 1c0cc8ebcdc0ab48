"""GraphQL over HTTP for /graphql: POST and GET, as the GraphQL-over-HTTP specification says.

A thin Starlette endpoint around strawberry's `schema.execute` (which runs the guards, masking and
every other extension): it reads the request (JSON POST; GET's query string, for queries only),
resolves persisted documents, and answers in the media type the client accepts:
`application/graphql-response+json` (a request that never ran, such as a document that does not
parse or validate, a guard's refusal or a variable that does not coerce, is a 400 with no `data`)
or `application/json` (200 for every GraphQL response; `*/*` and no Accept mean this one). A body
that is not JSON (or is nested over 1024 deep) is a 400, a POST that is not
`application/json` a 415, a mutation over GET a 405, HEAD a 405 (it runs nothing), and an Accept
that allows neither JSON type a 406; an operation that needed a dependency that is down (a field
coded SERVICE_UNAVAILABLE) is a 503 with Retry-After (app/outages.py). The body size is limited
before this endpoint reads it (Starlette's `max_body_size`, see `app.asgi`). A browser asking for
HTML gets GraphiQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import ExecutionResult
from strawberry.types.graphql import OperationType

from app.access.viewer import Viewer
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.persisted import PersistedQueries, PersistedQueryError
from app.graphql.schema import OrderPulseSchema
from app.outages import DependencyUnavailable, is_unavailable_error
from app.panel import graphiql_page
from app.services import Services

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"

Authenticate = Callable[[Request], Awaitable[tuple[Viewer | None, str | None]]]
"""The viewer and token of a request (None, None when it carries none or a bad one)."""


class RequestError(Exception):
    """The request cannot be run at all: answered with `status` and one error."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = GraphQLError(message, extensions={"code": code} if code else None)
        self.headers: dict[str, str] = {}


def accepted_media_type(accept: str | None) -> str | None:
    """The response type for an Accept header (by q-value, ours preferred on a tie), or None."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media == GRAPHQL_RESPONSE:
            candidate = (quality, 2, GRAPHQL_RESPONSE)
        elif media == JSON:
            candidate = (quality, 1, JSON)
        elif media in ("*/*", "application/*"):
            candidate = (quality, 0, JSON)
        else:
            continue
        if best is None or candidate > best:
            best = candidate
    return best[2] if best else None


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and not request.query_params


@dataclass
class GraphQLHTTP:
    """The /graphql endpoint for HTTP requests (websockets have their own, `app.graphql.ws`)."""

    services: Services
    schema: OrderPulseSchema
    _: KW_ONLY
    authenticate: Authenticate
    persisted: PersistedQueries

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from OrderPulse's own files (strawberry's page loads it from a CDN)."""
        return graphiql_page()

    async def handle(self, request: Request) -> Response:
        """The Starlette endpoint."""
        if request.method == "HEAD":  # Starlette routes HEAD as GET; it must run nothing
            return self.respond(
                {"errors": [{"message": "Send GET or POST"}]}, 405, JSON, {"Allow": "GET, POST"}
            )
        if request.method == "GET" and wants_html(request):
            return await self.render_graphql_ide(request)
        media_type = accepted_media_type(request.headers.get("accept"))
        if media_type is None:
            return JSONResponse(
                {"errors": [{"message": f"Accept {GRAPHQL_RESPONSE} or {JSON}"}]},
                status_code=406,
            )
        try:
            params = await self.read_params(request)
            async with self.services.db.request_reads():  # the token and a plan: one checkout
                return await self.run(request, params, media_type)
        except RequestError as exc:
            body = {"errors": [exc.error.formatted]}
            return self.respond(body, exc.status, media_type, exc.headers)

    async def read_params(self, request: Request) -> dict[str, Any]:
        """query, variables, operationName and extensions, type-checked."""
        if request.method == "GET":
            params: dict[str, Any] = dict(request.query_params)
            for name in ("variables", "extensions"):
                if name in params:
                    try:
                        params[name] = orjson.loads(params[name]) if params[name] else None
                    except orjson.JSONDecodeError:
                        raise RequestError(400, f"`{name}` is not JSON") from None
        else:
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != JSON:
                raise RequestError(415, f"POST a JSON body with Content-Type: {JSON}")
            try:
                body = await request.body()
            except ClientDisconnect:  # gone, or too slow (app.kernel.uvicorn)
                raise RequestError(400, "The body was not received") from None
            try:  # orjson refuses JSON nested over 1024 deep (json.loads: RecursionError)
                params = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                reason = " (nested over 1024 deep)" if "depth" in str(exc) else ""
                raise RequestError(400, f"The body is not JSON{reason}") from None
            if not isinstance(params, dict):
                raise RequestError(400, "The body must be a JSON object")
        checks = {
            "query": str,
            "operationName": str,
            "variables": dict,
            "extensions": dict,
        }
        for name, kind in checks.items():
            if params.get(name) is not None and not isinstance(params[name], kind):
                raise RequestError(400, f"`{name}` must be a {'string' if kind is str else 'map'}")
        if params.get("query") is None and not (params.get("extensions") or {}).get(
            "persistedQuery"
        ):
            raise RequestError(400, "No GraphQL query found in the request")
        return params

    async def run(self, request: Request, params: dict[str, Any], media_type: str) -> Response:
        viewer, token = await self.authenticate(request)
        try:
            query = await self.persisted.document(
                params.get("query"),
                params.get("extensions"),
                viewer=viewer,
                variables=params.get("variables"),
                operation_name=params.get("operationName"),
            )
        except PersistedQueryError as exc:
            status = 400 if media_type == GRAPHQL_RESPONSE else 200
            return self.respond({"errors": [exc.as_graphql_error().formatted]}, status, media_type)
        is_get = request.method == "GET"
        context = Context(
            services=self.services,
            viewer=viewer,
            loaders=Loaders(self.services.db),
            request=request,
            token=token,
        )
        allowed = {OperationType.QUERY} if is_get else {OperationType.QUERY, OperationType.MUTATION}
        try:
            result = await self.schema.execute(
                query,
                variable_values=params.get("variables"),
                context_value=context,
                operation_name=params.get("operationName"),
                allowed_operation_types=allowed,
            )
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise RequestError(400, "Subscriptions are served over websockets") from None
            error = RequestError(405, "Only queries may be sent with GET; POST mutations")
            error.headers["Allow"] = "POST"
            raise error from None
        except CannotGetOperationTypeError as exc:
            raise RequestError(400, exc.as_http_error_reason()) from None
        except MissingQueryError:
            raise RequestError(400, "No GraphQL query found in the request") from None
        if any(is_unavailable_error(error) for error in result.errors or ()):
            raise DependencyUnavailable("a field needed a dependency that is down")  # 503
        return self.respond_result(result, media_type)

    def respond_result(self, result: ExecutionResult, media_type: str) -> Response:
        never_ran = result.data is None and all(e.path is None for e in result.errors or ())
        body: dict[str, Any] = {}
        if media_type == GRAPHQL_RESPONSE and never_ran and result.errors:
            status = 400
        else:
            body["data"] = result.data
            status = 200
        if result.errors:
            body["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            body["extensions"] = result.extensions
        return self.respond(body, status, media_type)

    @staticmethod
    def respond(
        body: dict[str, Any], status: int, media_type: str, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(  # orjson: several times faster than json.dumps for a page of orders
            orjson.dumps(body),
            status_code=status,
            headers=headers,
            media_type=f"{media_type}; charset=utf-8",
        )
