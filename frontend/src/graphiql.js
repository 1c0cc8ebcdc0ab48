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

// GraphiQL keeps its history, favorites and tabs in localStorage, which outlives the tab and the
// sign-out; each history entry carried the request headers, the bearer token with them. A token
// may live only in this tab's sessionStorage (SPEC 8), so GraphiQL gets a storage (its public
// `storage` prop) that keeps every value in localStorage without any "headers" field, and the
// headers editor's own key, if the user turns header persistence on, in sessionStorage.
const NAMESPACE = "graphiql:";
const HEADERS_KEY = `${NAMESPACE}headers`;

function withoutHeaders(value) {
  try {
    return JSON.stringify(JSON.parse(value), (key, field) => (key === "headers" ? undefined : field));
  } catch {
    return value; // not JSON (a flag, a query's text): no headers in it
  }
}

function graphiqlKeys() {
  return Object.keys(window.localStorage).filter((key) => key.startsWith(NAMESPACE));
}

// What earlier versions stored (history with headers) is cleaned once, on load.
for (const key of graphiqlKeys()) {
  if (key === HEADERS_KEY) {
    window.localStorage.removeItem(key);
  } else {
    const value = window.localStorage.getItem(key);
    const clean = withoutHeaders(value);
    if (clean !== value) window.localStorage.setItem(key, clean);
  }
}

const headerlessStorage = {
  getItem(key) {
    const store = key === HEADERS_KEY ? window.sessionStorage : window.localStorage;
    return store.getItem(key);
  },
  setItem(key, value) {
    if (key === HEADERS_KEY) window.sessionStorage.setItem(key, value);
    else window.localStorage.setItem(key, withoutHeaders(value));
  },
  removeItem(key) {
    window.sessionStorage.removeItem(key);
    window.localStorage.removeItem(key);
  },
  clear() {
    for (const key of graphiqlKeys()) window.localStorage.removeItem(key);
    window.sessionStorage.removeItem(HEADERS_KEY);
  },
  get length() {
    return graphiqlKeys().length;
  },
};

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
    storage: headerlessStorage,
  }),
);
