// The panel's live side: one graphql-transport-ws socket (the reference graphql-ws client) with two
// subscriptions, orderStatusChanged and notificationChanged. Each remembers the cursor of the last
// change it received and, after a dropped connection, resubscribes with it as `after`, so the
// server replays whatever happened meanwhile: nothing is missed.
//
// Before the first change arrives there is no cursor to resume from. So after every (re)connection
// the page sends a tiny query over the same socket once its subscriptions are sent: the server
// handles a socket's messages in order, so when that query's answer arrives the subscriptions are
// registered, and a snapshot loaded over HTTP from then on cannot miss a change (`onSnapshot`).
// The page merges by `Order.version`, so a change seen twice is harmless.
import { createClient } from "./vendor/graphql-ws.js";
import { INCIDENT_CHANGES, NOTIFICATION_CHANGES, ORDER_CHANGES } from "./api.js";

const PING_EVERY_MS = 5000;
const PONG_WITHIN_MS = 3000;
const FATAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4406, 4409, 4429]);

export function connectLive({ token, onState, onOrderChange, onNotificationChange, onIncidentChange, onSnapshot, onRefused }) {
  const url = new URL("/graphql", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const streams = {
    orders: { query: ORDER_CHANGES, field: "orderStatusChanged", handle: onOrderChange },
    notifications: { query: NOTIFICATION_CHANGES, field: "notificationChanged", handle: onNotificationChange },
  };
  // support only (SPEC 10): the open incidents above the orders
  if (onIncidentChange) streams.incidents = { query: INCIDENT_CHANGES, field: "incidentChanged", handle: onIncidentChange };
  let disposed = false;
  let pongTimer = null;
  let wakeRetry = null;

  const client = createClient({
    url: url.toString(),
    lazy: false,
    keepAlive: PING_EVERY_MS,
    retryAttempts: Infinity,
    connectionParams: { Authorization: `Bearer ${token}` },
    shouldRetry: (event) => !(event && FATAL_CLOSE_CODES.has(event.code)),
    retryWait: (retries) =>
      new Promise((resolve) => {
        const delay = Math.min(200 * 2 ** retries, 5000) * (0.75 + Math.random() / 4);
        const timer = setTimeout(resolve, delay);
        wakeRetry = () => {
          clearTimeout(timer);
          resolve();
        };
      }),
    onNonLazyError: (event) => refused(event),
    on: {
      connecting: () => onState(navigator.onLine ? "connecting" : "offline"),
      connected: (socket) => {
        onState("live");
        setTimeout(() => synchronize(socket), 0); // after the resubscriptions are sent
      },
      closed: (event) => {
        clearTimeout(pongTimer);
        if (disposed) return;
        onState("offline");
        if (event && FATAL_CLOSE_CODES.has(event.code)) refused(event);
      },
      ping: (received) => {
        if (!received) pongTimer = setTimeout(() => client.terminate(), PONG_WITHIN_MS);
      },
      pong: (received) => {
        if (received) clearTimeout(pongTimer);
      },
    },
  });

  function refused(event) {
    if (disposed) return;
    dispose();
    onRefused(event);
  }

  let refusedNotified = false;
  function subscribe(stream) {
    stream.payload = { query: stream.query, variables: { after: stream.cursor ?? null } };
    stream.dispose = client.subscribe(stream.payload, {
      next: (result) => {
        const change = result.data?.[stream.field];
        if (!change) return;
        stream.cursor = change.cursor;
        stream.payload.variables.after = change.cursor; // a resubscription resumes from here
        stream.handle(change);
      },
      error: (error) => {
        if (disposed) return;
        if (error && FATAL_CLOSE_CODES.has(error.code)) {
          if (!refusedNotified) refused(error);
          refusedNotified = true;
          return;
        }
        // The server ended it (e.g. SLOW_CONSUMER): resume after the cursor it names, or ours.
        const errors = Array.isArray(error) ? error : [];
        const named = errors.find((e) => e.extensions && "after" in e.extensions);
        if (named) stream.cursor = named.extensions.after;
        else if (errors.some((e) => e.extensions?.code === "BAD_USER_INPUT")) stream.cursor = null;
        setTimeout(() => {
          if (disposed) return;
          subscribe(stream);
          if (stream.cursor == null) synchronize(null);
        }, 200);
      },
      complete: () => {},
    });
  }

  let synchronizing = 0;
  function synchronize(socket) {
    const generation = ++synchronizing;
    const needsSnapshot = Object.values(streams).some((s) => s.cursor == null);
    client.subscribe(
      { query: "query PanelBarrier { __typename }" },
      {
        next: () => {},
        error: () => {},
        complete: () => {
          if (disposed || generation !== synchronizing) return;
          if (needsSnapshot) onSnapshot();
        },
      },
    );
  }

  function onOffline() {
    onState("offline");
    client.terminate();
  }
  function onOnline() {
    if (wakeRetry) wakeRetry();
  }
  window.addEventListener("offline", onOffline);
  window.addEventListener("online", onOnline);

  for (const stream of Object.values(streams)) subscribe(stream);

  function dispose() {
    if (disposed) return;
    disposed = true;
    window.removeEventListener("offline", onOffline);
    window.removeEventListener("online", onOnline);
    clearTimeout(pongTimer);
    for (const stream of Object.values(streams)) stream.dispose?.();
    client.dispose();
  }

  return { dispose, cursors: () => Object.fromEntries(Object.entries(streams).map(([k, s]) => [k, s.cursor])) };
}
