"""The websocket side of /graphql: graphql-transport-ws, built to fan one event out to thousands.

One module per job: `protocol` (the endpoint and each socket's state machine), `documents`
(parsing, guards and validation of what a socket sends, once per document), `groups` (subscribers
who see the same events rendered once) and `sending` (each socket's send queue).
"""

from app.graphql.ws.protocol import GraphQLWebSocket, WebSocketShortcut

__all__ = ["GraphQLWebSocket", "WebSocketShortcut"]
