// The dashboard's entry point: log in, learn who we are (GET /v1/auth/me), route between
// screens (#/overview, #/feed, #/reviews, #/case/<id>, #/search, #/blocklists, #/rules).

import { api, setCsrf, h } from "./api.js";
import { LiveStream, feedScreen } from "./feed.js";
import { reviewsScreen, caseScreen, searchScreen, blocklistsScreen, rulesScreen } from "./screens.js";
import { overviewScreen } from "./overview.js";

/** @typedef {import("./types/api.gen").components["schemas"]} S */

/** @type {S["Me"] | null} */
let me = null;
let stream = null;
let leaveScreen = null;

/** An element of the page by id (`any`: inputs, forms and containers alike). */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

function showLogin(message) {
  if (stream) stream.stop();
  stream = null;
  me = null;
  $("shell").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-username").focus();
}

async function enter() {
  me = /** @type {S["Me"]} */ (await api("GET", "/v1/auth/me"));
  setCsrf(me.csrf_token);
  $("login").hidden = true;
  $("shell").hidden = false;
  $("who").replaceChildren(h("b", {}, me.name), ` · ${me.role} · ${me.tenant}`);
  $("who").dataset.role = me.role;
  stream = new LiveStream();
  stream.start();
  route();
}

async function route() {
  if (!me) return;
  if (leaveScreen) leaveScreen();
  leaveScreen = null;
  const hash = location.hash.replace(/^#\/?/, "") || "feed";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const [name, arg] = path.split("/");
  for (const a of /** @type {NodeListOf<HTMLAnchorElement>} */ (document.querySelectorAll("#nav a"))) {
    const current = a.dataset.screen === name || (name === "case" && a.dataset.screen === "reviews");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = $("screen");
  root.replaceChildren();
  root.dataset.screen = name;
  switch (name) {
    case "reviews": await reviewsScreen(root, me, params); break;
    case "case": await caseScreen(root, me, decodeURIComponent(arg || "")); break;
    case "search": await searchScreen(root, me, params); break;
    case "blocklists": await blocklistsScreen(root, me, params); break;
    case "rules": await rulesScreen(root, me, params); break;
    case "overview": await overviewScreen(root, me, params); break;
    default: leaveScreen = feedScreen(root, stream);
  }
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("POST", "/v1/auth/login", { username: $("login-username").value, password: $("login-password").value });
    $("login-password").value = "";
    await enter();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/v1/auth/logout");
  } catch {
    // The session may already be over; the page logs out either way.
  }
  showLogin("You are logged out.");
});

window.addEventListener("idstream:logged-out", () => {
  if (me) showLogin("Your session has ended: log in again.");
});
window.addEventListener("hashchange", route);

enter().catch(() => showLogin());
