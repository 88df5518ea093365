// The overview: the tenant's webhooks, decisions per outcome and review queue over a window,
// from GET /v1/stats (the store, every node's counts), with bar charts and the queue alert.

import { api, h, fmtTime, fmtAge } from "./api.js";

/** @typedef {import("./types/api.gen").components["schemas"]} S */

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

/** A stacked bar chart of `series` ([key, label, css class]) over the buckets. */
function chart(label, buckets, series) {
  const W = 720, H = 160, pad = 24;
  const totals = buckets.map((b) => series.reduce((n, [k]) => n + b[k], 0));
  const max = Math.max(1, ...totals);
  const bw = (W - pad) / buckets.length;
  const bars = [];
  buckets.forEach((b, i) => {
    let y = H - pad;
    for (const [k, name, cls] of series) {
      const hgt = ((H - 2 * pad) * b[k]) / max;
      if (hgt > 0) {
        y -= hgt;
        bars.push(svg("rect", { x: (pad + i * bw + 1).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: hgt.toFixed(1), class: `bar ${cls}` },
          svg("title", {}, document.createTextNode(`${fmtTime(b.start)}: ${b[k]} ${name}`))));
      }
    }
  });
  const axis = [
    svg("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, class: "axis" }),
    svg("text", { x: 0, y: pad, class: "tick" }, document.createTextNode(String(max))),
    svg("text", { x: pad, y: H - 6, class: "tick" }, document.createTextNode(fmtTime(buckets[0].start))),
    svg("text", { x: W - 4, y: H - 6, class: "tick end" }, document.createTextNode("now")),
  ];
  return h("figure", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label }, axis, bars),
    h("figcaption", {}, label, " — ", series.map(([, name, cls]) => h("span", { class: `legend ${cls}` }, name))));
}

export async function overviewScreen(root, me, params) {
  const win = params.get("window") || "3600";
  const pick = h("select", { id: "ov-window", onchange: (e) => { location.hash = `#/overview?window=${e.target.value}`; } },
    [["3600", "last hour"], ["21600", "last 6 hours"], ["86400", "last 24 hours"], ["604800", "last 7 days"]]
      .map(([v, t]) => h("option", { value: v, selected: v === win }, t)));
  root.append(h("h2", {}, "Overview"), h("div", { class: "bar" }, h("label", { for: "ov-window" }, "Window", pick)));
  /** @type {S["TenantStats"]} */
  let s;
  try {
    s = /** @type {S["TenantStats"]} */ (await api("GET", `/v1/stats?window_secs=${encodeURIComponent(win)}`));
  } catch (e) {
    root.append(h("p", { class: "error" }, e.message));
    return;
  }
  if (s.alert && s.alert.firing) {
    root.append(h("p", { class: "alert", role: "alert", id: "ov-alert" },
      `The oldest open case has waited ${fmtAge(s.reviews.oldest_open_age_secs)} — over the ${fmtAge(s.alert.oldest_open_after_secs)} alert age. `,
      h("a", { href: "#/reviews" }, "Open the review queue")));
  }
  const t = s.totals;
  const stat = (id, label, n, cls) => h("div", { class: "stat", id }, h("span", { class: cls ? `pill ${cls}` : "muted" }, label), h("b", {}, n));
  root.append(
    h("div", { class: "stats" },
      stat("ov-accepted", "webhooks accepted", t.webhooks_accepted),
      stat("ov-duplicate", "duplicates", t.webhooks_duplicate),
      stat("ov-rejected", "rejected", t.webhooks_rejected, t.webhooks_rejected ? "decline" : ""),
      stat("ov-approve", "approve", t.approve, "approve"),
      stat("ov-review", "review", t.review, "review"),
      stat("ov-decline", "decline", t.decline, "decline"),
      stat("ov-open", "open cases", s.reviews.open),
      stat("ov-claimed", "claimed", s.reviews.claimed),
      stat("ov-oldest", "oldest open", s.reviews.oldest_open_age_secs === null ? "–" : fmtAge(s.reviews.oldest_open_age_secs))),
    h("p", { class: "muted" }, `${fmtTime(s.from)} to ${fmtTime(s.to)}, ${s.bucket_secs / 60}-minute bars; counted by every node, from the store.`),
    chart("Webhooks", s.buckets, [["webhooks_accepted", "accepted", "accepted"], ["webhooks_duplicate", "duplicate", "duplicate"], ["webhooks_rejected", "rejected", "rejected"]]),
    chart("Decisions", s.buckets, [["approve", "approve", "approve"], ["review", "review", "review"], ["decline", "decline", "decline"]]));
}
