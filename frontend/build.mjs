// Bundles the npm libraries the control panels and GraphiQL use into app/panel/static/vendor/,
// so OrderPulse serves every asset itself (no CDN). The panel's own code (app/panel/static/*.js)
// is plain ES modules and is not built. The output is committed; CI rebuilds it and fails when
// the committed files differ (`npm ci && npm run build && git diff --exit-code`).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, "..", "app", "panel", "static", "vendor");

const common = {
  bundle: true,
  minify: true,
  legalComments: "linked",
  target: ["es2020"],
  logLevel: "info",
  define: { "process.env.NODE_ENV": '"production"' },
};

// graphql-ws's reference client, as an ES module the panel imports.
await build({
  ...common,
  entryPoints: { "graphql-ws": path.join(here, "src", "graphql-ws.js") },
  format: "esm",
  outdir: out,
});

// GraphiQL with React, its fetcher (HTTP, and graphql-ws for subscriptions) and its styles.
await build({
  ...common,
  entryPoints: { graphiql: path.join(here, "src", "graphiql.js") },
  format: "iife",
  outdir: out,
  loader: { ".woff": "file", ".woff2": "file", ".ttf": "file", ".svg": "file" },
  assetNames: "graphiql-assets/[name]-[hash]",
});
