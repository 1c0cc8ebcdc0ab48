// Apollo Client's normalized cache against a live OrderPulse (issue 20): a cached
// `notificationSettings` query, then `updateNotificationSettings` with no update function, no
// refetch and no typePolicies, then the query read back from the cache alone. Prints JSON:
// { withId: {before, payload, cached}, withoutId: {...} } where `withoutId` selects no `id` (the
// control: Apollo cannot tell it is the same object, so its cached query stays stale).
// The token comes from AUDIT_TOKEN in the environment; the reseller's id is argv[3].
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';

const [url, resellerId] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${process.env.AUDIT_TOKEN}` };

async function roundTrip(fields, change) {
  const client = new ApolloClient({ link: new HttpLink({ uri: url, headers }), cache: new InMemoryCache() });
  const query = gql`query Settings { notificationSettings { ${fields} } }`;
  const mutation = gql`mutation Update($input: UpdateNotificationSettingsInput!) {
    updateNotificationSettings(input: $input) { notificationSettings { ${fields} } userErrors { code } } }`;
  const before = (await client.query({ query })).data.notificationSettings;
  const result = await client.mutate({ mutation, variables: { input: { resellerId, ...change } } });
  const cached = client.readQuery({ query }).notificationSettings;
  client.stop();
  return { before, payload: result.data.updateNotificationSettings.notificationSettings, cached };
}

const withoutId = await roundTrip('notifyReseller notifyCustomer', { notifyCustomer: true });
const withId = await roundTrip('id notifyReseller notifyCustomer', { notifyReseller: true });
process.stdout.write(JSON.stringify({ withId, withoutId }));
