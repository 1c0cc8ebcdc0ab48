// Incidents in the panel (SPEC 10): support sees the open ones above the orders, each with its
// live counts and a "Resubmit all" button; every viewer sees an order's incident in its detail.
// The list follows `incidentChanged` (each change carries the incident as it is then).
import * as api from "./api.js";
import { el } from "./dom.js";

const open = new Map(); // incident id -> incident (OPEN only)
const messages = new Map(); // incident id -> {text, error}: the outcome of the last resubmit here
let token = null;

/** Load the open incidents (support only) and show them. */
export async function loadIncidents(signedInToken) {
  token = signedInToken;
  const data = await api.graphql(token, api.OPEN_INCIDENTS);
  open.clear();
  for (const edge of data.incidents.edges) open.set(edge.node.id, edge.node);
  render();
}

/** An incidentChanged event: keep an open incident's counts current, drop a resolved one. */
export function applyIncidentChange(change) {
  const incident = change.incident;
  if (incident.status === "OPEN") open.set(incident.id, incident);
  else open.delete(incident.id);
  render();
}

export function clearIncidents() {
  open.clear();
  messages.clear();
  token = null;
  render();
}

function render() {
  const section = document.querySelector("[data-incidents]");
  const list = document.querySelector("[data-incident-list]");
  section.hidden = open.size === 0;
  const items = [...open.values()]
    .sort((a, b) => b.openedAt.localeCompare(a.openedAt))
    .map((incident) => {
      const said = messages.get(incident.id);
      const message = el("span", { class: `message${said?.error ? " error" : ""}`, "data-incident-message": "", role: "status" }, said?.text ?? "");
      const button = el("button", { type: "button", "data-action": "RESUBMIT_INCIDENT" }, "Resubmit all");
      button.disabled = incident.pendingCount === 0;
      button.addEventListener("click", () => resubmit(incident, button, message));
      return el(
        "li",
        { class: "incident", "data-incident-id": incident.id, "data-incident-reason": incident.reason.reason },
        el("strong", {}, `${incident.number} · ${incident.reason.message}`),
        " ",
        el("span", { class: "badge" }, el("span", { "data-incident-count": "" }, String(incident.orderCount)), " orders"),
        " ",
        el("span", { class: "badge" }, el("span", { "data-incident-pending": "" }, String(incident.pendingCount)), " still failed"),
        el("p", { class: "hint" }, incident.reason.remedy),
        button,
        message,
      );
    });
  list.replaceChildren(...items);
}

async function resubmit(incident, button, message) {
  button.disabled = true;
  message.className = "message";
  message.textContent = "Resubmitting…";
  let said;
  try {
    const data = await api.graphql(token, api.RESUBMIT_INCIDENT, { input: { incidentId: incident.id } });
    const result = data.resubmitIncidentOrders;
    if (result.userErrors.length) said = { text: result.userErrors[0].message, error: true };
    else {
      open.set(result.incident.id, result.incident);
      said = { text: `${result.resubmitted} resubmitted, ${result.skipped} skipped (no longer failed).` };
    }
  } catch (error) {
    said = { text: error.message, error: true };
  }
  messages.set(incident.id, said);
  render();
}

/** The "part of incident" line of an order's detail, or null. */
export function orderIncident(order) {
  const incident = order.incident;
  if (!incident) return null;
  return el(
    "p",
    { class: "incident-note", "data-order-incident": incident.id },
    `Part of incident ${incident.number} (${incident.reason.message}): `,
    `${incident.orderCount} order${incident.orderCount === 1 ? "" : "s"}, ${incident.pendingCount} still failed`,
    incident.status === "OPEN" ? "." : ", resolved.",
  );
}
