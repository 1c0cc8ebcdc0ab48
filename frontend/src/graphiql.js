// GraphiQL for OrderPulse, served by OrderPulse itself (GET /graphql loads this bundle).
// Queries and mutations go over HTTP POST; subscriptions over graphql-transport-ws (graphql-ws),
// with the headers editor's Authorization sent as the connection_init payload.
import React from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
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

const fetcher = createGraphiQLFetcher({
  url: url.toString(),
  subscriptionUrl: wsUrl.toString(),
  enableIncrementalDelivery: false,
});

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
