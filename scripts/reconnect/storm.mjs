// A connection storm of raw graphql-transport-ws clients (the `ws` package), driven by
// scripts/bench_reconnect.py over stdin/stdout, one JSON object a line.
//
// First line in: {url, tokens, query, cursors, starts, connectConcurrency, timeoutMs}
//   cursors: the event cursors of the log, oldest first; starts[i]: the index in `cursors` that
//   client i resumes after (-1: no `after`, as a live-only client). Client i must then receive
//   exactly cursors[starts[i] + 1 ...] in order (its replay), and nothing else, before any live
//   event.
// Out: {"caughtUp": ...} once every client has its replay (or the timeout struck), then for each
// "probe" line in, {"probe": ...}: the times (ms since the line arrived) at which each client got
// its next message, for one live event published by the driver right after it sent "probe".
import { performance } from "node:perf_hooks";
import readline from "node:readline";
import WebSocket from "ws";

const lines = readline.createInterface({ input: process.stdin });
const iterator = lines[Symbol.asyncIterator]();
const next = async () => (await iterator.next()).value;
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const config = JSON.parse(await next());
const { url, tokens, query, cursors, starts } = config;
const total = starts.length;
const problems = [];
const problem = (text) => {
  if (problems.length < 20) problems.push(text);
};

let acked = 0;
let caughtUp = 0;
let closedEarly = 0;
let lastAckAt = 0;
let lastCaughtUpAt = 0;
let probe = null; // {started, times: []}
let onAllCaughtUp = null;
const t0 = performance.now();

class Client {
  constructor(index) {
    this.index = index;
    this.expected = cursors.slice(starts[index] + 1);
    this.received = 0;
    this.done = false;
  }

  open() {
    return new Promise((resolve) => {
      const socket = new WebSocket(url, "graphql-transport-ws", { perMessageDeflate: false });
      this.socket = socket;
      let settled = false;
      const settle = () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      socket.on("open", () => {
        const token = tokens[this.index % tokens.length];
        socket.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }));
      });
      socket.on("message", (data) => {
        const message = JSON.parse(data.toString());
        if (message.type === "connection_ack") {
          acked += 1;
          lastAckAt = performance.now();
          const variables = starts[this.index] >= 0 ? { after: cursors[starts[this.index]] } : {};
          socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
          settle();
          if (this.expected.length === 0) this.caughtUp();
        } else if (message.type === "next") {
          this.onNext(message.payload);
        } else if (message.type === "ping") {
          socket.send(JSON.stringify({ type: "pong" }));
        } else if (message.type !== "pong") {
          problem(`client ${this.index}: ${JSON.stringify(message).slice(0, 300)}`);
        }
      });
      socket.on("error", (error) => {
        problem(`client ${this.index}: ${error.message}`);
        settle();
      });
      socket.on("close", (code, reason) => {
        if (!stopping) {
          closedEarly += 1;
          problem(`client ${this.index} closed ${code} ${reason}`);
        }
        settle();
      });
    });
  }

  onNext(payload) {
    if (payload.errors) {
      problem(`client ${this.index}: ${JSON.stringify(payload.errors).slice(0, 300)}`);
      return;
    }
    const change = payload.data.orderStatusChanged;
    if (!this.done) {
      const want = this.expected[this.received];
      if (change.cursor !== want) {
        problem(`client ${this.index}: got ${change.cursor} where ${want} was due (replay #${this.received})`);
      }
      this.received += 1;
      if (this.received === this.expected.length) this.caughtUp();
      return;
    }
    if (probe !== null && !this.probed) {
      this.probed = true;
      probe.times.push(performance.now() - probe.started);
      if (probe.times.length === total) probe.resolve();
    } else {
      problem(`client ${this.index}: an event it did not expect: ${change.cursor}`);
    }
  }

  caughtUp() {
    this.done = true;
    caughtUp += 1;
    lastCaughtUpAt = performance.now();
    if (caughtUp === total && onAllCaughtUp) onAllCaughtUp();
  }
}

let stopping = false;
const clients = Array.from({ length: total }, (_, i) => new Client(i));
const allCaughtUp = new Promise((resolve) => {
  onAllCaughtUp = resolve;
});

// The storm: every client opens as fast as the connect window allows.
let nextClient = 0;
const opener = async () => {
  while (nextClient < total) {
    const client = clients[nextClient++];
    await client.open();
  }
};
await Promise.all(Array.from({ length: config.connectConcurrency }, opener));
const timeout = new Promise((resolve) => setTimeout(resolve, config.timeoutMs));
await Promise.race([allCaughtUp, timeout]);
say({
  caughtUp: {
    clients: total,
    acked,
    caughtUp,
    closedEarly,
    ackedMs: lastAckAt - t0,
    allCaughtUpMs: caughtUp === total ? lastCaughtUpAt - t0 : null,
    problems: [...problems],
  },
});
problems.length = 0;

for (;;) {
  const command = await next();
  if (command !== "probe") break;
  const started = performance.now();
  const done = new Promise((resolve) => {
    probe = { started, times: [], resolve };
  });
  await Promise.race([done, new Promise((resolve) => setTimeout(resolve, config.timeoutMs))]);
  await new Promise((resolve) => setTimeout(resolve, 300)); // anything doubled shows up
  say({ probe: { received: probe.times.length, expected: total, times: probe.times, problems: [...problems] } });
  problems.length = 0;
  probe = null;
  for (const client of clients) client.probed = false;
}
stopping = true;
for (const client of clients) client.socket?.terminate();
process.exit(0);
