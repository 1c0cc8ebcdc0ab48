// Runs the graphql-http server audit against the URL given and prints the results as JSON.
// Used by test_audit.py (which starts a real OrderPulse server); `npm ci` installs the pinned audit.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
const report = results.map((result) => ({
  id: result.id,
  name: result.name,
  status: result.status,
  reason: result.status === 'ok' ? null : result.reason,
}));
process.stdout.write(JSON.stringify(report));
