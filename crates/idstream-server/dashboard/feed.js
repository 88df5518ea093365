// The live feed: one WebSocket to /v1/stream with a short-lived token from the login session,
// renewed before it ends; resumes from the last offset after a renewal, a disconnect or a
// pause, so nothing is lost or shown twice.

import { api, h, pill, eventTime, downloadCsv } from "./api.js";

/** @typedef {import("./types/api.gen").components["schemas"]} S */
/** @typedef {import("./types/events.gen").EventView} EventView */

const KEEP = 5000; // entries kept for re-filtering
const SHOW = 100; // rows rendered at most
const PER_FRAME = 50; // new rows rendered per frame at most
const FLASH_MAX = 20; // new rows flash only when a frame brings at most this many

/** The stream connection, kept for the whole page (switching screens does not lose events). */
export class LiveStream {
  constructor() {
    this.last = null; // the last offset received
    this.entries = [];
    this.counts = { total: 0, verification: 0, approve: 0, review: 0, decline: 0, other: 0 };
    this.listeners = new Set();
    this.state = "connecting";
    this.paused = false;
    this.ws = null;
    this.token = null;
    this.renewTimer = null;
    this.retry = 1000;
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(what, data) {
    for (const fn of this.listeners) fn(what, data);
  }

  setState(s) {
    this.state = s;
    this.emit("state", s);
  }

  async start() {
    // Begin with the recent past (up to 200 entries back), then live.
    try {
      const page = /** @type {S["EventPage"]} */ (await api("GET", "/v1/events?limit=1"));
      this.last = Math.max(0, page.head - 200);
    } catch {
      this.last = null;
    }
    await this.renew();
  }

  /** Gets a fresh token and (re)connects with it, resuming after the last offset. */
  async renew() {
    clearTimeout(this.renewTimer);
    try {
      this.token = /** @type {S["StreamToken"]} */ (await api("POST", "/v1/stream/token"));
    } catch (e) {
      this.setState(`error: ${e.message}`);
      this.renewTimer = setTimeout(() => this.renew(), 5000);
      return;
    }
    // Renew at 80% of the lifetime, well before the server closes the stream at `exp`.
    const secs = Math.max(5, Math.floor(this.token.expires_in_secs * 0.8));
    this.renewTimer = setTimeout(() => this.renew(), secs * 1000);
    if (!this.paused) this.connect();
  }

  connect() {
    const old = this.ws;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream`);
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token.token }));
      const from = this.last === null ? "now" : { offset: this.last };
      ws.send(JSON.stringify({ type: "subscribe", id: "feed", from }));
    };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "subscribed") {
        this.retry = 1000;
        this.setState("live");
        // The new connection is in place: the previous one (a renewal) can go.
        if (old && old.readyState <= 1) old.close(1000, "renewed");
      } else if (msg.type === "event") {
        if (this.last !== null && msg.offset <= this.last) return;
        this.last = msg.offset;
        this.add(msg.event);
      } else if (msg.type === "error") {
        this.setState(`error: ${msg.message}`);
      }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.paused) return;
      this.setState("reconnecting");
      const expired = e.code === 4401 || e.code === 4403;
      setTimeout(() => (expired ? this.renew() : this.connect()), this.retry);
      this.retry = Math.min(this.retry * 2, 15000);
    };
  }

  /** @param {EventView} ev */
  add(ev) {
    const c = this.counts;
    c.total++;
    if (ev.kind === "decision.made" && "outcome" in ev) c[ev.outcome] = (c[ev.outcome] || 0) + 1;
    else if (ev.kind && ev.kind.startsWith("verification.")) c.verification++;
    else c.other++;
    this.entries.push(ev);
    // Trimmed in steps, not per event (a splice moves every kept entry).
    if (this.entries.length > KEEP + 500) this.entries.splice(0, this.entries.length - KEEP);
    this.emit("event", ev);
  }

  /** Stops receiving; `resume` continues after the last offset received. */
  pause() {
    this.paused = true;
    if (this.ws) this.ws.close(1000, "paused");
    this.ws = null;
    this.setState("paused");
  }

  resume() {
    this.paused = false;
    this.setState("connecting");
    this.connect();
  }

  stop() {
    this.paused = true;
    clearTimeout(this.renewTimer);
    if (this.ws) this.ws.close(1000, "logged out");
    this.ws = null;
  }
}

/** @param {EventView} ev */
function summary(ev) {
  if (ev.kind === "decision.made" && "outcome" in ev) return [pill(ev.outcome), " ", ev.reasons.join(", ")];
  // A verification event: its status, and the provider's own word when it differs.
  if ("unauthenticated_decision" in ev) {
    const status = ev.status || ev.provider_status || "";
    return [pill(status), " ", ev.provider_status && status !== ev.provider_status ? ev.provider_status : ""];
  }
  // Review changes and idstream's other events: their status and who acted.
  const e = /** @type {Record<string, any>} */ (ev);
  return [pill(e.status || ""), " ", e.actor || ""];
}

function kindClass(kind) {
  if (!kind) return "other";
  if (kind.startsWith("verification.")) return "verification";
  if (kind === "decision.made") return "decision";
  if (kind.startsWith("review.")) return "review";
  return "other";
}

/** The live feed screen. */
export function feedScreen(root, stream) {
  const f = { outcome: "", kind: "", subject: "", session: "" };
  const counts = h("div", { class: "stats", "aria-live": "off" });
  const status = h("span", { id: "feed-state" });
  const pauseBtn = h("button", { type: "button", id: "feed-pause" });
  const tbody = h("tbody", { id: "feed-rows" });
  const input = (id, label, key, placeholder) =>
    h("label", { for: id }, label,
      h("input", { id, placeholder, oninput: (e) => { f[key] = e.target.value.trim(); rebuild(); } }));
  const select = (id, label, key, options) =>
    h("label", { for: id }, label,
      h("select", { id, onchange: (e) => { f[key] = e.target.value; rebuild(); } },
        options.map(([v, t]) => h("option", { value: v }, t))));

  root.append(
    h("h2", {}, "Live feed"),
    h("div", { class: "bar" },
      select("feed-kind", "Kind", "kind", [["", "All kinds"], ["verification", "Verification events"], ["decision", "Decisions"], ["review", "Review changes"], ["other", "Other"]]),
      select("feed-outcome", "Outcome", "outcome", [["", "Any outcome"], ["approve", "approve"], ["review", "review"], ["decline", "decline"]]),
      input("feed-subject", "Subject", "subject", "user-42"),
      input("feed-session", "Session", "session", "session id"),
      pauseBtn,
      h("button", { type: "button", id: "feed-export", onclick: () => exportCsv() }, "Export CSV"),
      h("span", { class: "muted" }, status)),
    counts,
    h("table", { "aria-label": "Live events", class: "feed" },
      h("thead", {}, h("tr", {}, ["Time", "Offset", "Kind", "Session", "Subject", "Result"].map((t) => h("th", { scope: "col" }, t)))),
      tbody));

  const matches = (ev) =>
    (!f.kind || kindClass(ev.kind) === f.kind) &&
    (!f.outcome || ev.outcome === f.outcome) &&
    (!f.subject || (ev.subject || "").includes(f.subject)) &&
    (!f.session || (ev.session_id || "").includes(f.session));

  const row = (ev, fresh) =>
    h("tr", { class: fresh ? "new" : null, dataset: { offset: ev.offset, kind: ev.kind } },
      h("td", {}, eventTime(ev)),
      h("td", { class: "mono" }, ev.offset),
      h("td", { class: "mono" }, ev.kind),
      h("td", { class: "mono" }, ev.session_id ? h("a", { href: `#/search?session=${encodeURIComponent(ev.session_id)}` }, ev.session_id) : ""),
      h("td", { class: "mono" }, ev.subject || ""),
      h("td", {}, summary(ev)));

  // Everything the filters match among the entries kept (not only the rows rendered).
  function exportCsv() {
    downloadCsv("events", ["offset", "kind", "id", "session_id", "subject", "status", "provider_status", "outcome",
      "score", "reasons", "decision_id", "review_id", "actor", "note", "received_at", "decided_at", "at"],
      stream.entries.filter(matches));
  }

  function rebuild() {
    const shown = stream.entries.filter(matches).slice(-SHOW).reverse();
    tbody.replaceChildren(...shown.map((ev) => row(ev, false)));
    if (!shown.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Waiting for events…")));
    renderCounts();
  }

  function renderCounts() {
    const c = stream.counts;
    const stat = (label, n, cls) => h("div", { class: "stat" }, h("span", { class: cls ? `pill ${cls}` : "muted" }, label), h("b", {}, n));
    counts.replaceChildren(
      stat("received", c.total), stat("verification events", c.verification),
      stat("approve", c.approve, "approve"), stat("review", c.review, "review"), stat("decline", c.decline, "decline"));
  }

  function renderState() {
    const s = stream.state;
    status.replaceChildren(h("span", { class: `live-dot ${s === "live" ? "on" : s === "paused" ? "paused" : ""}` }),
      s === "paused" ? `paused after offset ${stream.last ?? "–"}` : s);
    pauseBtn.textContent = stream.paused ? "Resume" : "Pause";
  }

  // New events are rendered once per frame, however many arrive (the counts include them all).
  let pending = [];
  let frame = 0;
  function flush() {
    frame = 0;
    const fresh = pending.filter(matches);
    pending = [];
    if (fresh.length) {
      const empty = tbody.querySelector("td.empty");
      if (empty) empty.parentElement.remove();
      // At high rates a frame renders only the newest PER_FRAME rows (the counts and the kept
      // entries have them all; a filter change or a pause rebuilds the table from those), and
      // rows stop flashing: a flash per row per event is what froze the page.
      const calm = fresh.length <= FLASH_MAX;
      const rows = fresh.slice(-PER_FRAME).reverse().map((ev) => row(ev, calm));
      // More than a frame renders: the table restarts from the newest, so it never shows a gap.
      if (fresh.length > PER_FRAME) tbody.replaceChildren(...rows);
      else tbody.prepend(...rows);
      const extra = tbody.children.length - SHOW;
      for (let i = 0; i < extra; i++) tbody.lastElementChild.remove();
    }
    renderCounts();
  }

  pauseBtn.addEventListener("click", () => (stream.paused ? stream.resume() : stream.pause()));
  const off = stream.on((what, data) => {
    if (what === "state") renderState();
    if (what === "event") {
      pending.push(data);
      if (!frame) frame = requestAnimationFrame(flush);
    }
  });
  rebuild();
  renderState();
  return off;
}
