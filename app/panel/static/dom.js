// Small DOM and formatting helpers for the panel (values always go in as text).

/** Build an element: attributes (null/undefined/false skipped) and children (strings are text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "value" && "value" in node) node.value = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
}

export function formatMoney(money) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: money.currency }).format(Number(money.amount));
  } catch {
    return `${money.amount} ${money.currency}`;
  }
}

/** "1h 05m 09s left" until an ISO deadline, or "overdue by 3m 10s". */
export function formatCountdown(iso) {
  const ms = Date.parse(iso) - Date.now();
  const total = Math.floor(Math.abs(ms) / 1000);
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  const text = `${days ? `${days}d ` : ""}${days || hours ? `${hours}h ` : ""}${pad(minutes)}m ${pad(seconds)}s`;
  return ms >= 0 ? `${text} left` : `overdue by ${text}`;
}

/** "MARK_FAILED" -> "Mark failed". */
export function humanize(code) {
  const words = String(code).toLowerCase().replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
