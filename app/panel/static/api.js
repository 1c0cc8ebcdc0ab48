// The panel's HTTP side: one POST /graphql per query or mutation, with the signed-in token.

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** POST a document; resolve to `data`, or throw an ApiError (code from `extensions.code`). */
export async function graphql(token, query, variables = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError("OrderPulse cannot be reached. Check your connection.", "NETWORK");
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`OrderPulse answered HTTP ${response.status}.`, "HTTP");
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.message, first.extensions?.code ?? "ERROR");
  }
  return body.data;
}

const ROW = `id number type status version requiresManualAction total { amount currency }
  customer { id name } reseller { id name } createdAt updatedAt`;

const NOTE = `id kind recipientRole email subject status attempts lastError createdAt sentAt
  order { id number }`;

const INCIDENT = `id number status openedAt orderCount pendingCount reason { reason message remedy }`;

export const BOOT = `query PanelBoot {
  viewer { role reseller { id name email } customer { id name contactEmail reseller { id name } } }
  orderStatuses { code name requiresManualAction }
}`;

export const ORDERS = `query PanelOrders($filter: OrderFilter, $after: String) {
  orders(first: 25, filter: $filter, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { ${ROW} } }
  }
}`;

export const COUNTS = `query PanelCounts { orderStatusCounts { status count } }`;

export const ORDER_DETAIL = `query PanelOrder($id: ID!) {
  order(id: $id) {
    ${ROW}
    items { description quantity unitPrice }
    failure { reason message remedy details failedAt slaDeadline escalatedAt }
    availableActions
    history { cursor from to action reason actor comment occurredAt }
    notifications { ${NOTE} }
    incident { ${INCIDENT} }
  }
}`;

export const NOTIFICATIONS = `query PanelNotifications {
  notifications(first: 30) { edges { node { ${NOTE} } } }
}`;

export const CUSTOMERS = `query PanelCustomers {
  customers(first: 100) { totalCount edges { node { id name contactEmail reseller { id name } } } }
}`;

export const RESELLERS = `query PanelResellers { resellers(first: 100) { edges { node { id name } } } }`;

const SETTINGS_FIELDS = `reseller { id name email } notifyReseller notifyCustomer
  orderNotificationTemplate { id name } supportAlwaysNotified`;

export const SETTINGS = `query PanelSettings($resellerId: ID) {
  notificationSettings(resellerId: $resellerId) { ${SETTINGS_FIELDS} }
  notificationTemplates { id name }
}`;

export const PERFORM_ACTION = `mutation PanelAction($input: PerformOrderActionInput!) {
  performOrderAction(input: $input) {
    order { ${ROW} }
    userErrors { field message code }
  }
}`;

export const UPDATE_SETTINGS = `mutation PanelSettingsSave($input: UpdateNotificationSettingsInput!) {
  updateNotificationSettings(input: $input) {
    notificationSettings { ${SETTINGS_FIELDS} }
    userErrors { field message code }
  }
}`;

export const UPDATE_CONTACT = `mutation PanelContact($input: UpdateCustomerContactInput!) {
  updateCustomerContact(input: $input) {
    customer { id name contactEmail reseller { id name } }
    userErrors { field message code }
  }
}`;

export const ORDER_CHANGES = `subscription PanelOrderChanges($after: String) {
  orderStatusChanged(after: $after) {
    cursor from to action reason actor occurredAt
    order { ${ROW} }
  }
}`;

export const NOTIFICATION_CHANGES = `subscription PanelNotificationChanges($after: String) {
  notificationChanged(after: $after) { cursor notification { ${NOTE} } }
}`;

export const OPEN_INCIDENTS = `query PanelIncidents {
  incidents(first: 20, filter: { status: OPEN }) { edges { node { ${INCIDENT} } } }
}`;

export const RESUBMIT_INCIDENT = `mutation PanelResubmitIncident($input: ResubmitIncidentOrdersInput!) {
  resubmitIncidentOrders(input: $input) {
    resubmitted skipped incident { ${INCIDENT} } userErrors { field message code }
  }
}`;

export const INCIDENT_CHANGES = `subscription PanelIncidentChanges($after: String) {
  incidentChanged(after: $after) { cursor change incident { ${INCIDENT} } }
}`;
