// GraphiQL for OrderPulse, served by OrderPulse itself (GET /graphql loads this bundle).
// Queries and mutations go over HTTP POST; subscriptions over graphql-transport-ws (graphql-ws),
// with the headers editor's Authorization sent as the connection_init payload.
import React from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createClient } from "graphql-ws";
import { getOperationAST, parse } from "graphql";
import "graphiql/graphiql.css";

const TOKEN_KEY = "orderpulse.token"; // the panel's sign-in (sessionStorage, same origin)

const DEFAULT_QUERY = `# OrderPulse GraphQL API. Put your token in the Headers tab below:
#   {"Authorization": "Bearer <token>"}
# (signed in to /panel in this tab, it is there already). Run with Ctrl-Enter.
{
  viewer { role reseller { name } customer { name } }
  orders(first: 10, filter: {requiresManualAction: true}) {
    totalCount
    edges { node { number status total { amount currency } failure { message remedy slaDeadline } availableActions } }
  }
}
`;

function defaultHeaders() {
  const token = window.sessionStorage.getItem(TOKEN_KEY);
  return JSON.stringify({ Authorization: token ? `Bearer ${token}` : "Bearer <token>" }, null, 2);
}

const url = new URL(window.location.href);
url.search = "";
url.hash = "";
const wsUrl = new URL(url);
wsUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";

function isSubscription(query, operationName) {
  try {
    return getOperationAST(parse(query), operationName || undefined)?.operation === "subscription";
  } catch {
    return false; // let the server report the syntax error
  }
}

// One socket per set of headers: the headers editor's Authorization is the connection_init payload.
let socket = null;
function socketFor(headers) {
  const key = JSON.stringify(headers);
  if (socket?.key !== key) {
    socket?.client.dispose();
    socket = { key, client: createClient({ url: wsUrl.toString(), connectionParams: headers, lazy: true }) };
  }
  return socket.client;
}

async function fetcher(params, options = {}) {
  const headers = options.headers ?? {};
  if (isSubscription(params.query, params.operationName)) {
    return socketFor(headers).iterate(params);
  }
  const response = await fetch(url.toString(), {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json", ...headers },
    body: JSON.stringify(params),
  });
  return response.json();
}

const root = createRoot(document.getElementById("graphiql"));
root.render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: DEFAULT_QUERY,
    defaultHeaders: defaultHeaders(),
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  }),
);
