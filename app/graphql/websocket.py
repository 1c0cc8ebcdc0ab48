"""The websocket side of /graphql: graphql-transport-ws, built to fan one event out to thousands.

The protocol is graphql-ws's PROTOCOL.md, answered as strawberry's own handler answers it: a
`connection_init` (its payload carries `Authorization: Bearer <token>`, key in any case) within
`ws_init_timeout_seconds` or 4408; a bad, missing or revoked token 4403; `subscribe` before the ack
4401; a second init 4429; an id already running 4409; a message that is not JSON text of the
protocol, or a document that does not parse, 4400; `ping` answered with `pong`. A browser page from
an origin other than the server's own or `ORDERPULSE_ALLOWED_ORIGINS` is refused before the
handshake completes (HTTP 403); clients that send no Origin are not browsers and are let in. Dead
sockets are found by uvicorn's websocket pings. Only `graphql-transport-ws` is spoken (4406).

Fan-out: subscriptions that run the same document with the same variables (`after` aside) for
viewers who see the same things form one `Group`, an audience of the process's fan-out. For each
event the group accepts, it executes the document once (graphql-core, the event's payload as root
value, the loaders of the batch) and serializes the result once; every member then sends that text
under its own id. A member's messages wait in its connection's outbox, at most `ws_queue_size` of
them: one more ends that subscription with a SLOW_CONSUMER error naming the cursor to resume
after (the messages queued before it are still sent), so a stuck client never holds up the reader
or the other subscribers, and never grows memory.

Resuming: a member given `after` joins its group at once, holds what the group sends while its
replay (executed for it alone, a page at a time, at the pace its socket drains) catches up from
the log, then releases what the replay did not already send.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeGuard, cast

import strawberry
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    get_operation_ast,
    parse,
    specified_rules,
)
from graphql.execution import create_source_event_stream, execute_subscription_event
from graphql.language import FieldNode, Visitor, visit
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter
from strawberry.http.websocket_origin import (
    is_same_origin,
    normalize_allowed_origins,
    normalize_origin,
)
from strawberry.schema.base import BaseSchema
from strawberry.schema.schema import validate_document

from app.access.tokens import is_token_live
from app.access.viewer import Viewer
from app.events.fanout import Batch, EventFilter
from app.events.models import Event
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.subscriptions import LOADERS_KEY, LiveStream, interrupted, too_slow
from app.services import Services

log = logging.getLogger("orderpulse.websocket")

PROTOCOL = "graphql-transport-ws"

Authenticate = Callable[[Mapping[str, Any]], Awaitable[Viewer | None]]
"""The viewer of a connection_init payload, or None."""
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --- documents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A document parsed and validated once, however many subscribers send it."""

    document: DocumentNode | None = None
    operation: OperationDefinitionNode | None = None
    close_reason: str | None = None
    """Set when the protocol says to close the socket (a syntax error, no operation to run)."""
    errors: tuple[GraphQLError, ...] = ()
    """Validation errors, answered with an `error` message."""
    after_variables: frozenset[str] = frozenset()
    """Variables used only as the root field's `after`: they do not change what live events
    render to, so subscribers differing only in them share a group."""


class _VariableUses(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.counts[node.name.value] = self.counts.get(node.name.value, 0) + 1


def _after_only_variables(
    document: DocumentNode, operation: OperationDefinitionNode
) -> frozenset[str]:
    """The variables that appear nowhere but as the value of the root field's `after`."""
    root = operation.selection_set.selections
    if len(root) != 1 or not isinstance(root[0], FieldNode):
        return frozenset()
    after = [
        a.value.name.value
        for a in root[0].arguments or ()
        if a.name.value == "after" and isinstance(a.value, VariableNode)
    ]
    uses = _VariableUses()
    visit(document, uses)  # uses everywhere, fragments included, and every declaration
    declared = Counter(
        definition.variable.name.value
        for node in document.definitions
        if isinstance(node, OperationDefinitionNode)
        for definition in node.variable_definitions or ()
    )
    return frozenset(name for name in after if uses.counts[name] - declared[name] == 1)


# --- sending ------------------------------------------------------------------------------------


def send_now(send: Send, message: dict[str, Any]) -> Awaitable[None] | None:
    """Start an ASGI send; None if it finished at once, else what is left of it, to await.

    A server's `send` on a socket whose buffer has room completes without waiting, so stepping
    its coroutine by hand sends the message with no task per subscriber and per event: at ten
    thousand subscribers, those tasks were most of the fan-out's time and most of what made the
    garbage collector run full passes. A send that must wait is finished by `_finish_send`.
    """
    coroutine = send(message)
    try:
        waiting_on = coroutine.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return None
    return _finish_send(coroutine, waiting_on)


async def _finish_send(coroutine: Any, waiting_on: Any) -> None:
    """Drive a hand-stepped coroutine to its end, as a task would."""
    try:
        while True:
            if isinstance(waiting_on, asyncio.Future):
                await asyncio.wait((waiting_on,))  # its outcome is read by the coroutine itself
            else:
                await asyncio.sleep(0)
            waiting_on = coroutine.send(None)
    except StopIteration:
        return
    finally:
        coroutine.close()


# --- groups -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Selection:
    """What a group renders: a document and its variables for a viewer, over one stream."""

    endpoint: GraphQLWebSocket
    document: DocumentNode
    operation_name: str | None
    variables: dict[str, Any] | None
    viewer: Viewer
    stream: LiveStream[Any]

    async def render(self, events: Sequence[Event], batch: Batch) -> list[str]:
        """Each event's `payload` JSON (data and errors), executed once for all who share it."""
        services = self.endpoint.services
        loaders = batch.shared(LOADERS_KEY, lambda: Loaders(services.db))
        context = Context(services=services, viewer=self.viewer, loaders=loaders)
        executor = self.endpoint.build_executor(
            self.document, context, self.variables, self.operation_name
        )
        if isinstance(executor, list):  # the variables were checked when the member subscribed
            return [self.endpoint.payload_json(ExecutionResult(None, executor))] * len(events)
        results = [
            execute_subscription_event(
                executor.build_per_event_executor(self.stream.payload(event, batch))
            )
            for event in events
        ]
        if any(optimized_is_awaitable(r) for r in results):
            results = await asyncio.gather(*(_awaited(r) for r in results))
        return [self.endpoint.payload_json(r) for r in results]  # type: ignore[arg-type]


async def _awaited(value: Any) -> Any:
    return await value if optimized_is_awaitable(value) else value


class Group:
    """Subscribers who get the same events rendered the same way: one audience of the fan-out."""

    def __init__(self, key: object, selection: Selection) -> None:
        self.key = key
        self.selection = selection
        self.members: dict[Member, None] = {}

    @property
    def event_filter(self) -> EventFilter:
        return self.selection.stream.event_filter

    async def deliver(self, events: Sequence[Event], batch: Batch) -> None:
        try:
            payloads = await self.selection.render(events, batch)
        except Exception:
            log.exception("could not render events for a subscription group")
            for member in list(self.members):
                member.connection.end_interrupted(member)
            return
        fallen_behind: list[Member] = []
        for event, payload in zip(events, payloads, strict=True):
            event_id = event.id or 0
            for member in self.members:
                if not member.offer(event_id, payload):
                    fallen_behind.append(member)
            for member in fallen_behind:
                member.connection.end_too_slow(member)
            fallen_behind.clear()


class Member:
    """One subscription of one connection, in a group."""

    __slots__ = ("buffer", "connection", "group", "id", "last_id", "pending", "prefix", "replay")

    def __init__(self, connection: Connection, id: str, group: Group, after_id: int | None) -> None:
        self.connection = connection
        self.id = id
        self.group = group
        self.prefix = '{"id":' + json.dumps(id) + ',"type":"next","payload":'
        self.pending = 0
        """Messages of this member in the connection's outbox, not yet sent."""
        self.last_id = after_id
        """The id of the last event queued for this member."""
        self.buffer: list[tuple[int, str]] | None = [] if after_id is not None else None
        """While replaying: what the group sent meanwhile."""
        self.replay: asyncio.Task[None] | None = None

    def offer(self, event_id: int, payload: str) -> bool:
        """Queue one event's payload; False when the member's queue is full."""
        limit = self.connection.queue_size
        if self.buffer is not None:
            if len(self.buffer) >= limit:
                return False
            self.buffer.append((event_id, payload))
            return True
        if self.last_id is not None and event_id <= self.last_id:
            return True
        if self.pending >= limit:
            return False
        self.last_id = event_id
        self.connection.enqueue(self.prefix + payload + "}", self)
        return True

    async def catch_up(self) -> None:
        """Replay the log after `last_id` at the socket's pace, then go live."""
        selection = self.group.selection
        assert self.last_id is not None and self.buffer is not None
        fanout = self.connection.services.fanout
        async for batch in fanout.replay(selection.stream.event_filter, after_id=self.last_id):
            payloads = await selection.render(batch.events, batch)
            for event, payload in zip(batch.events, payloads, strict=True):
                self.last_id = event.id
                self.connection.enqueue(self.prefix + payload + "}", self)
            await self.connection.drained()
        held, self.buffer = self.buffer, None
        for event_id, payload in held:
            if not self.offer(event_id, payload):
                self.connection.end_too_slow(self)
                return


# --- the endpoint -------------------------------------------------------------------------------


class WebSocketShortcut:
    """ASGI middleware: websocket requests for `path` go straight to `endpoint`.

    Every idle socket keeps its whole call chain suspended; skipping the HTTP routing and error
    middleware keeps that chain (about 3 KB a socket) and each send short.
    """

    def __init__(self, app: Any, *, path: str, endpoint: GraphQLWebSocket) -> None:
        self.app = app
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class GraphQLWebSocket:
    """The ASGI websocket app for /graphql, and the process's subscription groups."""

    def __init__(
        self, services: Services, schema: BaseSchema, *, authenticate: Authenticate
    ) -> None:
        if not isinstance(schema, strawberry.Schema):
            raise TypeError("the websocket endpoint executes a strawberry.Schema")
        self.services = services
        self.schema = schema
        self.authenticate = authenticate
        settings = services.settings
        try:
            self.allowed_origins = normalize_allowed_origins(sorted(settings.allowed_origins))
        except ValueError as exc:
            raise ValueError(f"ORDERPULSE_ALLOWED_ORIGINS: {exc}") from None
        self.groups: dict[object, Group] = {}
        rules: list[Any] = list(specified_rules)
        self.max_tokens: int | None = None
        self.mask: MaskErrors | None = None
        for extension in schema.extensions:
            if isinstance(extension, AddValidationRules):
                rules += extension.validation_rules
            elif isinstance(extension, MaxTokensLimiter):
                self.max_tokens = extension.max_token_count
            elif isinstance(extension, MaskErrors):
                self.mask = extension
        self.rules = tuple(rules)
        self.prepare = lru_cache(maxsize=512)(self._prepare)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        if (await receive())["type"] != "websocket.connect":
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
        await Connection(self, receive, send).run()

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

    # --- GraphQL ----------------------------------------------------------------------------

    def _prepare(self, query: str, operation_name: str | None) -> Prepared:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            return Prepared(close_reason=error.message)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return Prepared(close_reason="Can't get GraphQL operation type")
        errors = validate_document(self.schema._schema, document, self.rules)
        if errors:
            return Prepared(document, operation, errors=tuple(errors))
        return Prepared(
            document, operation, after_variables=_after_only_variables(document, operation)
        )

    def build_executor(
        self,
        document: DocumentNode,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> Any:
        """graphql-core's executor for `document` (or the list of variable errors)."""
        return self.schema.execution_context_class.build(
            self.schema._schema,
            document,
            None,
            context,
            variables,
            operation_name,
            is_awaitable=cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable),
        )

    def masked(self, errors: Sequence[GraphQLError]) -> list[dict[str, Any]]:
        """Errors as sent: unexpected ones logged and masked exactly as over HTTP."""
        formatted = []
        for error in errors:
            if self.mask is not None and self.mask.should_mask_error(error):
                log.error("unexpected error in a subscription", exc_info=error.original_error)
                error = self.mask.anonymise_error(error)
            formatted.append(dict(error.formatted))
        return formatted

    def payload_json(self, result: ExecutionResult) -> str:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = self.masked(result.errors)
        return json.dumps(payload)

    def join(self, connection: Connection, id: str, key: object, selection: Selection) -> Member:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, selection)
            self.services.fanout.add(group)
        member = Member(connection, id, group, selection.stream.after_id)
        group.members[member] = None
        return member

    def leave(self, member: Member) -> None:
        group = member.group
        group.members.pop(member, None)
        if not group.members and self.groups.get(group.key) is group:
            del self.groups[group.key]
            self.services.fanout.remove(group)


class Connection:
    """One websocket: the protocol's state machine, its subscriptions and its outbox."""

    __slots__ = (
        "closed",
        "closing",
        "endpoint",
        "init_received",
        "operations",
        "outbox",
        "queue_size",
        "receive",
        "send",
        "services",
        "timer",
        "viewer",
        "writer",
    )

    def __init__(self, endpoint: GraphQLWebSocket, receive: Receive, send: Send) -> None:
        self.endpoint = endpoint
        self.services = endpoint.services
        self.queue_size = endpoint.services.settings.ws_queue_size
        self.receive = receive
        self.send = send
        self.viewer: Viewer | None = None
        self.init_received = False
        self.closed = False
        self.operations: dict[str, Member | None] = {}
        self.outbox: list[tuple[str, Member | None]] = []
        self.writer: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Future[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.services.settings.ws_init_timeout_seconds
        self.timer = loop.call_later(timeout, self._init_timed_out)
        try:
            while not self.closed:
                message = await self.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.handle(message)
        finally:
            self.release()

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
            await self.on_init(data.get("payload"))
        elif kind == "ping":
            self.enqueue(json.dumps({"type": "pong"}), None)
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self.on_subscribe(data)
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
        if self.timer is not None:
            self.timer.cancel()
        viewer = await self.endpoint.authenticate(payload)
        if viewer is None:
            await self.close(4403, "Forbidden")
            return
        self.viewer = viewer
        self.enqueue('{"type":"connection_ack"}', None)

    async def on_subscribe(self, data: dict[str, Any]) -> None:
        if self.viewer is None:
            await self.close(4401, "Unauthorized")
            return
        id, payload = data.get("id"), data.get("payload")
        if (
            not isinstance(id, str)
            or not isinstance(payload, dict)
            or not isinstance(payload.get("query"), str)
            or not isinstance(payload.get("variables") or {}, dict)
            or not isinstance(payload.get("operationName"), str | None)
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
        self.operations[id] = None  # reserved while it starts
        try:
            await self.start(
                id, payload["query"], payload.get("variables"), payload.get("operationName")
            )
        except Exception:
            log.exception("could not start an operation")
            self.operations.pop(id, None)
            self.send_error(id, [GraphQLError("Unexpected error.")])

    async def token_is_live(self) -> bool:
        """A token revoked since connection_init starts nothing more."""
        assert self.viewer is not None
        if self.viewer.token_id is None:
            return True
        async with self.services.db.read() as session:
            return await is_token_live(session, self.viewer.token_id)

    async def start(
        self, id: str, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> None:
        endpoint = self.endpoint
        prepared = endpoint.prepare(query, operation_name)
        if prepared.close_reason is not None:
            await self.close(4400, prepared.close_reason)
            return
        if prepared.errors:
            self.operations.pop(id, None)
            self.send_error(id, prepared.errors)
            return
        assert prepared.document is not None and prepared.operation is not None
        assert self.viewer is not None
        context = Context(
            services=self.services, viewer=self.viewer, loaders=Loaders(self.services.db)
        )
        if prepared.operation.operation is not OperationType.SUBSCRIPTION:
            await self.run_single(id, query, variables, operation_name, context)
            return
        executor = endpoint.build_executor(prepared.document, context, variables, operation_name)
        if isinstance(executor, list):
            self.operations.pop(id, None)
            self.send_error(id, executor)
            return
        stream: Any = create_source_event_stream(executor)
        if optimized_is_awaitable(stream):
            stream = await stream
        if self.closed or id not in self.operations:
            return  # the socket closed meanwhile
        if isinstance(stream, ExecutionResult):
            self.operations.pop(id, None)
            self.send_error(id, stream.errors or [])
            return
        assert isinstance(stream, LiveStream)
        viewer = self.viewer
        shared_variables = {
            k: v for k, v in (variables or {}).items() if k not in prepared.after_variables
        }
        key = (
            query,
            operation_name,
            json.dumps(shared_variables, sort_keys=True, default=str),
            viewer.role,
            viewer.reseller_id,
            viewer.customer_id,
        )
        selection = Selection(
            endpoint, prepared.document, operation_name, variables, viewer, stream
        )
        member = endpoint.join(self, id, key, selection)
        self.operations[id] = member
        if member.buffer is not None:
            member.replay = asyncio.create_task(self._catch_up(member))

    async def _catch_up(self, member: Member) -> None:
        try:
            await member.catch_up()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a replay failed")
            self.end_interrupted(member)

    async def run_single(
        self,
        id: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
    ) -> None:
        """A query or mutation sent over the socket: one `next`, then `complete`."""
        result = await self.endpoint.schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
        if self.closed or id not in self.operations:
            return  # the socket closed meanwhile
        del self.operations[id]
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [dict(e.formatted) for e in result.errors]
        self.enqueue(json.dumps({"id": id, "type": "next", "payload": payload}), None)
        self.enqueue(json.dumps({"id": id, "type": "complete"}), None)

    # --- the outbox ---------------------------------------------------------------------------

    def enqueue(self, text: str, member: Member | None) -> None:
        """Send `text` after everything queued before it.

        When nothing is queued and the socket takes it at once (the usual case), it is sent right
        here, with no task and nothing left behind for the garbage collector. Otherwise it waits
        in the outbox, counted in its member's `pending`, for the connection's writer task.
        """
        if self.closed:
            return
        if self.writer is None:
            try:
                rest = send_now(self.send, {"type": "websocket.send", "text": text})
            except Exception:  # the socket went away; the receive loop ends with it
                return
            if rest is None:
                return
            self.writer = asyncio.get_running_loop().create_task(self._drain(rest, member))
        else:
            self.outbox.append((text, member))
        if member is not None:
            member.pending += 1

    async def _drain(self, first: Awaitable[None], member: Member | None) -> None:
        send = self.send
        try:
            await first
            if member is not None:
                member.pending -= 1
            while self.outbox:
                sending, self.outbox = self.outbox, []
                for text, owner in sending:
                    await send({"type": "websocket.send", "text": text})
                    if owner is not None:
                        owner.pending -= 1
        except Exception:  # the socket went away; the receive loop ends with it
            self.outbox = []
        finally:
            self.writer = None

    async def drained(self) -> None:
        """Until everything queued so far has been handed to the socket."""
        while self.writer is not None and not self.closed:
            await asyncio.shield(self.writer)

    def send_error(self, id: str, errors: Sequence[GraphQLError]) -> None:
        payload = self.endpoint.masked(errors)
        self.enqueue(json.dumps({"id": id, "type": "error", "payload": payload}), None)

    def end_too_slow(self, member: Member) -> None:
        """The member's queue is full: end it, after what is queued, naming where to resume."""
        if self.operations.get(member.id) is member:
            self.forget(member.id)
            self.send_error(member.id, [too_slow(member.last_id)])

    def end_interrupted(self, member: Member) -> None:
        """Its events could not be rendered or replayed: end it, naming where to resume."""
        if self.operations.get(member.id) is member:
            self.forget(member.id)
            self.send_error(member.id, [interrupted(member.last_id)])

    # --- ending ---------------------------------------------------------------------------------

    def forget(self, id: str) -> None:
        """Stop operation `id` (the client completed it, or it ended)."""
        member = self.operations.pop(id, None)
        if member is not None:
            self.endpoint.leave(member)
            if member.replay is not None:
                member.replay.cancel()

    def release(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for id in list(self.operations):
            self.forget(id)
        if self.writer is not None:
            self.writer.cancel()
        self.outbox = []

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.release()
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            log.debug("the socket was gone before it could be closed", exc_info=True)
