// Runs the graphql-http server audit against the URL given and prints the results as JSON.
// Used by test_audit.py (which starts a real OrderPulse server); `npm ci` installs the pinned audit.
// With AUDIT_TOKEN in the environment (never on a command line), every request the audit makes
// carries `Authorization: Bearer <token>`: the audit runs signed in.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const token = process.env.AUDIT_TOKEN;

function signedIn(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('Authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn: token ? signedIn : fetch });
const report = results.map((result) => ({
  id: result.id,
  name: result.name,
  status: result.status,
  reason: result.status === 'ok' ? null : result.reason,
}));
process.stdout.write(JSON.stringify(report));
