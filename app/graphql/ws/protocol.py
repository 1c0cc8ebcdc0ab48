"""graphql-transport-ws, answered as strawberry's own handler answers it, for /graphql.

A `connection_init` (its payload carries `Authorization: Bearer <token>`, key in any case) within
`ws_init_timeout_seconds` or 4408; a bad, missing, revoked or expired token 4403; a token that
cannot be checked because the database is down 1013 (try again later; app/outages.py); more than
`max_sockets_per_token` open sockets of one token 4429; `subscribe` before the ack 4401; a second
init 4429; an id already running 4409; a message that is not JSON text of the protocol, or a
document that does not parse, 4400; a client that sends and does not read its answers (pongs,
results, errors) past `ws_queue_size` messages or `ws_queue_bytes` waiting, 4400; one whose
events waiting pass `ws_queue_bytes`, 1008 (`app.graphql.ws.sending`); a message over
`max_body_bytes` 1009 (uvicorn's `ws_max_size` refuses it first when the server is started by
`python -m app serve`); `ping` answered with `pong`. A document over a guard (depth, aliases,
tokens, cost) is an `error` message for its id. A browser page from an origin other than the
server's own or `ORDERPULSE_ALLOWED_ORIGINS` is refused before the handshake completes (HTTP 403);
clients that send no Origin are not browsers and are let in. Dead sockets are found by uvicorn's
websocket pings. Only `graphql-transport-ws` is spoken (4406).

Rate limits (app.ratelimit): each handshake and each `connection_init` spends one operation of the
client address's budget, before anything else is done for it (over it: the handshake gets HTTP
429 with `Retry-After`, the init closes with 4429 before its token is read), and each `subscribe`
one of the token's. An init payload with two `authorization` keys (in any case) is a 4400.

Revocation: while sockets are open, the endpoint asks the database twice every
`token_check_seconds` which of their tokens are still live (one query for all of them) and closes
the others' sockets with 4403, so a token revoked on any process loses its sockets on every
process; the answer also renews the per-process viewer cache's trust in the live ones
(app/access/viewer_cache.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from starlette import types
from starlette.applications import Starlette
from strawberry.http.websocket_origin import (
    is_same_origin,
    normalize_allowed_origins,
    normalize_origin,
)
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from app.access.tokens import bearer_token, live_token_ids
from app.access.viewer import Viewer
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.persisted import PersistedQueries, PersistedQueryError
from app.graphql.schema import OrderPulseSchema
from app.graphql.subscriptions import StreamHandoff, interrupted, too_slow
from app.graphql.ws.documents import Documents
from app.graphql.ws.groups import Groups, Member, Selection
from app.graphql.ws.sending import SendQueue
from app.kernel.coroutines import Send
from app.kernel.uvicorn import SEND_TEXTS_EXTENSION
from app.observability import metrics
from app.outages import TRY_AGAIN_LATER, describe, is_outage, unavailable_error
from app.ratelimit import (
    RateLimiter,
    address_key,
    client_key,
    rate_limited_error,
    scope_address,
)
from app.services import Services

log = logging.getLogger("orderpulse.websocket")

PROTOCOL = "graphql-transport-ws"
NO_INCREMENTAL_DELIVERY = "Incremental delivery is not supported over graphql-transport-ws"

Authenticate = Callable[[Mapping[str, Any]], Awaitable[Viewer | None]]
"""The viewer of a connection_init payload, or None."""
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class WebSocketShortcut(Starlette):
    """Starlette, except that websockets on `websocket_path` go straight to `websocket_endpoint`,
    ahead of Starlette's own error and body-limit middleware, the app's middleware and routing.

    An open websocket keeps its whole call chain suspended: every frame of that chain is memory
    for as long as the socket lives, and a handshake pays for entering each. None of those
    layers does anything for a websocket (the error and body-limit middleware pass them through;
    the endpoint answers its own errors), so they are skipped.
    """

    def __init__(
        self, *args: Any, websocket_path: str, websocket_endpoint: GraphQLWebSocket, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.websocket_path = websocket_path
        self.websocket_endpoint = websocket_endpoint

    async def __call__(self, scope: types.Scope, receive: types.Receive, send: types.Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.websocket_path:
            # (the endpoint's messages are dicts, as uvicorn's are; Starlette types them loosely)
            await self.websocket_endpoint(scope, receive, send)  # type: ignore[arg-type]
        else:
            await super().__call__(scope, receive, send)


class GraphQLWebSocket:
    """The ASGI websocket app for /graphql: its sockets, by token, and the subscription groups."""

    def __init__(
        self,
        services: Services,
        schema: OrderPulseSchema,
        *,
        authenticate: Authenticate,
        persisted: PersistedQueries,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.services = services
        self.documents = Documents(schema)
        self.schema = schema
        self.authenticate = authenticate
        self.persisted = persisted
        self.limiter = limiter
        settings = services.settings
        try:
            self.allowed_origins = normalize_allowed_origins(sorted(settings.allowed_origins))
        except ValueError as exc:
            raise ValueError(f"ORDERPULSE_ALLOWED_ORIGINS: {exc}") from None
        self.groups = Groups(services.fanout)
        self.admission = asyncio.Semaphore(settings.ws_admission_concurrency)
        """Admission pacing: how many sockets may be authenticating or starting an operation at
        once. A reconnect storm then waits here, off the event loop's ready queue, instead of
        crowding out HTTP requests; each socket still handles its own messages in order."""
        self.sessions_by_token: dict[int | None, set[SocketSession]] = {}
        self.token_watch: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        if (await receive())["type"] != "websocket.connect":
            return
        address = scope_address(scope)
        if self.limiter is not None:  # each handshake spends one of its address's operations
            decision = await self.limiter.hit(address_key(address), transport="websocket")
            if not decision.allowed:
                await refuse_handshake(scope, send, decision.retry_after)
                return
        if not self.origin_allowed(scope):
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        if PROTOCOL not in scope.get("subprotocols", ()):
            await send({"type": "websocket.accept"})
            await send(
                {"type": "websocket.close", "code": 4406, "reason": "Subprotocol not acceptable"}
            )
            return
        await send({"type": "websocket.accept", "subprotocol": PROTOCOL})
        metrics.websocket_opened()
        try:
            batches = SEND_TEXTS_EXTENSION in (scope.get("extensions") or {})
            await SocketSession(self, receive, send, batches=batches, address=address).run()
        finally:
            metrics.websocket_closed()

    def origin_allowed(self, scope: Scope) -> bool:
        """No Origin (not a browser), the server's own origin, or one configured."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is None or is_same_origin(origin, headers.get("host")):
            return True
        if "*" in self.allowed_origins:
            return True
        normalized = normalize_origin(origin)
        allowed = normalized is not None and normalized in self.allowed_origins
        if not allowed:
            log.warning("refused a websocket from origin %r", origin)
        return allowed

    # --- sockets by token ---------------------------------------------------------------------

    def admit(self, session: SocketSession, token_id: int | None) -> bool:
        """Count an authenticated socket for its token; False when the token has too many."""
        sessions = self.sessions_by_token.setdefault(token_id, set())
        if token_id is not None and len(sessions) >= self.services.settings.max_sockets_per_token:
            if not sessions:
                del self.sessions_by_token[token_id]
            return False
        sessions.add(session)
        if self.token_watch is None:
            self.token_watch = asyncio.get_running_loop().create_task(
                self._watch_tokens(), name="orderpulse-ws-token-watch"
            )
        return True

    def discharge(self, session: SocketSession, token_id: int | None) -> None:
        sessions = self.sessions_by_token.get(token_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.sessions_by_token[token_id]

    async def _watch_tokens(self) -> None:
        """While sockets are open: close those whose token was revoked or has expired.

        It asks twice per `token_check_seconds`, the period the viewer cache trusts a token for:
        the trust each sweep renews then outlasts a sweep that a busy loop runs late, so a storm
        of subscriptions never finds its tokens untrusted between two sweeps."""
        interval = self.services.settings.token_check_seconds / 2
        try:
            while self.sessions_by_token:
                await asyncio.sleep(interval)
                try:
                    await self.close_dead_tokens()
                except Exception as error:  # the database may be away for a while; try later
                    if not is_outage(error):
                        log.exception("could not check the tokens of open websockets")
                    else:
                        log.warning("could not check the tokens of open websockets: %s",
                                    describe(error))  # fmt: skip
        finally:
            self.token_watch = None

    async def close_dead_tokens(self) -> int:
        """Close (4403) every socket whose token is no longer live; how many were closed."""
        token_ids = {t for t in self.sessions_by_token if t is not None}
        if not token_ids:
            return 0
        now = self.services.clock.now()
        async with self.services.db.read() as session:
            live = await live_token_ids(session, token_ids, now=now)
        self.services.viewers.forget_ids(token_ids - live)
        self.services.viewers.confirm_live(live, now=now)
        closing = [s for t in token_ids - live for s in self.sessions_by_token.get(t, ())]
        for socket in closing:
            await socket.close(4403, "Forbidden")
        return len(closing)


async def refuse_handshake(scope: Scope, send: Send, retry_after: int) -> None:
    """HTTP 429 with `Retry-After` for a handshake over its address's rate limit (a plain
    refusal, HTTP 403, from a server without ASGI's websocket denial responses)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"errors": [rate_limited_error(retry_after)]}).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", str(retry_after).encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


class SocketSession:
    """One websocket: the protocol's state machine, its subscriptions and its send queue."""

    __slots__ = (
        "address",
        "closed",
        "closing",
        "endpoint",
        "init_received",
        "init_timer",
        "operations",
        "outgoing",
        "queue_size",
        "rate_key",
        "receive",
        "send",
        "services",
        "viewer",
    )

    def __init__(
        self,
        endpoint: GraphQLWebSocket,
        receive: Receive,
        send: Send,
        *,
        batches: bool = False,
        address: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.address = address
        """The client's address, which pays for its `connection_init` (app.ratelimit)."""
        self.services = endpoint.services
        self.queue_size = endpoint.services.settings.ws_queue_size
        self.receive = receive
        self.send = send
        self.viewer: Viewer | None = None
        self.rate_key: str | None = None
        self.init_received = False
        self.closed = False
        self.operations: dict[str, Member | None] = {}
        settings = endpoint.services.settings
        self.outgoing = SendQueue(
            send,
            batches=batches,
            max_answers=settings.ws_queue_size,
            max_bytes=settings.ws_queue_bytes,
            overflowed=self._overflowed,
        )
        self.init_timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Future[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.services.settings.ws_init_timeout_seconds
        self.init_timer = loop.call_later(timeout, self._init_timed_out)
        max_bytes = self.services.settings.max_body_bytes
        try:
            while not self.closed:
                message = await self.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                size = len(text) if text is not None else len(message.get("bytes") or b"")
                if size > max_bytes:  # characters: at most as many as its UTF-8 bytes
                    await self.close(1009, "Message too big")
                    break
                await self.handle(message)
        finally:
            self.release()
            if self.closing is not None:  # a close of ours under way: sent, or the client gone
                await self.closing

    def _overflowed(self, events: bool) -> None:
        """The send queue is full: the client does not read. Close the socket (once the caller,
        perhaps a group sending to all its members, is done), dropping what it holds."""
        if self.closing is not None or self.closed:
            return
        metrics.websocket_overflowed(reason="events" if events else "answers")
        if events:
            log.warning("closed a websocket too slow to read its events")
            closing = self.close(1008, "Too slow to read its events")
        else:
            log.warning("closed a websocket that sends messages and does not read the answers")
            closing = self.close(4400, "Too many messages not read")
        self.closing = asyncio.ensure_future(closing)

    def _init_timed_out(self) -> None:
        if not self.init_received:
            self.closing = asyncio.ensure_future(
                self.close(4408, "Connection initialisation timeout")
            )

    async def handle(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            await self.close(4400, "WebSocket message type must be text")
            return
        try:
            data = json.loads(text)
        except ValueError:
            await self.close(4400, "WebSocket message must be valid JSON")
            return
        if not isinstance(data, dict):
            await self.close(4400, "Failed to parse message")
            return
        kind = data.get("type")
        if kind == "connection_init":
            if self.init_timer is not None:  # it came in time, though it may wait its turn
                self.init_timer.cancel()
            async with self.endpoint.admission:
                await self.on_init(data.get("payload"))
        elif kind == "ping":
            self.outgoing.put(json.dumps({"type": "pong"}), None)
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            async with self.endpoint.admission:
                try:
                    await self.on_subscribe(data)
                except Exception as error:
                    if not is_outage(error) or not isinstance(data.get("id"), str):
                        raise
                    self.operations.pop(data["id"], None)  # (reserved while it started)
                    log.warning("operation refused, a dependency is down: %s", describe(error))
                    message = {"id": data["id"], "type": "error", "payload": [unavailable_error()]}
                    self.outgoing.put(json.dumps(message), None)
        elif kind == "complete":
            if isinstance(data.get("id"), str):
                self.forget(data["id"])
            else:
                await self.close(4400, "Failed to parse message")
        else:
            await self.close(4400, f"Unknown message type: {kind}")

    async def on_init(self, payload: object) -> None:
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            await self.close(4400, "Invalid connection init payload")
            return
        if self.init_received:
            await self.close(4429, "Too many initialisation requests")
            return
        self.init_received = True
        if self.init_timer is not None:
            self.init_timer.cancel()
        if sum(1 for key in payload if str(key).lower() == "authorization") > 1:
            await self.close(4400, "Invalid connection init payload")
            return
        limiter = self.endpoint.limiter
        if limiter is not None:  # the address pays for the token's look-up, live or not
            decision = await limiter.hit(address_key(self.address), transport="websocket")
            if not decision.allowed:
                await self.close(4429, rate_limited_error(decision.retry_after)["message"])
                return
        try:
            viewer = await self.endpoint.authenticate(payload)
        except Exception as error:
            if not is_outage(error):
                raise
            log.warning("websocket refused, a dependency is down: %s", describe(error))
            await self.close(TRY_AGAIN_LATER, "Try again later")
            return
        if self.closed:
            return
        if viewer is None:
            await self.close(4403, "Forbidden")
            return
        if not self.endpoint.admit(self, viewer.token_id):
            await self.close(4429, "Too many open websockets for this token")
            return
        self.viewer = viewer
        self.rate_key = client_key(token=bearer_token(payload), address=None)
        self.outgoing.put('{"type":"connection_ack"}', None)

    async def on_subscribe(self, data: dict[str, Any]) -> None:
        if self.viewer is None:
            await self.close(4401, "Unauthorized")
            return
        id, payload = data.get("id"), data.get("payload")
        if (
            not isinstance(id, str)
            or not isinstance(payload, dict)
            or not isinstance(payload.get("query"), str | None)
            or not isinstance(payload.get("variables") or {}, dict)
            or not isinstance(payload.get("operationName"), str | None)
            or not isinstance(payload.get("extensions") or {}, dict)
        ):
            await self.close(4400, "Failed to parse message")
            return
        if id in self.operations:
            await self.close(4409, f"Subscriber for {id} already exists")
            return
        if len(self.operations) >= self.services.settings.ws_max_subscriptions:
            self.send_error(id, [GraphQLError("Subscription limit reached")])
            return
        if not await self.token_is_live():
            await self.close(4403, "Forbidden")
            return
        if self.endpoint.limiter is not None and self.rate_key is not None:
            # each subscribe is one operation of the token's rate limit (app.ratelimit)
            decision = await self.endpoint.limiter.hit(self.rate_key, transport="websocket")
            if not decision.allowed:
                message = {
                    "id": id,
                    "type": "error",
                    "payload": [rate_limited_error(decision.retry_after)],
                }
                self.outgoing.put(json.dumps(message), None)
                return
        self.operations[id] = None  # reserved while it starts
        try:
            query = await self.endpoint.persisted.document(
                payload.get("query"),
                payload.get("extensions"),
                viewer=self.viewer,
                variables=payload.get("variables"),
                operation_name=payload.get("operationName"),
            )
        except PersistedQueryError as error:
            self.operations.pop(id, None)
            self.send_error(id, [error.as_graphql_error()])
            return
        if query is None:
            await self.close(4400, "Failed to parse message")
            return
        try:
            await self.start(id, query, payload.get("variables"), payload.get("operationName"))
        except Exception as error:
            if is_outage(error):
                raise  # answered SERVICE_UNAVAILABLE by `handle`
            log.exception("could not start an operation")
            self.operations.pop(id, None)
            self.send_error(id, [GraphQLError("Unexpected error.")])

    async def token_is_live(self) -> bool:
        """A token revoked (or expired) since connection_init starts nothing more."""
        assert self.viewer is not None
        token_id = self.viewer.token_id
        return token_id is None or await self.services.viewers.is_live(token_id)

    async def start(
        self, id: str, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> None:
        """Run the operation through strawberry's pipeline (`Schema.stream`: the schema's
        extensions, as over HTTP). A query or mutation is answered with `next`, then
        `complete`; a subscription's stream is handed over (`StreamHandoff`) and joins its
        group; an error before execution is an `error` message, or closes the socket with 4400
        where the protocol says so (a document that does not parse, no operation to run)."""
        handoff = StreamHandoff()
        context = self.new_context()
        context.stream_handoff = handoff
        results = await self.endpoint.schema.stream(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
        try:
            async with aclosing(results):
                async for result in results:
                    if self.closed or id not in self.operations:
                        return  # the socket closed, or the client completed the operation
                    if not isinstance(result, PreExecutionError | ExecutionResult):
                        raise GraphQLError(NO_INCREMENTAL_DELIVERY)  # incremental delivery
                    if isinstance(result, PreExecutionError):
                        await self.refuse(id, result.errors or [], answered=True)
                        return
                    payload: dict[str, Any] = {"data": result.data}
                    if result.errors:
                        payload["errors"] = [dict(e.formatted) for e in result.errors]
                    message = {"id": id, "type": "next", "payload": payload}
                    self.outgoing.put(json.dumps(message), None)
        except Exception as raised:
            # An extension's exception: strawberry's `execute` answers it as an error before
            # execution (logged and masked by `process_errors`); its `stream` lets it through.
            error = raised if isinstance(raised, GraphQLError) else None
            await self.refuse(id, [error or GraphQLError(str(raised), original_error=raised)])
            return
        if self.closed or id not in self.operations:
            return
        stream, document = handoff.stream, handoff.document
        if stream is None or document is None:  # a query or a mutation, answered
            del self.operations[id]
            self.outgoing.put(json.dumps({"id": id, "type": "complete"}), None)
            return
        assert self.viewer is not None
        documents = self.endpoint.documents
        after = documents.after_variables(query, operation_name, document)
        key = self.group_key(after, query, operation_name, variables)
        selection = Selection(
            documents, self.services, document, operation_name, variables, self.viewer, stream
        )
        member = await self.endpoint.groups.join(self, id, key, selection)
        if self.closed or id not in self.operations:  # the socket closed meanwhile
            self.endpoint.groups.leave(member)
            return
        self.operations[id] = member
        if member.buffer is not None:
            member.group.resume(member, self.services.fanout)

    def group_key(
        self,
        after_variables: frozenset[str],
        query: str,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> tuple[object, ...]:
        """Subscribers with equal keys get the same events rendered the same way: the same
        document and variables (`after` aside), for viewers who may see the same things."""
        viewer = self.viewer
        assert viewer is not None
        shared_variables = {k: v for k, v in (variables or {}).items() if k not in after_variables}
        return (
            query,
            operation_name,
            json.dumps(shared_variables, sort_keys=True, default=str),
            viewer.role,
            viewer.reseller_id,
            viewer.customer_id,
        )

    def new_context(self) -> Context:
        """A GraphQL context for one operation of this socket's viewer, with loaders of its own."""
        assert self.viewer is not None
        return Context(
            services=self.services, viewer=self.viewer, loaders=Loaders(self.services.db)
        )

    async def refuse(
        self, id: str, errors: Sequence[GraphQLError], *, answered: bool = False
    ) -> None:
        """An operation that could not start: close with 4400 where the protocol says so (its
        document does not parse, it has no operation to run), else an `error` message (errors
        `answered` by the pipeline are logged and masked already)."""
        if self.closed or id not in self.operations:
            return
        reason = _close_reason(errors)
        if reason is not None:
            await self.close(4400, reason)
            return
        self.operations.pop(id, None)
        if answered:
            self.send_answered_errors(id, errors)
        else:
            self.send_error(id, errors)

    # --- errors that end one operation --------------------------------------------------------

    def send_error(self, id: str, errors: Any) -> None:
        """An `error` message for errors of the socket's own (logged and masked here)."""
        payload = self.endpoint.documents.formatted(list(errors))
        self.outgoing.put(json.dumps({"id": id, "type": "error", "payload": payload}), None)

    def send_answered_errors(self, id: str, errors: Sequence[GraphQLError]) -> None:
        """An `error` message for errors the pipeline answered (already logged and masked)."""
        payload = [dict(e.formatted) for e in errors]
        self.outgoing.put(json.dumps({"id": id, "type": "error", "payload": payload}), None)

    def end_too_slow(self, member: Member) -> None:
        """The member's queue is full: end it, after what is queued, naming where to resume."""
        if self.operations.get(member.id) is member:
            self.forget(member.id)
            self.send_error(member.id, [too_slow(member.last_id)])

    def end_interrupted(self, member: Member, *, outage: bool = False) -> None:
        """Its events could not be rendered or replayed: end it, naming where to resume (with
        `outage`, because the database is away: coded SERVICE_UNAVAILABLE, as SPEC 8 says)."""
        if self.operations.get(member.id) is member:
            self.forget(member.id)
            error = interrupted(member.last_id)
            if outage:
                found = unavailable_error()
                error = GraphQLError(
                    f"{found['message']}. Subscribe again with `after` set to the cursor in"
                    " `extensions.after`.",
                    extensions={**(error.extensions or {}), **found["extensions"]},
                )
            self.send_error(member.id, [error])

    # --- ending ---------------------------------------------------------------------------------

    def forget(self, id: str) -> None:
        """Stop operation `id` (the client completed it, or it ended)."""
        member = self.operations.pop(id, None)
        if member is not None:
            self.endpoint.groups.leave(member)

    def release(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.init_timer is not None:
            self.init_timer.cancel()
        if self.viewer is not None:
            self.endpoint.discharge(self, self.viewer.token_id)
        for id in list(self.operations):
            self.forget(id)
        self.outgoing.close()

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.release()
        with contextlib.suppress(Exception):  # the socket may be gone already
            await self.send({"type": "websocket.close", "code": code, "reason": reason})


def _close_reason(errors: Sequence[GraphQLError]) -> str | None:
    """Why the protocol closes the socket (4400) for an operation that could not start: its
    document does not parse (a guard's refusal while parsing is coded, and answered instead),
    or it has no operation to run."""
    first = errors[0] if errors else None
    if isinstance(first, GraphQLSyntaxError) and not first.extensions:
        return first.message
    if first is not None and isinstance(first.original_error, CannotGetOperationTypeError):
        reason: str = first.original_error.as_http_error_reason()
        return reason
    return None
