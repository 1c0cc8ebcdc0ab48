// PostGraphile 5 (Grafast) over OrderPulse's tables: the read benchmark's peer
// (scripts/bench_read.py). Amber preset, as documented; `node server.mjs URL PORT WORKERS` runs
// WORKERS processes (node:cluster) on 127.0.0.1:PORT, /graphql. No token, no tenant rule.
import cluster from "node:cluster";
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const [connectionString, port, workers] = process.argv.slice(2);

if (cluster.isPrimary && Number(workers) > 1) {
  for (let i = 0; i < Number(workers); i++) cluster.fork();
  cluster.on("exit", () => process.exit(1));
} else {
  const preset = {
    extends: [PostGraphileAmberPreset],
    pgServices: [makePgService({ connectionString, schemas: ["public"], poolConfig: { max: 20 } })],
    grafserv: { graphqlPath: "/graphql", watch: false, graphiql: false },
    grafast: { explain: false },
  };
  const serv = postgraphile(preset).createServ(grafserv);
  const server = createServer();
  await serv.addTo(server);
  server.listen(Number(port), "127.0.0.1");
}
