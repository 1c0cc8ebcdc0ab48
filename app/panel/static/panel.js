// The Reseller and Customer Control Panels: sign-in, orders with live status, order detail and
// actions, notifications, customers' contact e-mail and notification settings (SPEC section 9).
// Plain DOM code; every value from the API is inserted as text, never as HTML.
import * as api from "./api.js";
import { connectLive } from "./live.js";
import { el, formatCountdown, formatDate, formatMoney, humanize } from "./dom.js";
import { applyIncidentChange, clearIncidents, loadIncidents, orderIncident } from "./incidents.js";

const TOKEN_KEY = "orderpulse.token";
const SNAPSHOT_FALLBACK_MS = 3000;
const $ = (selector, root = document) => root.querySelector(selector);

const ACTION_LABELS = {
  HOLD: "Hold",
  RELEASE_HOLD: "Release hold",
  ACTIVATE_ACCOUNT: "Activate account",
  ATTACH_PAYMENT_METHOD: "Attach payment method",
  APPROVE: "Approve",
  MARK_FRAUD: "Mark as fraud",
  RECORD_PAYMENT: "Record payment",
  RESUBMIT: "Resubmit",
  MARK_COMPLETED: "Mark completed",
  MARK_FAILED: "Mark failed",
  CANCEL: "Cancel order",
};

const state = {
  token: null,
  viewer: null,
  statuses: new Map(), // code -> {name, requiresManualAction}
  orders: new Map(), // id -> order row (newest version seen)
  order_ids: [], // the table's order, newest first
  page: null, // {hasNextPage, endCursor}
  totalCount: 0,
  selectedId: null,
  detail: null,
  notifications: new Map(),
  live: null,
  settingsResellerId: null,
  actionMessage: null, // {orderId, text, error}: the outcome of the last action taken here
};

// --- sign-in -------------------------------------------------------------------------------------

function start() {
  $("[data-sign-in-form]").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("input[name=token]").value.trim();
    if (token) signIn(token);
  });
  $("button[name=sign-out]").addEventListener("click", () => signOut());
  $("[data-filters]").addEventListener("change", () => loadOrders());
  $("[data-filters]").addEventListener("submit", (event) => event.preventDefault());
  $("button[name=load-more]").addEventListener("click", () => loadOrders({ more: true }));
  $("[data-notification-settings]").addEventListener("submit", saveSettings);
  $("[data-order-detail]").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDetail();
  });
  $("select[name=reseller]").addEventListener("change", (event) => loadSettings(event.target.value));
  setInterval(tickCountdowns, 1000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else showSignIn();
}

function showSignIn(message) {
  $("[data-sign-in]").hidden = false;
  $("[data-app]").hidden = true;
  $("button[name=sign-out]").hidden = true;
  $("[data-viewer]").hidden = true;
  const box = $("[data-sign-in-message]");
  box.hidden = !message;
  box.textContent = message ?? "";
  setConnection("offline");
  $("input[name=token]").focus();
}

async function signIn(token) {
  let boot;
  try {
    boot = await api.graphql(token, api.BOOT);
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(
      error.code === "UNAUTHENTICATED"
        ? "That token was not accepted (unknown, revoked or expired)."
        : error.message,
    );
    return;
  }
  if (!["SUPPORT", "RESELLER", "CUSTOMER"].includes(boot.viewer.role)) {
    showSignIn("This token is the provisioning platform's; the panels are for support, resellers and customers.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  Object.assign(state, { token, viewer: boot.viewer });
  state.statuses = new Map(boot.orderStatuses.map((s) => [s.code, s]));
  $("input[name=token]").value = "";
  renderShell();
  state.live = connectLive({
    token,
    onState: setConnection,
    onOrderChange: applyOrderChange,
    onNotificationChange: applyNotificationChange,
    onIncidentChange: boot.viewer.role === "SUPPORT" ? applyIncidentChange : null,
    onSnapshot: () => {
      snapshotLoaded = true;
      return loadEverything();
    },
    onRefused: (event) =>
      signOut(
        event?.code === 4429
          ? "Too many panels are open with this token. Close one, then sign in again."
          : "Your token was refused (revoked or expired). Sign in again.",
      ),
  });
  // Show the data even if the live connection is slow to come up; it reloads once live.
  snapshotLoaded = false;
  setTimeout(() => {
    if (!snapshotLoaded && state.token === token) loadEverything();
  }, SNAPSHOT_FALLBACK_MS);
}

let snapshotLoaded = false;

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem("graphiql:headers"); // GraphiQL's headers editor, if kept in this tab
  state.live?.dispose();
  Object.assign(state, {
    token: null, viewer: null, live: null, selectedId: null, detail: null,
    orders: new Map(), order_ids: [], notifications: new Map(),
  });
  $("[data-orders] tbody").replaceChildren();
  $("[data-notification-list] tbody").replaceChildren();
  clearIncidents();
  $("[data-order-detail]").hidden = true;
  showSignIn(message);
}

function setConnection(value) {
  const box = $("[data-connection]");
  box.dataset.connection = value;
  box.textContent = { live: "Live", connecting: "Connecting…", offline: "Offline" }[value];
}

function renderShell() {
  const { role, reseller, customer } = state.viewer;
  const isSupport = role === "SUPPORT";
  const isCustomer = role === "CUSTOMER";
  $("[data-sign-in]").hidden = true;
  $("[data-app]").hidden = false;
  $("button[name=sign-out]").hidden = false;
  $("[data-panel-title]").textContent = isCustomer ? "Customer Control Panel" : isSupport ? "Support" : "Reseller Control Panel";
  const who = $("[data-viewer]");
  who.hidden = false;
  who.dataset.role = role;
  who.textContent = isSupport ? "Support" : isCustomer ? customer.name : reseller.name;
  document.title = `OrderPulse · ${who.textContent}`;
  for (const cell of document.querySelectorAll("[data-reseller-column]")) cell.hidden = !isSupport;
  $("[data-customers]").hidden = isCustomer;
  $("[data-nav-customers]").hidden = isCustomer;
  $("[data-settings-section]").hidden = isCustomer;
  $("[data-nav-settings]").hidden = isCustomer;
  $("[data-reseller-picker]").hidden = !isSupport;
  $("[data-account]").hidden = !isCustomer;
  $("[data-nav-account]").hidden = !isCustomer;
  if (isCustomer) {
    $("[data-account-facts]").replaceChildren(
      el("dt", {}, "Customer"), el("dd", {}, customer.name),
      el("dt", {}, "Contact e-mail"), el("dd", { "data-contact-email": "" }, customer.contactEmail),
      el("dt", {}, "Reseller"), el("dd", {}, customer.reseller.name),
    );
  }
  const select = $("select[name=status]");
  select.replaceChildren(
    el("option", { value: "" }, "All statuses"),
    ...[...state.statuses.values()].map((s) => el("option", { value: s.code }, `${s.code} · ${s.name}`)),
  );
}

// --- loading -------------------------------------------------------------------------------------

// An answer that arrives after its session ended (signed out, or signed in with another token)
// is dropped: the page no longer shows what it asked for.
async function guarded(promise) {
  const session = state.token;
  try {
    const data = await promise;
    return state.token === session ? data : null;
  } catch (error) {
    if (state.token !== session) return null;
    if (error.code === "UNAUTHENTICATED") signOut("Your token was refused (revoked or expired). Sign in again.");
    else console.warn("OrderPulse:", error.message);
    return null;
  }
}

async function loadEverything() {
  const role = state.viewer?.role;
  const tasks = [loadOrders({ keepSelection: true }), loadCounts(), loadNotifications()];
  if (role !== "CUSTOMER") tasks.push(loadCustomers(), loadSettings(state.settingsResellerId));
  if (role === "SUPPORT") tasks.push(guarded(loadIncidents(state.token)));
  if (state.selectedId) tasks.push(loadDetail(state.selectedId));
  await Promise.all(tasks);
}

function currentFilter() {
  const filter = {};
  const status = $("select[name=status]").value;
  if (status) filter.status = [status];
  if ($("input[name=needs-action]").checked) filter.requiresManualAction = true;
  return filter;
}

function matchesFilter(order) {
  const filter = currentFilter();
  if (filter.status && !filter.status.includes(order.status)) return false;
  if (filter.requiresManualAction && !order.requiresManualAction) return false;
  return true;
}

let ordersRequest = 0;
async function loadOrders({ more = false } = {}) {
  const request = ++ordersRequest;
  const variables = { filter: currentFilter(), after: more ? state.page?.endCursor : null };
  const data = await guarded(api.graphql(state.token, api.ORDERS, variables));
  if (!data || request !== ordersRequest) return;
  const nodes = data.orders.edges.map((e) => e.node);
  if (!more) state.order_ids = [];
  for (const node of nodes) {
    const kept = upsertOrder(node);
    if (!state.order_ids.includes(kept.id)) state.order_ids.push(kept.id);
  }
  state.page = data.orders.pageInfo;
  state.totalCount = data.orders.totalCount;
  renderOrders();
}

/** Keep the newest version of an order; return what is kept. */
function upsertOrder(order) {
  const known = state.orders.get(order.id);
  if (known && known.version > order.version) return known;
  state.orders.set(order.id, order);
  return order;
}

let countsRunning = false;
let countsAgain = false;
async function loadCounts() {
  if (countsRunning) {
    countsAgain = true;
    return;
  }
  countsRunning = true;
  try {
    do {
      countsAgain = false;
      const data = await guarded(api.graphql(state.token, api.COUNTS));
      if (data) renderCounts(data.orderStatusCounts);
    } while (countsAgain && state.token);
  } finally {
    countsRunning = false;
  }
}

async function loadNotifications() {
  const data = await guarded(api.graphql(state.token, api.NOTIFICATIONS));
  if (!data) return;
  for (const edge of data.notifications.edges) state.notifications.set(edge.node.id, edge.node);
  renderNotifications();
}

async function loadCustomers() {
  const data = await guarded(api.graphql(state.token, api.CUSTOMERS));
  if (data) renderCustomers(data.customers.edges.map((e) => e.node));
}

async function loadSettings(resellerId) {
  if (!state.viewer) return; // signed out meanwhile
  const isSupport = state.viewer.role === "SUPPORT";
  if (isSupport && !resellerId) {
    const data = await guarded(api.graphql(state.token, api.RESELLERS));
    if (!data) return;
    const resellers = data.resellers.edges.map((e) => e.node);
    $("select[name=reseller]").replaceChildren(...resellers.map((r) => el("option", { value: r.id }, r.name)));
    resellerId = resellers[0]?.id;
    if (!resellerId) return;
  }
  state.settingsResellerId = resellerId ?? null;
  const data = await guarded(api.graphql(state.token, api.SETTINGS, { resellerId: resellerId ?? null }));
  if (data?.notificationSettings) renderSettings(data.notificationSettings, data.notificationTemplates);
}

let detailRequest = 0;
async function loadDetail(id) {
  const request = ++detailRequest;
  const data = await guarded(api.graphql(state.token, api.ORDER_DETAIL, { id }));
  if (!data || request !== detailRequest || state.selectedId !== id) return;
  if (!data.order) {
    closeDetail();
    return;
  }
  upsertOrder(data.order);
  state.detail = data.order;
  renderDetail();
  renderOrders();
}

// --- live changes --------------------------------------------------------------------------------

function applyOrderChange(change) {
  const order = upsertOrder(change.order);
  const shown = state.order_ids.includes(order.id);
  if (!shown && matchesFilter(order)) {
    // A new order goes on top; an older one only if it falls inside the loaded page range.
    const index = state.order_ids.findIndex((id) => compareNewestFirst(order, state.orders.get(id)) < 0);
    if (index >= 0) state.order_ids.splice(index, 0, order.id);
    else if (!state.page?.hasNextPage) state.order_ids.push(order.id);
    if (state.order_ids.includes(order.id)) state.totalCount += 1;
  } else if (shown && !matchesFilter(order) && order.id !== state.selectedId) {
    state.order_ids = state.order_ids.filter((id) => id !== order.id);
    state.totalCount -= 1;
  }
  renderOrders();
  loadCounts();
  if (order.id === state.selectedId) loadDetail(order.id);
}

function compareNewestFirst(a, b) {
  return b.createdAt === a.createdAt ? b.number.localeCompare(a.number) : b.createdAt.localeCompare(a.createdAt);
}

function applyNotificationChange(change) {
  const note = change.notification;
  state.notifications.set(note.id, note);
  renderNotifications();
  if (note.order?.id === state.selectedId) loadDetail(state.selectedId);
}

// --- rendering -----------------------------------------------------------------------------------

function statusBadge(code) {
  const info = state.statuses.get(code);
  return el(
    "span",
    { class: `badge status-${code}${info?.requiresManualAction ? " needs-action" : ""}`, "data-status": code, title: info?.name ?? code },
    el("abbr", { title: info?.name ?? code }, code),
    el("span", { class: "badge-name" }, info?.name ?? ""),
  );
}

function renderOrders() {
  const isSupport = state.viewer?.role === "SUPPORT";
  const rows = state.order_ids.map((id) => {
    const order = state.orders.get(id);
    const failed = order.status === "PF";
    const row = el(
      "tr",
      {
        "data-order-number": order.number,
        "data-status": order.status,
        "data-order-id": order.id,
        tabindex: "0",
        "aria-selected": String(order.id === state.selectedId),
        class: failed ? "failed" : "",
      },
      el("td", { class: "mark" }, failed ? el("span", { "data-failed-mark": "", title: "Provisioning failed", "aria-label": "Provisioning failed" }, "!") : ""),
      el("td", {}, el("span", { class: "number" }, order.number), el("span", { class: "type" }, ` ${order.type}`)),
      el("td", {}, order.customer.name),
      isSupport ? el("td", {}, order.reseller.name) : null,
      el("td", {}, statusBadge(order.status)),
      el("td", { class: "num" }, formatMoney(order.total)),
      el("td", { class: "updated" }, el("time", { datetime: order.updatedAt }, formatDate(order.updatedAt))),
    );
    row.addEventListener("click", () => openDetail(order.id));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openDetail(order.id, { fromKeyboard: true });
      }
    });
    return row;
  });
  const focused = document.activeElement?.dataset?.orderId;
  $("[data-orders] tbody").replaceChildren(...rows);
  if (focused) document.querySelector(`tr[data-order-id="${CSS.escape(focused)}"]`)?.focus();
  $("[data-orders-empty]").hidden = rows.length > 0;
  $("button[name=load-more]").hidden = !state.page?.hasNextPage;
  $("[data-order-total]").textContent = `${state.totalCount} order${state.totalCount === 1 ? "" : "s"}`;
}

function renderCounts(counts) {
  const byStatus = new Map(counts.map((c) => [c.status, c.count]));
  if (!byStatus.has("PF")) byStatus.set("PF", 0);
  const order = [...state.statuses.keys()];
  const badges = order.filter((code) => byStatus.has(code)).map((code) => {
    const count = byStatus.get(code);
    const button = el(
      "button",
      {
        type: "button",
        class: `count status-${code}${count === 0 ? " zero" : ""}`,
        "data-status-count": code,
        "data-count": String(count),
        title: `${state.statuses.get(code)?.name}: ${count}. Show only these.`,
      },
      el("span", { class: "code" }, code),
      el("span", { class: "n" }, String(count)),
    );
    button.addEventListener("click", () => {
      $("select[name=status]").value = code;
      loadOrders();
    });
    return button;
  });
  $("[data-status-counts]").replaceChildren(...badges);
}

function openDetail(id, { fromKeyboard = false } = {}) {
  focusDetailHeading = fromKeyboard;
  state.selectedId = id;
  state.detail = null;
  state.actionMessage = null;
  const box = $("[data-order-detail]");
  box.hidden = false;
  box.replaceChildren(el("p", {}, "Loading…"));
  renderOrders();
  loadDetail(id);
}

function closeDetail() {
  const previous = state.selectedId;
  state.selectedId = null;
  state.detail = null;
  $("[data-order-detail]").hidden = true;
  renderOrders();
  if (previous) document.querySelector(`tr[data-order-id="${CSS.escape(previous)}"]`)?.focus();
}

function renderDetail() {
  const order = state.detail;
  // The last action's outcome stays shown across live re-renders of the same order.
  const message = state.actionMessage?.orderId === order.id ? state.actionMessage : null;
  const box = $("[data-order-detail]");
  // A live re-render keeps the keyboard where it was (the same button, or the heading).
  const active = box.contains(document.activeElement) ? document.activeElement : null;
  const refocus = active && (active.dataset.action ? `button[data-action="${active.dataset.action}"]` : active.name ? `[name="${active.name}"]` : "#detail-title");
  const typed = active?.name === "comment" ? active.value : null;
  box.dataset.orderNumber = order.number;
  box.dataset.status = order.status;
  const close = el("button", { type: "button", class: "secondary close", name: "close-detail", "aria-label": "Close order details" }, "×");
  close.addEventListener("click", closeDetail);
  const failure = order.failure
    ? el(
        "div",
        { class: "failure", "data-failure": "" },
        el("h4", {}, "Provisioning failure"),
        el(
          "dl",
          { class: "facts" },
          el("dt", {}, "Reason"), el("dd", { "data-failure-reason": "" }, order.failure.reason),
          el("dt", {}, "Message"), el("dd", { "data-failure-message": "" }, order.failure.message),
          el("dt", {}, "Remedy"), el("dd", { "data-failure-remedy": "" }, order.failure.remedy),
          el("dt", {}, "Details"), el("dd", { "data-failure-details": "" }, order.failure.details ?? "—"),
          el("dt", {}, "Failed"), el("dd", {}, formatDate(order.failure.failedAt)),
          el("dt", {}, "Support deadline"),
          el(
            "dd",
            {},
            el("time", { "data-sla-deadline": "", datetime: order.failure.slaDeadline }, formatDate(order.failure.slaDeadline)),
            " ",
            order.status === "PF"
              ? el("span", { class: "countdown", "data-sla-countdown": "", "data-deadline": order.failure.slaDeadline }, formatCountdown(order.failure.slaDeadline))
              : "",
          ),
          el("dt", {}, "Escalated"), el("dd", { "data-escalated-at": "" }, order.failure.escalatedAt ? formatDate(order.failure.escalatedAt) : "not yet"),
        ),
      )
    : null;
  const comment = el("input", { id: "action-comment", name: "comment", type: "text", autocomplete: "off" });
  const actions = order.availableActions.map((action) => {
    const button = el("button", { type: "button", "data-action": action, class: action === "CANCEL" || action === "MARK_FRAUD" ? "danger" : "" }, ACTION_LABELS[action] ?? humanize(action));
    button.addEventListener("click", () => performAction(order, action, comment.value.trim(), button));
    return button;
  });
  const parts = [
    el("div", { class: "detail-head" }, el("h3", { id: "detail-title", tabindex: "-1" }, `Order ${order.number}`), close),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Status"), el("dd", {}, statusBadge(order.status)),
      el("dt", {}, "Customer"), el("dd", {}, order.customer.name),
      el("dt", {}, "Reseller"), el("dd", {}, order.reseller.name),
      el("dt", {}, "Total"), el("dd", {}, formatMoney(order.total)),
      el("dt", {}, "Placed"), el("dd", {}, formatDate(order.createdAt)),
      el("dt", {}, "Items"),
      el("dd", {}, el("ul", { class: "items" }, ...order.items.map((i) => el("li", {}, `${i.quantity} × ${i.description} @ ${i.unitPrice}`)))),
    ),
    failure,
    orderIncident(order),
    el(
      "div",
      { class: "actions", "data-actions": "" },
      el("h4", {}, "Actions"),
      actions.length
        ? el("div", { class: "action-form" }, el("label", { for: "action-comment" }, "Comment (optional)"), comment, el("div", { class: "buttons" }, ...actions))
        : el("p", { class: "hint" }, "Nothing you can do to this order now."),
      el("p", { class: `message${message?.error ? " error" : ""}`, "data-action-message": "", role: message?.error ? "alert" : "status", hidden: message ? null : "" }, message?.text ?? ""),
    ),
    el("h4", {}, "History"),
    el(
      "ol",
      { class: "history", "data-history": "" },
      ...order.history.map((h) =>
        el(
          "li",
          {},
          el("time", { datetime: h.occurredAt }, formatDate(h.occurredAt)),
          " ",
          h.from ? `${h.from} → ${h.to}` : `placed → ${h.to}`,
          h.action ? ` · ${humanize(h.action)}` : "",
          h.reason ? ` · ${h.reason}` : "",
          h.actor ? ` · by ${h.actor}` : "",
          h.comment ? ` · “${h.comment}”` : "",
        ),
      ),
    ),
    el("h4", {}, "Notifications"),
    order.notifications.length
      ? el("ul", { class: "notes", "data-order-notifications": "" }, ...order.notifications.map((n) =>
          el("li", { "data-notification-id": n.id }, `${humanize(n.kind)} to ${humanize(n.recipientRole)} <${n.email}>: `, deliveryBadge(n), n.lastError ? ` (${n.lastError})` : "")))
      : el("p", { class: "hint", "data-order-notifications": "" }, "None sent for this order."),
  ];
  box.replaceChildren(...parts.filter((part) => part !== null));
  if (typed !== null) comment.value = typed;
  if (refocus) $(refocus, box)?.focus();
  else if (focusDetailHeading) $("#detail-title", box)?.focus();
  focusDetailHeading = false;
}

let focusDetailHeading = false;

async function performAction(order, action, comment, button) {
  for (const b of document.querySelectorAll("[data-order-detail] button[data-action]")) b.disabled = true;
  const input = { orderId: order.id, action, expectedVersion: order.version };
  if (comment) input.comment = comment;
  let message;
  try {
    const data = await api.graphql(state.token, api.PERFORM_ACTION, { input });
    const result = data.performOrderAction;
    if (result.userErrors.length) {
      const error = result.userErrors[0];
      message = {
        error: true,
        text:
          error.code === "CONFLICT"
            ? `Order ${order.number} changed while you were looking at it, so nothing was done. Its current state is shown now; check it and try again.`
            : error.message,
      };
    } else {
      upsertOrder(result.order);
      message = { text: `${ACTION_LABELS[action] ?? humanize(action)}: done. ${order.number} is now ${result.order.status}.` };
    }
  } catch (error) {
    message = { error: true, text: error.message };
  }
  if (state.selectedId !== order.id) return;
  state.actionMessage = { orderId: order.id, ...message };
  const data = await guarded(api.graphql(state.token, api.ORDER_DETAIL, { id: order.id }));
  if (data?.order && state.selectedId === order.id) {
    upsertOrder(data.order);
    state.detail = data.order;
  }
  state.actionMessage = { orderId: order.id, ...message };
  renderDetail();
  renderOrders();
  loadCounts();
  button = document.querySelector(`[data-order-detail] button[data-action="${action}"]`);
  ($("[data-action-message]") ?? button)?.focus?.();
}

function deliveryBadge(note) {
  return el("span", { class: `delivery delivery-${note.status}`, "data-delivery": note.status }, note.status);
}

function renderNotifications() {
  const notes = [...state.notifications.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id)).slice(0, 50);
  $("[data-notification-list] tbody").replaceChildren(
    ...notes.map((n) =>
      el(
        "tr",
        { "data-notification-id": n.id, "data-kind": n.kind },
        el("td", {}, n.order?.number ?? ""),
        el("td", {}, humanize(n.kind)),
        el("td", {}, `${humanize(n.recipientRole)} <${n.email}>`),
        el("td", {}, n.subject),
        el("td", {}, deliveryBadge(n)),
        el("td", {}, el("time", { datetime: n.createdAt }, formatDate(n.createdAt))),
      ),
    ),
  );
  $("[data-notifications-empty]").hidden = notes.length > 0;
}

function renderCustomers(customers) {
  if (!state.viewer) return; // signed out meanwhile
  const isSupport = state.viewer.role === "SUPPORT";
  $("[data-customer-list]").replaceChildren(
    ...customers.map((customer) => {
      const inputId = `contact-${customer.id}`;
      const input = el("input", { id: inputId, name: "contactEmail", type: "email", required: "", value: customer.contactEmail, autocomplete: "off" });
      const message = el("span", { class: "message", role: "status" });
      const form = el(
        "form",
        { class: "customer", "data-customer-id": customer.id },
        el("div", { class: "customer-name" }, customer.name, isSupport ? el("span", { class: "hint" }, ` · ${customer.reseller.name}`) : ""),
        el("label", { for: inputId }, "Contact e-mail"),
        input,
        el("button", { type: "submit", name: "save-contact" }, "Save"),
        message,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        message.className = "message";
        message.textContent = "Saving…";
        try {
          const data = await api.graphql(state.token, api.UPDATE_CONTACT, { input: { customerId: customer.id, email: input.value.trim() } });
          const result = data.updateCustomerContact;
          if (result.userErrors.length) {
            message.className = "message error";
            message.textContent = result.userErrors[0].message;
          } else {
            input.value = result.customer.contactEmail;
            message.textContent = "Saved. Later notifications go to this address.";
          }
        } catch (error) {
          message.className = "message error";
          message.textContent = error.message;
        }
      });
      return el("li", {}, form);
    }),
  );
}

function renderSettings(settings, templates) {
  const form = $("[data-notification-settings]");
  form.dataset.resellerId = settings.reseller.id;
  $("select[name=reseller]").value = settings.reseller.id;
  $("input[name=notifyReseller]", form).checked = settings.notifyReseller;
  $("input[name=notifyCustomer]", form).checked = settings.notifyCustomer;
  $("[data-reseller-email]", form).textContent = settings.reseller.email || settings.reseller.name;
  $("select[name=template]", form).replaceChildren(
    ...templates.map((t) => el("option", { value: t.id }, t.name)),
  );
  $("select[name=template]", form).value = settings.orderNotificationTemplate.id;
}

async function saveSettings(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const message = $("[data-settings-message]");
  const input = {
    resellerId: form.dataset.resellerId,
    notifyReseller: $("input[name=notifyReseller]", form).checked,
    notifyCustomer: $("input[name=notifyCustomer]", form).checked,
    orderNotificationTemplateId: $("select[name=template]", form).value,
  };
  message.hidden = false;
  message.className = "message";
  message.textContent = "Saving…";
  try {
    const data = await api.graphql(state.token, api.UPDATE_SETTINGS, { input });
    const result = data.updateNotificationSettings;
    if (result.userErrors.length) {
      message.className = "message error";
      message.textContent = result.userErrors[0].message;
      return;
    }
    const templates = [...$("select[name=template]", form).options].map((o) => ({ id: o.value, name: o.textContent }));
    renderSettings(result.notificationSettings, templates);
    message.textContent = "Settings saved.";
  } catch (error) {
    message.className = "message error";
    message.textContent = error.message;
  }
}

function tickCountdowns() {
  for (const node of document.querySelectorAll("[data-sla-countdown]")) {
    node.textContent = formatCountdown(node.dataset.deadline);
    node.classList.toggle("overdue", Date.parse(node.dataset.deadline) <= Date.now());
  }
}

start();
