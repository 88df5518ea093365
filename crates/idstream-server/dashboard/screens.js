// The screens besides the live feed: review queue and case view, sessions and subjects,
// blocklists, rules. Buttons follow the signed-in role; the server enforces it anyway.

import { api, h, pill, fmtTime, fmtAge, toast, can, eventTime, downloadCsv } from "./api.js";

/** @typedef {import("./types/api.gen").components["schemas"]} S */

const link = (href, text) => h("a", { href }, text);
const sessionLink = (id) => (id ? link(`#/search?session=${encodeURIComponent(id)}`, id) : "");
const failed = (e) => toast(e.message, true);

function table(label, headers, rows, empty) {
  return h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty))));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

// --- Review queue ---------------------------------------------------------------------------

export async function reviewsScreen(root, me, params) {
  const SIZES = ["10", "25", "100", "500"];
  const q = { status: params.get("status") || "open", reason: params.get("reason") || "", older: params.get("older") || "",
    size: SIZES.includes(params.get("size")) ? params.get("size") : "100" };
  const body = h("div", {});
  const go = () => {
    const p = new URLSearchParams();
    if (q.status !== "open") p.set("status", q.status);
    if (q.reason) p.set("reason", q.reason);
    if (q.older) p.set("older", q.older);
    if (q.size !== "100") p.set("size", q.size);
    location.hash = `#/reviews${p.toString() ? "?" + p : ""}`;
  };
  root.append(
    h("h2", {}, "Review queue"),
    h("div", { class: "bar" },
      h("label", { for: "rq-status" }, "Status",
        h("select", { id: "rq-status", onchange: (e) => { q.status = e.target.value; go(); } },
          ["open", "claimed", "resolved", "all"].map((s) => h("option", { value: s, selected: s === q.status }, s)))),
      h("label", { for: "rq-reason" }, "Reason (or prefix)",
        h("input", { id: "rq-reason", value: q.reason, placeholder: "aml", onchange: (e) => { q.reason = e.target.value.trim(); go(); } })),
      h("label", { for: "rq-older" }, "Older than (minutes)",
        h("input", { id: "rq-older", type: "number", min: 0, value: q.older, onchange: (e) => { q.older = e.target.value; go(); } })),
      h("label", { for: "rq-size" }, "Per page",
        h("select", { id: "rq-size", onchange: (e) => { q.size = e.target.value; go(); } },
          SIZES.map((n) => h("option", { value: n, selected: n === q.size }, n)))),
      h("button", { type: "button", onclick: () => load() }, "Refresh"),
      h("button", { type: "button", id: "rq-export", onclick: () => exportCsv() }, "Export CSV")),
    body);

  const PAGE = Number(q.size);
  const EXPORT_MAX = 100000;
  // Keyset pages: cursors[i] is the `after` of page i (null for the first).
  let cursors = [null];
  let page = 0;
  const query = (limit, after) => {
    const p = new URLSearchParams({ status: q.status, limit: String(limit) });
    if (q.reason) p.set("reason", q.reason);
    if (q.older) p.set("older_than_secs", String(Number(q.older) * 60));
    if (after) p.set("after", after);
    return `/v1/reviews?${p}`;
  };

  // The whole filtered list, page after page (up to EXPORT_MAX cases).
  async function exportCsv() {
    const rows = [];
    let after = null;
    try {
      do {
        const list = /** @type {S["ReviewList"]} */ (await api("GET", query(1000, after)));
        rows.push(...list.reviews);
        after = list.next_after;
      } while (after && rows.length < EXPORT_MAX);
    } catch (e) {
      failed(e);
      return;
    }
    if (after) toast(`Exported the first ${rows.length} cases`, true);
    downloadCsv("reviews", ["id", "session_id", "subject", "reasons", "status", "level", "opened_at", "age_secs",
      "claimed_by", "resolved_by", "outcome", "note", "decision_id"], rows);
  }

  async function load() {
    /** @type {S["ReviewList"]} */
    let list;
    try {
      list = /** @type {S["ReviewList"]} */ (await api("GET", query(PAGE, cursors[page])));
    } catch (e) {
      body.replaceChildren(h("p", { class: "error" }, e.message));
      return;
    }
    cursors = cursors.slice(0, page + 1);
    if (list.next_after) cursors.push(list.next_after);
    const act = can(me.role, "act_on_reviews");
    const rows = list.reviews.map((r) =>
      h("tr", { dataset: { review: r.id } },
        h("td", {}, fmtAge(r.age_secs)),
        h("td", { class: "mono" }, sessionLink(r.session_id)),
        h("td", { class: "mono" }, r.subject || ""),
        h("td", {}, r.reasons.join(", ")),
        h("td", {}, pill(r.status), r.level > 1 ? h("span", { class: "pill level2" }, "level 2") : "",
          r.claimed_by ? h("span", { class: "muted" }, ` by ${r.claimed_by}`) : ""),
        h("td", {}, h("div", { class: "row-actions" },
          link(`#/case/${encodeURIComponent(r.id)}`, "Open case"),
          act && r.status === "open" && (r.level < 2 || can(me.role, "second_level"))
            ? h("button", { type: "button", class: "claim", onclick: () => claim(r.id).then(load) }, "Claim")
            : null))));
    const first = page * PAGE + 1;
    const turn = (d) => { page += d; load(); };
    body.replaceChildren(
      h("p", { class: "muted", id: "rq-range" }, list.reviews.length
        ? `Cases ${first}–${first + list.reviews.length - 1}${list.next_after ? "" : ` of ${first + list.reviews.length - 1}`}, oldest first`
        : "0 cases"),
      table("Review cases", ["Age", "Session", "Subject", "Reasons", "Status", ""], rows, "No cases."),
      h("nav", { class: "bar pager", "aria-label": "Review pages" },
        h("button", { type: "button", id: "rq-prev", disabled: page === 0, onclick: () => turn(-1) }, "← Previous"),
        h("button", { type: "button", id: "rq-next", disabled: !list.next_after, onclick: () => turn(1) }, `Next ${PAGE} →`)));
  }
  await load();
}

async function claim(id) {
  try {
    const r = /** @type {S["ReviewView"]} */ (await api("POST", `/v1/reviews/${encodeURIComponent(id)}/claim`, {}));
    toast(`Claimed by ${r.claimed_by}`);
  } catch (e) {
    failed(e);
  }
}

// --- Case view ------------------------------------------------------------------------------

function latestChecks(history) {
  for (let i = history.length - 1; i >= 0; i--) {
    const c = history[i].checks;
    if (c && Object.values(c).some((v) => Array.isArray(v) && v.length)) return c;
  }
  return null;
}

function checksView(checks) {
  if (!checks) return h("p", { class: "muted" }, "The provider sent no checks for this session.");
  const names = { documents: "Document", liveness: "Liveness", face_matches: "Face match", aml: "AML", ip: "IP", phone: "Phone", email: "Email" };
  const rows = [];
  for (const [k, label] of Object.entries(names)) {
    for (const c of checks[k] || []) {
      const { status, ...rest } = c;
      const details = Object.entries(rest)
        .filter(([, v]) => v !== null && v !== undefined && !(Array.isArray(v) && !v.length))
        .map(([f, v]) => `${f}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
        .join(" · ");
      rows.push(h("tr", {}, h("td", {}, label), h("td", {}, pill(status || "–")), h("td", { class: "mono" }, details)));
    }
  }
  return table("Provider checks", ["Check", "Status", "Details"], rows, "No checks.");
}

function firedView(decision) {
  const fired = (decision && decision.detail && decision.detail.fired) || [];
  const rows = fired.map((f) =>
    h("tr", {},
      h("td", { class: "mono" }, f.rule_id),
      h("td", {}, f.reason, f.message ? h("div", { class: "muted" }, f.message) : ""),
      h("td", {}, f.outcome ? pill(f.outcome) : "", f.score !== undefined ? ` +${f.score}` : ""),
      h("td", { class: "mono" }, Object.entries(f.values || {}).map(([k, v]) => h("div", {}, `${k} = ${JSON.stringify(v)}`)))));
  return table("Fired rules", ["Rule", "Reason", "Effect", "Values it read"], rows, "No rule fired.");
}

export async function caseScreen(root, me, id) {
  /** @type {S["ReviewView"]} */
  let review;
    let decision, session;
  try {
    review = /** @type {S["ReviewView"]} */ (await api("GET", `/v1/reviews/${encodeURIComponent(id)}`));
    [decision, session] = await Promise.all([
      api("GET", `/v1/decisions/${encodeURIComponent(review.decision_id)}`).catch(() => null),
      api("GET", `/v1/sessions/${encodeURIComponent(review.session_id)}`).catch(() => null),
    ]);
  } catch (e) {
    root.append(h("h2", {}, "Case"), h("p", { class: "error" }, e.message));
    return;
  }
  const act = can(me.role, "act_on_reviews");
  const mine = review.status === "claimed" && review.claimed_by === me.name;
  const actions = h("div", {});
  // Release, escalate and reassign: each a claim change recorded with its optional note.
  const move = async (what, body, done) => {
    try {
      await api("POST", `/v1/reviews/${encodeURIComponent(id)}/${what}`, body);
      toast(done);
      rerender();
    } catch (e) {
      failed(e);
    }
  };
  if (act && review.status === "open") {
    if (review.level > 1 && !can(me.role, "second_level")) {
      actions.append(h("p", { class: "muted", id: "case-level" }, "Escalated to the second level: an admin or policy admin takes it."));
    } else {
      actions.append(h("div", { class: "actions" },
        h("button", { type: "button", class: "primary claim", onclick: async () => { await claim(id); rerender(); } }, "Claim this case")));
    }
  } else if (review.status === "claimed" && !mine) {
    actions.append(h("p", { class: "muted", id: "case-holder" }, `Claimed by ${review.claimed_by}: only they can resolve it.`));
    if (can(me.role, "manage_reviews")) {
      actions.append(h("div", { class: "actions" },
        h("button", { type: "button", class: "release", onclick: () => move("release", {}, "Released to the queue") }, "Release their claim")));
    }
  }
  if (can(me.role, "manage_reviews") && review.status !== "resolved") {
    const to = h("input", { id: "case-assignee", placeholder: "username", autocomplete: "off" });
    actions.append(h("form", { class: "bar", "aria-label": "Reassign", onsubmit: (e) => {
      e.preventDefault();
      if (to.value.trim()) move("reassign", { to: to.value.trim() }, `Assigned to ${to.value.trim()}`);
    } },
      h("label", { for: "case-assignee" }, "Assign to", to),
      h("button", { type: "submit", class: "reassign" }, "Reassign")));
  }
  if (act && mine) {
    const note = h("textarea", { id: "case-note", class: "note", required: true, "aria-describedby": "case-note-help" });
    const err = h("p", { class: "error", role: "alert" });
    const resolve = async (outcome) => {
      if (!note.value.trim()) {
        err.textContent = "A note is required: say why.";
        note.focus();
        return;
      }
      try {
        const r = /** @type {S["Resolution"]} */ (await api("POST", `/v1/reviews/${encodeURIComponent(id)}/resolve`, { outcome, note: note.value.trim() }));
        toast(`Resolved: ${r.decision.outcome}`);
        rerender();
      } catch (e) {
        err.textContent = e.message;
      }
    };
    const noted = () => (note.value.trim() ? { note: note.value.trim() } : {});
    actions.append(
      h("label", { for: "case-note", class: "field-label" }, "Note (required)"),
      note,
      h("p", { id: "case-note-help", class: "muted" }, "Recorded with your decision and shown in the session's history."),
      err,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary resolve", dataset: { outcome: "approve" }, onclick: () => resolve("approve") }, "Approve"),
        h("button", { type: "button", class: "danger resolve", dataset: { outcome: "decline" }, onclick: () => resolve("decline") }, "Decline"),
        h("button", { type: "button", class: "resubmit", onclick: () => {
          if (!note.value.trim()) {
            err.textContent = "A note is required: say what the user should redo.";
            note.focus();
            return;
          }
          move("resubmit", { note: note.value.trim() }, "Resubmission requested");
        } }, "Request resubmission"),
        h("button", { type: "button", class: "release", onclick: () => move("release", noted(), "Released to the queue") }, "Release"),
        review.level < 2
          ? h("button", { type: "button", class: "escalate", onclick: () => move("escalate", noted(), "Escalated to the second level") }, "Escalate")
          : null));
  }
  const history = (session && session.history) || [];
  const timeline = history.map((e) =>
    h("tr", {},
      h("td", {}, eventTime(e)),
      h("td", { class: "mono" }, e.offset),
      h("td", { class: "mono" }, e.kind),
      h("td", {}, pill(e.outcome || e.status || ""), " ", (e.reasons || []).join(", "), e.note ? h("div", { class: "muted" }, `note: ${e.note}`) : "")));
  root.append(
    h("p", {}, link("#/reviews", "← Review queue")),
    h("h2", {}, `Case ${review.id}`),
    h("div", { class: "grid2" },
      h("div", { class: "card" },
        kv([
          ["Status", h("span", { id: "case-status" }, pill(review.status))],
          ["Session", h("span", { class: "mono" }, sessionLink(review.session_id))],
          ["Subject", review.subject || "–"],
          ["Reasons", review.reasons.join(", ")],
          ["Opened", `${fmtTime(review.opened_at)} (${fmtAge(review.age_secs)} ago)`],
          ["Claimed by", h("span", { id: "case-claimed-by" }, review.claimed_by || "–")],
          ["Level", h("span", { id: "case-level-value" }, review.level > 1 ? "2 (escalated)" : "1")],
          ["Resolved", review.resolved_by ? `${review.outcome} by ${review.resolved_by}` : "–"],
          ["Note", review.note || "–"],
          ["Rules' decision", decision ? [pill(decision.outcome), ` score ${decision.score}`] : "–"],
        ]),
        actions),
      h("div", {}, h("h3", {}, "Fired rules"), firedView(decision))),
    h("h3", {}, "Provider checks"),
    checksView(latestChecks(history)),
    h("h3", {}, "Linked subjects (sharing a document, phone, email or face)"),
    seenTable("Linked subjects", (session && session.linked) || []),
    h("h3", {}, "Session timeline"),
    table("Session timeline", ["Time", "Offset", "Kind", "Result"], timeline, "No events."));

  function rerender() {
    root.replaceChildren();
    caseScreen(root, me, id);
  }
}

// --- Sessions and subjects ------------------------------------------------------------------

/** Sessions where an identity value was seen (search results, linked subjects). */
function seenTable(label, seen) {
  return table(label, ["Shared", "Subject", "Session", "Seen"], seen.map((x) =>
    h("tr", { dataset: { session: x.session_id } },
      h("td", {}, x.kind),
      h("td", { class: "mono" }, link(`#/search?subject=${encodeURIComponent(x.subject)}`, x.subject)),
      h("td", { class: "mono" }, sessionLink(x.session_id)),
      h("td", {}, fmtTime(x.seen_at)))), "None.");
}

export async function searchScreen(root, me, params) {
  const out = h("div", {});
  const sid = h("input", { id: "search-session", value: params.get("session") || "", placeholder: "session id" });
  const sub = h("input", { id: "search-subject", value: params.get("subject") || "", placeholder: "subject id" });
  const idKind = h("select", { id: "search-kind" }, ["document", "email", "phone", "face"].map((k) => h("option", { value: k }, k)));
  const idValue = h("input", { id: "search-value", placeholder: "number, address or id", autocomplete: "off" });
  root.append(
    h("h2", {}, "Sessions & subjects"),
    h("form", { class: "bar", onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (sid.value.trim()) p.set("session", sid.value.trim());
      else if (sub.value.trim()) p.set("subject", sub.value.trim());
      location.hash = `#/search?${p}`;
    } },
      h("label", { for: "search-session" }, "Session", sid),
      h("label", { for: "search-subject" }, "or subject", sub),
      h("button", { type: "submit", class: "primary" }, "Search")),
    // The value never goes into the URL (nor the browser's history): searched in place.
    h("form", { class: "bar", "aria-label": "Search by identity value", onsubmit: async (e) => {
      e.preventDefault();
      if (!idValue.value.trim()) return;
      out.replaceChildren();
      try {
        const r = /** @type {S["SearchResult"]} */ (await api("GET", `/v1/search?${new URLSearchParams({ kind: idKind.value, value: idValue.value.trim() })}`));
        out.append(
          h("p", { id: "search-count" }, `${r.seen.length} session(s) of ${r.subjects} subject(s)`),
          seenTable("Sessions with this value", r.seen));
      } catch (err) {
        out.append(h("p", { class: "error" }, err.message));
      }
    } },
      h("label", { for: "search-kind" }, "Identity value", idKind),
      h("label", { for: "search-value" }, "Value", idValue),
      h("button", { type: "submit", id: "search-identity" }, "Find sessions")),
    h("p", { class: "muted" }, "Values are matched by their keyed hash, normalised like the blocklists; idstream never stores them in clear."),
    out);
  const session = params.get("session");
  const subject = params.get("subject");
  try {
    if (session) {
      const s = /** @type {S["SessionView"]} */ (await api("GET", `/v1/sessions/${encodeURIComponent(session)}`));
      out.append(
        h("div", { class: "card" }, kv([
          ["Session", h("span", { class: "mono" }, s.session_id)],
          ["State", pill(s.state || "–")],
          ["Subject", s.session && s.session.subject ? link(`#/search?subject=${encodeURIComponent(s.session.subject)}`, s.session.subject) : "–"],
          ["Provider status", (s.session && s.session.provider_status) || "–"],
        ])),
        h("h3", {}, "Decisions"),
        table("Decisions", ["Decided", "Outcome", "Score", "Reasons", "By"], s.decisions.map((d) =>
          h("tr", {}, h("td", {}, fmtTime(d.decided_at)), h("td", {}, pill(d.outcome)), h("td", {}, d.score), h("td", {}, d.reasons.join(", ")), h("td", {}, d.decided_by))), "No decisions."),
        h("h3", {}, "Review cases"),
        table("Review cases", ["Opened", "Status", "Reasons", ""], s.reviews.map((r) =>
          h("tr", {}, h("td", {}, fmtTime(r.opened_at)), h("td", {}, pill(r.status)), h("td", {}, r.reasons.join(", ")), h("td", {}, link(`#/case/${encodeURIComponent(r.id)}`, "Open case")))), "No cases."),
        h("h3", {}, "Provider checks"),
        checksView(latestChecks(s.history)),
        h("h3", {}, "Linked subjects"),
        seenTable("Linked subjects", s.linked || []),
        h("h3", {}, "History"),
        table("History", ["Time", "Offset", "Kind", "Result"], s.history.map((ev) => {
          // Any kind of event: the fields it has.
          const e = /** @type {Record<string, any>} */ (ev);
          return h("tr", {}, h("td", {}, eventTime(e)), h("td", { class: "mono" }, e.offset), h("td", { class: "mono" }, e.kind), h("td", {}, pill(e.outcome || e.status || ""), " ", (e.reasons || []).join(", ")));
        }), "No events."));
    } else if (subject) {
      const s = /** @type {S["SubjectView"]} */ (await api("GET", `/v1/subjects/${encodeURIComponent(subject)}`));
      out.append(h("div", { class: "card" }, kv([
        ["Subject", h("span", { class: "mono" }, s.id)],
        ["Updated", `${fmtTime(s.updated_at)} by ${s.updated_by || "–"}`],
        ["Attributes", h("pre", { class: "mono" }, JSON.stringify(s.attributes, null, 2))],
      ])), h("p", { class: "muted" }, "Sessions of a subject: open one from the live feed or the review queue."));
    }
  } catch (e) {
    out.append(h("p", { class: "error" }, e.status === 404 ? "Nothing found." : e.message));
  }
}

// --- Blocklists -----------------------------------------------------------------------------

export async function blocklistsScreen(root, me, params) {
  const kind = params.get("kind") || "document";
  const out = h("div", {});
  root.append(h("h2", {}, "Blocklists"),
    h("div", { class: "bar" },
      h("label", { for: "bl-kind" }, "List",
        h("select", { id: "bl-kind", onchange: (e) => (location.hash = `#/blocklists?kind=${e.target.value}`) },
          ["document", "phone", "email", "face"].map((k) => h("option", { value: k, selected: k === kind }, k))))));
  if (can(me.role, "add_block")) {
    const value = h("input", { id: "bl-value", required: true, placeholder: kind === "email" ? "name@example.com" : kind === "phone" ? "+44 20 7946 0000" : "value" });
    const country = h("input", { id: "bl-country", placeholder: "e.g. GBR", size: 6 });
    const reason = h("input", { id: "bl-reason", placeholder: "forged passport, case 1234" });
    const recheck = h("input", { id: "bl-recheck", type: "checkbox" });
    // The normal form the value will be hashed in, shown as you type (nothing is stored).
    const preview = h("p", { id: "bl-preview", class: "muted", "aria-live": "polite" });
    let previewTimer = 0;
    let previewed = "";
    const showPreview = () => {
      clearTimeout(previewTimer);
      previewTimer = setTimeout(async () => {
        const body = { value: value.value };
        if (kind === "document" && country.value.trim()) body.issuing_country = country.value.trim();
        const key = JSON.stringify(body);
        if (key === previewed) return;
        previewed = key;
        if (!value.value.trim()) {
          preview.replaceChildren();
          return;
        }
        try {
          const p = /** @type {S["BlockPreview"]} */ (await api("POST", `/v1/blocklists/${kind}/preview`, body));
          if (previewed !== key) return;
          preview.className = "muted";
          preview.replaceChildren(h("span", {}, "Stored as the keyed hash of ", h("b", { class: "mono" }, p.normal_form),
            kind === "document" && p.normal_form.startsWith("*:") ? " (issued by any country)" : "",
            ` — entry ${p.id.slice(0, 12)}…`,
            p.listed ? [" ", pill("listed"), " already on the list (adding updates its reason)"] : "",
            `; ${p.open_sessions} open case(s) used it${p.open_sessions ? " (a re-check declines them)" : ""}.`));
        } catch (err) {
          if (previewed !== key) return;
          preview.className = "error";
          preview.replaceChildren(err.message);
        }
      }, 250);
    };
    value.addEventListener("input", showPreview);
    country.addEventListener("input", showPreview);
    root.append(h("form", { class: "bar card", onsubmit: async (e) => {
      e.preventDefault();
      const body = { value: value.value, recheck: recheck.checked };
      if (reason.value.trim()) body.reason = reason.value.trim();
      if (kind === "document" && country.value.trim()) body.issuing_country = country.value.trim();
      try {
        const r = /** @type {S["BlockAdded"]} */ (await api("POST", `/v1/blocklists/${kind}`, body));
        const id = r.id;
        const rechecked = r.rechecked && r.rechecked.length ? `; ${r.rechecked.length} session(s) re-checked` : "";
        toast(`Added to the ${kind} blocklist as ${id.slice(0, 12)}…${rechecked}`);
        value.value = "";
        previewed = "";
        preview.replaceChildren();
        load();
      } catch (err) {
        failed(err);
      }
    } },
      h("label", { for: "bl-value" }, `Add ${kind === "email" ? "an" : "a"} ${kind} (only its keyed hash is kept)`, value),
      kind === "document" ? h("label", { for: "bl-country" }, "Issuing country", country) : null,
      h("label", { for: "bl-reason" }, "Reason", reason),
      h("label", { for: "bl-recheck" }, "Re-check open sessions", recheck),
      h("button", { type: "submit", class: "primary" }, "Add"),
      preview));
  }
  root.append(out);
  async function load() {
    try {
      const list = /** @type {S["BlockList"]} */ (await api("GET", `/v1/blocklists/${kind}`));
      const remove = can(me.role, "remove_block");
      out.replaceChildren(table(`${kind} blocklist`, ["Entry (keyed hash)", "Reason", "Added by", "Added", ""], list.entries.map((b) =>
        h("tr", {},
          h("td", { class: "mono" }, b.id),
          h("td", {}, b.reason || ""),
          h("td", {}, b.added_by),
          h("td", {}, fmtTime(b.added_at)),
          h("td", {}, remove ? h("button", { type: "button", class: "danger", onclick: async () => {
            if (!confirm("Remove this entry from the blocklist?")) return;
            try {
              await api("DELETE", `/v1/blocklists/${kind}/${b.id}`);
              toast("Removed");
              load();
            } catch (e) {
              failed(e);
            }
          } }, "Remove") : ""))), "The list is empty."));
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, e.message));
    }
  }
  await load();
}

// --- Rules ----------------------------------------------------------------------------------

export async function rulesScreen(root, me, params) {
  /** @type {S["RulesetList"]} */
  let list;
  try {
    list = /** @type {S["RulesetList"]} */ (await api("GET", "/v1/rulesets"));
  } catch (e) {
    root.append(h("p", { class: "error" }, e.message));
    return;
  }
  const manage = can(me.role, "manage_rules");
  const view = params.get("version");
  const a = list.active;
  const pending = list.pending_activation;
  const pendingView = pending
    ? h("div", { class: "card", id: "rules-pending" },
      h("p", {}, "Waiting for a second approver (four-eyes): ", h("b", { class: "mono" }, pending.label), ` (${pending.version.slice(0, 12)}), asked by ${pending.requested_by} at ${fmtTime(pending.requested_at)}.`),
      manage && pending.requested_by !== me.name
        ? h("div", { class: "actions" }, h("button", { type: "button", id: "rules-approve", class: "primary", onclick: async () => {
          try {
            await api("POST", `/v1/rulesets/${encodeURIComponent(pending.version)}/activate`);
            toast(`Activated ${pending.label}`);
            root.replaceChildren();
            rulesScreen(root, me, params);
          } catch (e) {
            failed(e);
          }
        } }, "Approve and activate"))
        : h("p", { class: "muted" }, manage ? "You asked for it: another policy admin or admin approves." : ""))
    : null;
  root.append(h("h2", {}, "Rules"),
    h("p", {}, "Active: ", h("b", { class: "mono" }, ("label" in a && a.label) || (list.rulesets.find((r) => r.version === a.version) || { label: "" }).label || a.version), "default" in a ? " (the built-in default policy)" : ` — activated by ${a.activated_by} at ${fmtTime(a.activated_at)}`),
    list.require_second_approver ? h("p", { class: "muted" }, "Activations need a second approver (four-eyes).") : "",
    pendingView || "",
    table("Rulesets", ["Label", "Version", "Uploaded", "By", ""], list.rulesets.map((r) =>
      h("tr", {},
        h("td", {}, r.label, r.active ? [" ", pill("active")] : ""),
        h("td", { class: "mono" }, r.version.slice(0, 12)),
        h("td", {}, fmtTime(r.created_at)),
        h("td", {}, r.created_by),
        h("td", {}, link(`#/rules?version=${encodeURIComponent(r.version)}`, manage ? "Open in editor" : "View")))), "No ruleset uploaded yet: the default policy decides."));

  let text = "";
  if (view) {
    try {
      text = (/** @type {S["RulesetDocument"]} */ (await api("GET", `/v1/rulesets/${encodeURIComponent(view)}`))).text;
    } catch (e) {
      failed(e);
    }
  }
  if (!manage) {
    if (view) root.append(h("h3", {}, "Ruleset"), h("pre", { class: "card mono" }, text));
    // Readers test the version shown, or the active ruleset.
    root.append(casesPanel(() => (view ? { version: view } : {}), view ? "this version" : "the active ruleset"));
    return;
  }
  const editor = h("textarea", { id: "rules-editor", class: "editor", spellcheck: "false", "aria-describedby": "rules-errors" }, text);
  const errors = h("div", { id: "rules-errors", role: "alert" });
  const report = h("div", { id: "rules-report" });
  const activate = h("button", { type: "button", id: "rules-activate", class: "primary", disabled: true }, "Upload and activate");
  const draft = h("button", { type: "button", id: "rules-draft", disabled: true }, "Upload as draft");
  let tested = null; // the text the last successful backtest ran
  editor.addEventListener("input", () => {
    if (editor.value !== tested) {
      activate.disabled = draft.disabled = true;
    }
  });

  function showErrors(e, jump = true) {
    const list = (e.body && (e.body.errors || (e.body.details && e.body.details.errors))) || [];
    if (!list.length) {
      errors.replaceChildren(h("p", { class: "error" }, e.message));
      return;
    }
    errors.replaceChildren(h("ul", { class: "errors" }, list.map((x) =>
      h("li", {}, h("button", { type: "button", class: "linklike", onclick: () => goTo(x.line, x.column) }, x.line ? `line ${x.line}, column ${x.column}` : "document"), `: ${x.message}`))));
    if (jump && list[0].line) goTo(list[0].line, list[0].column);
  }

  function goTo(line, column) {
    if (!line) return;
    const lines = editor.value.split("\n");
    let pos = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    pos += Math.max(0, (column || 1) - 1);
    editor.focus();
    editor.setSelectionRange(pos, pos);
  }

  async function backtest() {
    errors.replaceChildren();
    report.replaceChildren(h("p", { class: "muted" }, "Replaying the log's decisions…"));
    const ruleset = editor.value;
    try {
      const r = /** @type {S["Report"]} */ (await api("POST", "/v1/backtests", { ruleset }));
      tested = ruleset;
      activate.disabled = draft.disabled = false;
      const outs = ["approve", "review", "decline"];
      report.replaceChildren(
        h("h3", {}, `Backtest of ${r.candidate_label}: ${r.changed} of ${r.decisions} decisions would change`),
        h("table", { class: "matrix", "aria-label": "Live outcome by candidate outcome" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "live \\ candidate"), outs.map((o) => h("th", { scope: "col" }, o)))),
          h("tbody", {}, outs.map((l) => h("tr", {}, h("th", { scope: "row" }, l), outs.map((c) => h("td", {}, (r.matrix[l] && r.matrix[l][c]) || 0)))))),
        h("p", { class: "muted" }, `Analyst-resolved reviews: ${r.analysts.resolved_reviews}, candidate agrees ${r.analysts.candidate_agrees}, disagrees ${r.analysts.candidate_disagrees}.`),
        h("h3", {}, "Sessions whose outcome would change"),
        table("Changed sessions", ["Session", "Case", "Live", "Candidate", "Candidate reasons"], r.changed_sessions.map((c) =>
          h("tr", {}, h("td", { class: "mono" }, sessionLink(c.session_id)),
            h("td", {}, c.review_id ? link(`#/case/${encodeURIComponent(c.review_id)}`, "Open case") : "–"),
            h("td", {}, pill(c.live)), h("td", {}, pill(c.candidate)), h("td", {}, c.candidate_reasons.join(", ")))), "None: the candidate decides every replayed decision the same way."),
        r.changed_sessions_truncated ? h("p", { class: "muted" }, "Only the first 1000 are listed.") : "");
    } catch (e) {
      report.replaceChildren();
      showErrors(e);
    }
  }

  async function upload(andActivate) {
    if (editor.value !== tested) return;
    try {
      const r = /** @type {S["RulesetUploaded"]} */ (await api("POST", `/v1/rulesets${andActivate ? "?activate=true" : ""}`, editor.value));
      toast(andActivate
        ? (r.active ? `Activated ${r.label}` : `Uploaded ${r.label}; its activation waits for a second approver`)
        : `Uploaded ${r.label} (${r.version.slice(0, 12)}) as a draft`);
      const target = `#/rules?version=${encodeURIComponent(r.version)}`;
      if (location.hash === target) {
        // The same version again (e.g. activating a draft): no hash change, so render anew.
        root.replaceChildren();
        rulesScreen(root, me, new URLSearchParams({ version: r.version }));
      } else {
        location.hash = target;
      }
    } catch (e) {
      showErrors(e);
    }
  }
  draft.addEventListener("click", () => upload(false));
  activate.addEventListener("click", () => upload(true));

  // Validated as you type (the server's validator, 400 ms after the last key): errors inline.
  const status = h("p", { id: "rules-valid", class: "muted", "aria-live": "polite" });
  let typing = 0;
  let checked = "";
  editor.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(async () => {
      const text = editor.value;
      if (!text.trim() || text === checked) return;
      checked = text;
      try {
        const r = /** @type {S["RulesetValid"]} */ (await api("POST", "/v1/rulesets/validate", text));
        if (editor.value !== text) return;
        errors.replaceChildren();
        status.textContent = `Valid: ${r.label}, ${r.rules} rule(s). Backtest it before uploading.`;
      } catch (e) {
        if (editor.value !== text) return;
        status.textContent = "";
        showErrors(e, false);
      }
    }, 400);
  });

  root.append(
    h("h3", {}, view ? "Edit (a change uploads a new version)" : "New ruleset"),
    h("label", { for: "rules-editor", class: "muted" }, "Ruleset YAML — backtest it over the log before it can be uploaded or activated"),
    editor,
    status,
    errors,
    h("div", { class: "actions" }, h("button", { type: "button", id: "rules-backtest", class: "primary", onclick: backtest }, "Backtest"), draft, activate),
    report,
    casesPanel(() => ({ ruleset: editor.value }), "the editor's ruleset", showErrors));
}

// The cases text is kept while the analyst moves between versions (not stored anywhere).
let casesText = "";
const CASES_EXAMPLE = `cases:
  - name: expired passport is declined
    context:
      provider: {status: approved, signature_covers_decision: true}
      document: {expired: true}
    expect: {outcome: decline, reasons: [document.expired]}`;

/**
 * `idstream rules test` on the page: a cases document (typed, pasted or opened from a file) run
 * against `target()` (`{ruleset}`, `{version}` or `{}` = the active ruleset) by
 * `POST /v1/rulesets/test`; each case's result with the rules that fired.
 * @param {() => Partial<S["RulesTestBody"]>} target
 * @param {string} what
 * @param {(e: any) => void} [rulesetErrors] shows errors of the ruleset itself (the editor's)
 */
function casesPanel(target, what, rulesetErrors) {
  const cases = h("textarea", { id: "rules-cases", class: "editor cases", spellcheck: "false", placeholder: CASES_EXAMPLE, "aria-describedby": "rules-cases-errors" }, casesText);
  cases.addEventListener("input", () => (casesText = cases.value));
  const errors = h("div", { id: "rules-cases-errors", role: "alert" });
  const out = h("div", { id: "rules-test-report" });
  const file = h("input", { id: "rules-cases-file", type: "file", accept: ".yaml,.yml,text/yaml,application/yaml", onchange: async () => {
    const f = file.files && file.files[0];
    if (!f) return;
    cases.value = casesText = await f.text();
    file.value = "";
  } });
  const goTo = (line) => {
    if (!line) return;
    const lines = cases.value.split("\n");
    let pos = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    cases.focus();
    cases.setSelectionRange(pos, pos);
  };
  const lineButton = (line) => line ? h("button", { type: "button", class: "linklike", onclick: () => goTo(line) }, `line ${line}`) : "";
  async function run() {
    errors.replaceChildren();
    out.replaceChildren(h("p", { class: "muted" }, "Running the cases…"));
    try {
      const r = /** @type {S["RulesTestReport"]} */ (await api("POST", "/v1/rulesets/test", { ...target(), cases: cases.value }));
      out.replaceChildren(
        h("p", { id: "rules-test-summary", class: r.failed ? "error" : "" }, `${r.passed} passed, ${r.failed} failed — ${r.ruleset_label} (${r.ruleset_version.slice(0, 12)})`),
        table("Test cases", ["", "Case", "Expected", "Got", "Fired rules (values read)"], r.cases.map((c) => {
          const got = [...c.reasons].sort();
          const want = c.expected_reasons;
          const missing = want ? want.filter((x) => !got.includes(x)) : [];
          const extra = want ? got.filter((x) => !want.includes(x)) : [];
          return h("tr", { class: c.passed ? "" : "failed" },
            h("td", {}, pill(c.passed ? "pass" : "fail")),
            h("td", {}, c.name, " ", lineButton(c.line)),
            h("td", {}, pill(c.expected_outcome), want ? ` ${want.join(", ") || "(no reasons)"}` : ""),
            h("td", {}, pill(c.outcome), ` score ${c.score}`, got.length ? ` ${got.join(", ")}` : "",
              missing.length ? h("div", { class: "error" }, `missing: ${missing.join(", ")}`) : "",
              extra.length ? h("div", { class: "error" }, `not expected: ${extra.join(", ")}`) : "",
              c.errors.length ? h("div", { class: "error" }, c.errors.join("; ")) : ""),
            h("td", { class: "mono" }, c.fired.length
              ? c.fired.map((f) => {
                const read = Object.entries(f.values).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
                return h("div", {}, `${f.rule_id} (${f.reason})${read ? `: ${read}` : ""}`);
              })
              : "none"));
        }), "The document has no cases."));
    } catch (e) {
      out.replaceChildren();
      if (e.code === "invalid_ruleset" && rulesetErrors) {
        rulesetErrors(e);
        errors.replaceChildren(h("p", { class: "error" }, "The ruleset has errors (above): the cases did not run."));
        return;
      }
      const list = (e.body && e.body.errors) || [];
      errors.replaceChildren(list.length
        ? h("ul", { class: "errors" }, list.map((x) => h("li", {}, lineButton(x.line), x.line ? ": " : "", x.message)))
        : h("p", { class: "error" }, e.message));
      if (list.length && list[0].line) goTo(list[0].line);
    }
  }
  return h("section", { class: "cases-panel", "aria-labelledby": "rules-cases-title" },
    h("h3", { id: "rules-cases-title" }, "Test cases"),
    h("p", { class: "muted" }, `Example contexts with the outcome you expect, in the format of \`idstream rules test\`, run against ${what}. Nothing is stored.`),
    h("label", { for: "rules-cases", class: "muted" }, "Cases YAML"),
    cases,
    errors,
    h("div", { class: "actions" },
      h("button", { type: "button", id: "rules-test", class: "primary", onclick: run }, "Run cases"),
      h("label", { for: "rules-cases-file", class: "file" }, "Open a cases file ", file)),
    out);
}
