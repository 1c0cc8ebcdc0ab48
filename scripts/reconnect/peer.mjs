// The peer of scripts/bench_reconnect.py: graphql-js + graphql-ws (the reference server) on `ws`,
// with in-memory pub/sub and no durable log (an `after` argument is accepted and ignored: it
// cannot replay). The subscription answers the same document as OrderPulse's orderStatusChanged,
// so one client serves both servers.
//   node peer.mjs PORT TOKEN      then: POST /publish publishes one change to every subscriber
import http from "node:http";
import { buildSchema } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";

const [port, token] = process.argv.slice(2);

const schema = buildSchema(`
  enum OrderStatus { NW OP TM HL NP SS WA WP PR LO MO PF WZ CP CL }
  type Order { id: ID! number: String! status: OrderStatus! version: Int! }
  type OrderStatusChange { cursor: String! order: Order! from: OrderStatus to: OrderStatus!
                           action: String occurredAt: String! }
  input OrderStatusChangeFilter { resellerId: ID customerId: ID status: [OrderStatus!] }
  type Query { ok: Boolean }
  type Subscription {
    orderStatusChanged(filter: OrderStatusChangeFilter, after: String): OrderStatusChange!
  }
`);

// In-memory pub/sub: one async queue per subscriber.
const subscribers = new Set();
let sequence = 0;
function subscribe() {
  const queue = [];
  let wake = null;
  const subscriber = {
    push(value) {
      queue.push(value);
      if (wake) {
        wake();
        wake = null;
      }
    },
  };
  subscribers.add(subscriber);
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      while (queue.length === 0) await new Promise((resolve) => (wake = resolve));
      return { value: queue.shift(), done: false };
    },
    async return() {
      subscribers.delete(subscriber);
      return { value: undefined, done: true };
    },
  };
}

const roots = {
  orderStatusChanged: () => subscribe(),
};

const server = http.createServer((request, response) => {
  if (request.method === "POST" && request.url === "/publish") {
    sequence += 1;
    const change = {
      orderStatusChanged: {
        cursor: `peer:${sequence}`,
        order: { id: "1", number: "SO-000001", status: "PF", version: sequence },
        from: "PR",
        to: "PF",
        action: "REPORT_FAILED",
        occurredAt: new Date().toISOString(),
      },
    };
    for (const subscriber of subscribers) subscriber.push(change);
    response.end(JSON.stringify({ subscribers: subscribers.size }));
    return;
  }
  response.statusCode = request.url === "/healthz" ? 200 : 404;
  response.end("{}");
});
const wss = new WebSocketServer({ server, path: "/graphql", perMessageDeflate: false });
useServer(
  {
    schema,
    roots: { subscription: roots },
    onConnect: (ctx) => {
      const params = ctx.connectionParams || {};
      const key = Object.keys(params).find((k) => k.toLowerCase() === "authorization");
      return key !== undefined && params[key] === `Bearer ${token}`;
    },
  },
  wss,
);
server.listen(Number(port), "127.0.0.1", () => process.stdout.write("listening\n"));
