// The REST API with the login session: the cookie goes by itself (HttpOnly, SameSite=Strict);
// calls that change something add the session's CSRF token.

let csrf = null;

export function setCsrf(token) {
  csrf = token;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body;
  }
}

/** Calls the API; `body` is JSON, or a string sent as YAML. Resolves to the parsed answer. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let payload;
  if (typeof body === "string") {
    headers["Content-Type"] = "application/yaml";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: "not_json", message: text.slice(0, 200) };
  }
  if (resp.status === 401 && path !== "/v1/auth/login") {
    window.dispatchEvent(new CustomEvent("idstream:logged-out"));
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

/** Builds an element: h("td", {class: "mono"}, "text", child, ...). Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function pill(value) {
  if (!value) return "";
  return h("span", { class: `pill ${String(value).toLowerCase().replace(/\s+/g, "_")}` }, value);
}

// One formatter for the page (`toLocaleString` builds a new one per call: the feed's hottest
// function at 1,000 events/s). The same fields as `toLocaleString(undefined, { hour12: false })`.
const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit", hour12: false,
});

export function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d.getTime()) ? String(t) : timeFormat.format(d);
}

/** When idstream got or made an entry (the provider's own time is in `occurred_at`). */
export function eventTime(ev) {
  return fmtTime(ev.received_at || ev.decided_at || ev.at || ev.occurred_at);
}

export function fmtAge(secs) {
  if (secs < 60) return `${secs}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ${Math.floor((secs % 3600) / 60)}m`;
  return `${Math.floor(secs / 86400)}d ${Math.floor((secs % 86400) / 3600)}h`;
}

let toastTimer = null;
export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("bad", bad);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), bad ? 6000 : 3000);
}

/** What the signed-in role may press (mirrors the server's role table; the server decides). */
export function can(role, action) {
  const allowed = {
    act_on_reviews: ["analyst", "policy_admin", "admin"],
    second_level: ["policy_admin", "admin"],
    manage_reviews: ["admin"],
    add_block: ["analyst", "policy_admin", "admin"],
    remove_block: ["policy_admin", "admin"],
    manage_rules: ["policy_admin", "admin"],
  };
  return (allowed[action] || []).includes(role);
}

/** One CSV cell: quoted when needed; a leading equals, plus, minus or at sign is defused (spreadsheet formulas). */
function csvCell(v) {
  let s = v === null || v === undefined ? "" : Array.isArray(v) ? v.join(" ") : typeof v === "object" ? JSON.stringify(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Downloads `rows` (objects) as `name`.csv with the given columns, in this order. */
export function downloadCsv(name, columns, rows) {
  const lines = [columns.map(csvCell).join(",")];
  for (const r of rows) lines.push(columns.map((c) => csvCell(r[c])).join(","));
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}.csv`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
