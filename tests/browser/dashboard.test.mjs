// Browser tests of the dashboard, in Debian's chromium driven by playwright-core (no browser is
// downloaded). Run by scripts/browser-test.sh, which starts a real `idstream serve` and sets:
// IDSTREAM_URL (the node the browser uses), IDSTREAM_API_URL (the node webhooks and the test's
// own API calls go to: another node on shared backends, else the same), IDSTREAM_ADMIN_KEY (an
// admin API key of tenant acme), IDSTREAM_BIN, IDSTREAM_SIM_SECRET (the Didit source's secret),
// SHOTS (where screenshots go).

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { admin } from "./admin.mjs";

const base = process.env.IDSTREAM_URL;
const apiBase = process.env.IDSTREAM_API_URL || base;
const bin = process.env.IDSTREAM_BIN;
const shots = process.env.SHOTS || "screenshots";
const PASSWORD = "browser-test-password-1";
const WAIT = 20_000;
mkdirSync(shots, { recursive: true });

async function allEvents() {
  const out = [];
  let after = 0;
  for (;;) {
    const page = await admin("GET", `/v1/events?after=${after}&limit=1000`);
    out.push(...page.events);
    if (!page.events.length) return out;
    after = page.next_after;
  }
}

function simulate(sessions, seed) {
  // Real signed Didit webhooks from synthetic personas, posted over HTTP.
  execFileSync(bin, ["simulate", "--target", `${apiBase}/webhooks/didit`, "--sessions", String(sessions),
    "--seed", String(seed), "--duplicate-rate", "0", "--retry-rate", "0", "--quiet"], { stdio: "inherit" });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];

async function userPage(username) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`${username}: ${e.message}`));
  page.sockets = [];
  page.on("websocket", () => page.sockets.push(Date.now()));
  page.on("console", (m) => {
    // A CSP violation or a failed module would show here.
    if (m.type() === "error" && !/status of 4[0-9][0-9]/.test(m.text())) errors.push(`${username}: ${m.text()}`);
  });
  await page.goto(base + "/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who").filter({ hasText: username }).waitFor({ timeout: WAIT });
  page.loggedInAt = Date.now();
  return page;
}

const step = (name) => console.log(`--- ${name}`);

/** Clicks `button` and answers the CSV it downloads, as rows of cells (a simple parser: our
 * cells hold no line breaks in these tests). */
async function downloadedCsv(page, button) {
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: WAIT }), button.click()]);
  assert.match(download.suggestedFilename(), /\.csv$/);
  const text = readFileSync(await download.path(), "utf8");
  return text.trim().split("\r\n").map((line) => {
    const cells = [];
    for (const m of line.matchAll(/("([^"]|"")*"|[^,]*)(,|$)/g)) {
      if (m.index === line.length && cells.length) break;
      cells.push(m[1].startsWith('"') ? m[1].slice(1, -1).replace(/""/g, '"') : m[1]);
    }
    return cells;
  });
}

try {
  step("users with different roles, made through the API");
  for (const [username, role] of [["ana", "analyst"], ["bob", "analyst"], ["vic", "viewer"], ["pat", "policy_admin"], ["adele", "admin"]]) {
    await admin("POST", "/v1/users", { username, role, password: PASSWORD });
  }

  step("log in: a wrong password is refused on the page, the right one opens the live feed");
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(base + "/");
    await page.getByLabel("Username").fill("ana");
    await page.getByLabel("Password").fill("wrong-password-123");
    await page.screenshot({ path: `${shots}/login.png` });
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#login-error").filter({ hasText: /wrong username or password/ }).waitFor({ timeout: WAIT });
    await context.close();
  }
  const ana = await userPage("ana");
  await ana.locator("#feed-state").filter({ hasText: "live" }).waitFor({ timeout: WAIT });

  step("webhooks posted now appear in the live feed");
  simulate(25, 11);
  await ana.locator('#feed-rows tr[data-kind="decision.made"]').first().waitFor({ timeout: WAIT });
  await ana.locator('#feed-rows tr[data-kind^="verification."]').first().waitFor({ timeout: WAIT });

  step("pause, more webhooks, resume: nothing lost, nothing twice");
  await ana.getByRole("button", { name: "Pause" }).click();
  await ana.locator("#feed-state").filter({ hasText: "paused" }).waitFor({ timeout: WAIT });
  await ana.waitForTimeout(300);
  // The newest offset shown (the table keeps the newest 100 rows).
  const newest = async () => Math.max(...await ana.locator("#feed-rows tr[data-offset]").evaluateAll((rows) => rows.map((r) => Number(r.dataset.offset))));
  const before = await newest();
  simulate(10, 12);
  await ana.waitForTimeout(1000);
  assert.equal(await newest(), before, "rows arrived while paused");
  await ana.getByRole("button", { name: "Resume" }).click();
  // Decisions keep being appended for a moment: compare until the feed and the log agree.
  let shown = [];
  let expected = null;
  for (const deadline = Date.now() + WAIT; Date.now() < deadline; await ana.waitForTimeout(250)) {
    const events = await allEvents();
    shown = (await ana.locator("#feed-rows tr[data-offset]").evaluateAll((rows) => rows.map((r) => Number(r.dataset.offset)))).sort((a, b) => a - b);
    expected = events.filter((e) => e.tenant === "acme" && e.offset >= shown[0]).map((e) => e.offset);
    if (shown[shown.length - 1] > before && JSON.stringify(shown) === JSON.stringify(expected)) break;
  }
  assert.equal(new Set(shown).size, shown.length, "an event was shown twice");
  assert.deepEqual(shown, expected, "the feed lost events");
  console.log(`feed shows ${shown.length} events, offsets ${shown[0]}..${shown[shown.length - 1]}, no gap`);

  step("filters: decisions with outcome review only");
  await ana.getByLabel("Kind").selectOption("decision");
  await ana.getByLabel("Outcome").selectOption("review");
  const kinds = await ana.locator("#feed-rows tr[data-offset]").evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  assert.ok(kinds.length > 0 && kinds.every((k) => k === "decision.made"), `filtered kinds ${kinds}`);
  step("export the filtered feed as CSV");
  const feedCsv = await downloadedCsv(ana, ana.getByRole("button", { name: "Export CSV" }));
  assert.deepEqual(feedCsv[0].slice(0, 3), ["offset", "kind", "id"]);
  assert.equal(feedCsv.length - 1, kinds.length, "one line per matching event");
  assert.ok(feedCsv.slice(1).every((c) => c[1] === "decision.made" && c[7] === "review"), "only the filtered rows");
  await ana.getByLabel("Kind").selectOption("");
  await ana.getByLabel("Outcome").selectOption("");
  await ana.screenshot({ path: `${shots}/feed.png` });

  step("review queue: oldest first, claim, resolve with a required note");
  await ana.locator("#nav").getByRole("link", { name: "Review queue" }).click();
  await ana.locator("tr[data-review]").first().waitFor({ timeout: WAIT });
  await ana.screenshot({ path: `${shots}/reviews.png` });
  const reviewId = await ana.locator("tr[data-review]").first().getAttribute("data-review");
  await ana.locator("tr[data-review]").first().getByRole("link", { name: "Open case" }).click();
  await ana.getByRole("button", { name: "Claim this case" }).click();
  await ana.locator("#case-status").filter({ hasText: "claimed" }).waitFor({ timeout: WAIT });

  step("a second analyst sees the case as claimed and cannot resolve it");
  const bob = await userPage("bob");
  await bob.goto(`${base}/#/case/${reviewId}`);
  await bob.locator("#case-holder").filter({ hasText: "Claimed by user:ana" }).waitFor({ timeout: WAIT });
  assert.equal(await bob.locator("button.resolve").count(), 0, "bob can press resolve");
  await bob.locator("#nav").getByRole("link", { name: "Review queue" }).click();
  await bob.getByLabel("Status").selectOption("claimed");
  await bob.locator(`tr[data-review="${reviewId}"]`).filter({ hasText: "by user:ana" }).waitFor({ timeout: WAIT });

  step("resolving needs a note");
  await ana.getByRole("button", { name: "Approve" }).click();
  await ana.locator("p.error").filter({ hasText: "note is required" }).waitFor({ timeout: WAIT });
  await ana.getByLabel("Note (required)").fill("Face match re-checked by hand against the document photo: same person.");
  await ana.screenshot({ path: `${shots}/case.png`, fullPage: true });
  await ana.getByRole("button", { name: "Approve" }).click();
  await ana.locator("#case-status").filter({ hasText: "resolved" }).waitFor({ timeout: WAIT });
  const review = await admin("GET", `/v1/reviews/${reviewId}`);
  assert.equal(review.status, "resolved");
  assert.equal(review.resolved_by, "user:ana");
  assert.equal(review.outcome, "approve");

  step("release a claim, escalate to the second level, reassign (admin)");
  const open = await admin("GET", "/v1/reviews?status=open&limit=1");
  const caseId = open.reviews[0].id;
  await bob.goto(`${base}/#/case/${caseId}`);
  await bob.getByRole("button", { name: "Claim this case" }).click();
  await bob.locator("#case-status").filter({ hasText: "claimed" }).waitFor({ timeout: WAIT });
  await bob.getByRole("button", { name: "Release", exact: true }).click();
  await bob.locator("#case-status").filter({ hasText: "open" }).waitFor({ timeout: WAIT });
  await bob.getByRole("button", { name: "Claim this case" }).click();
  await bob.locator("#case-status").filter({ hasText: "claimed" }).waitFor({ timeout: WAIT });
  await bob.getByLabel("Note (required)").fill("Possible sanctions match: needs a second look.");
  await bob.getByRole("button", { name: "Escalate" }).click();
  await bob.locator("#case-level-value").filter({ hasText: "2 (escalated)" }).waitFor({ timeout: WAIT });
  await bob.locator("#case-level").filter({ hasText: "second level" }).waitFor({ timeout: WAIT });
  assert.equal(await bob.locator("button.claim").count(), 0, "an analyst can claim a second-level case");
  const adele = await userPage("adele");
  await adele.goto(`${base}/#/case/${caseId}`);
  await adele.getByLabel("Assign to").fill("pat");
  await adele.getByRole("button", { name: "Reassign" }).click();
  await adele.locator("#case-claimed-by").filter({ hasText: "user:pat" }).waitFor({ timeout: WAIT });
  await adele.screenshot({ path: `${shots}/case-reassigned.png`, fullPage: true });
  const moved = await admin("GET", `/v1/reviews/${caseId}`);
  assert.equal(moved.claimed_by, "user:pat");
  assert.equal(moved.level, 2);
  const caseKinds = (await allEvents()).filter((e) => e.review_id === caseId && e.kind.startsWith("review.")).map((e) => e.kind);
  assert.deepEqual(caseKinds, ["review.opened", "review.claimed", "review.released", "review.claimed", "review.escalated", "review.reassigned"]);

  step("request a resubmission (a note is required); the case closes without an outcome");
  let another;
  for (let seed = 21; !another && seed < 40; seed++) {
    another = (await admin("GET", "/v1/reviews?status=open&limit=200")).reviews.find((r) => r.level === 1);
    if (!another) simulate(20, seed);
  }
  assert.ok(another, "an open first-level case");
  await ana.goto(`${base}/#/case/${another.id}`);
  await ana.getByRole("button", { name: "Claim this case" }).click();
  await ana.locator("#case-status").filter({ hasText: "claimed" }).waitFor({ timeout: WAIT });
  await ana.getByRole("button", { name: "Request resubmission" }).click();
  await ana.locator("p.error").filter({ hasText: "note is required" }).waitFor({ timeout: WAIT });
  await ana.getByLabel("Note (required)").fill("The document photo is blurred: please take it again.");
  await ana.getByRole("button", { name: "Request resubmission" }).click();
  await ana.locator("#case-status").filter({ hasText: "resolved" }).waitFor({ timeout: WAIT });
  const resubmitted = await admin("GET", `/v1/reviews/${another.id}`);
  assert.equal(resubmitted.outcome, null);
  assert.equal(resubmitted.note, "The document photo is blurred: please take it again.");

  step("the viewer sees no claim, resolve or blocklist buttons");
  const vic = await userPage("vic");
  await vic.locator("#nav").getByRole("link", { name: "Review queue" }).click();
  await vic.getByLabel("Status").selectOption("all");
  await vic.locator(`tr[data-review="${reviewId}"]`).waitFor({ timeout: WAIT });
  assert.equal(await vic.locator("button.claim").count(), 0, "viewer sees a claim button");
  step("the review list pages by keyset, each case once");
  let every = (await admin("GET", "/v1/reviews?status=all&limit=1000")).reviews;
  for (let seed = 41; every.length <= 10 && seed < 60; seed++) {
    simulate(20, seed);
    every = (await admin("GET", "/v1/reviews?status=all&limit=1000")).reviews;
  }
  // Let the decision worker settle: the same list twice, a second apart.
  for (let prev = []; prev.length !== every.length;) {
    prev = every;
    await new Promise((r) => setTimeout(r, 1000));
    every = (await admin("GET", "/v1/reviews?status=all&limit=1000")).reviews;
  }
  assert.ok(every.length > 10, `more than one page of 10 cases (${every.length})`);
  await vic.getByLabel("Per page").selectOption("10");
  await vic.locator("#rq-range").filter({ hasText: "Cases 1–10," }).waitFor({ timeout: WAIT });
  const paged = [];
  for (let n = 0; ; n++) {
    await vic.locator("#rq-range").filter({ hasText: `Cases ${n * 10 + 1}–` }).waitFor({ timeout: WAIT });
    paged.push(...await vic.locator("tr[data-review]").evaluateAll((rows) => rows.map((r) => r.dataset.review)));
    if (await vic.locator("#rq-next").isDisabled()) break;
    await vic.locator("#rq-next").click();
  }
  assert.deepEqual(paged, every.map((r) => r.id));
  await vic.locator("#rq-prev").click();
  await vic.locator("#rq-range").filter({ hasText: `Cases ${Math.floor((every.length - 1) / 10) * 10 - 9}–` }).waitFor({ timeout: WAIT });
  await vic.getByLabel("Per page").selectOption("100");
  await vic.locator(`tr[data-review="${reviewId}"]`).waitFor({ timeout: WAIT });

  step("export the review list as CSV");
  const reviewsCsv = await downloadedCsv(vic, vic.getByRole("button", { name: "Export CSV" }));
  assert.deepEqual(reviewsCsv[0].slice(0, 5), ["id", "session_id", "subject", "reasons", "status"]);
  const line = reviewsCsv.find((c) => c[0] === reviewId);
  assert.ok(line, "the resolved case is exported");
  assert.equal(line[4], "resolved");
  assert.equal(line[9], "user:ana");
  await vic.locator(`tr[data-review="${reviewId}"]`).getByRole("link", { name: "Open case" }).click();
  await vic.locator("#case-status").waitFor({ timeout: WAIT });
  assert.equal(await vic.locator("button.claim, button.resolve, #case-note").count(), 0, "viewer sees case actions");
  await vic.screenshot({ path: `${shots}/case-viewer.png`, fullPage: true });
  await vic.locator("#nav").getByRole("link", { name: "Blocklists" }).click();
  await vic.locator("#bl-kind").waitFor({ timeout: WAIT });
  assert.equal(await vic.locator("#bl-value").count(), 0, "viewer sees the add form");

  step("blocklists: an analyst previews the normal form, adds an email, and the preview then says it is listed");
  await ana.locator("#nav").getByRole("link", { name: "Blocklists" }).click();
  await ana.locator("#bl-kind").selectOption("email");
  await ana.locator("#bl-value").fill("nobody");
  await ana.locator("#bl-preview.error").filter({ hasText: "needs one `@`" }).waitFor({ timeout: WAIT });
  await ana.locator("#bl-value").fill("  Fraudster@Example.COM ");
  await ana.locator("#bl-preview").filter({ hasText: "fraudster@example.com" }).filter({ hasText: "0 open case(s)" }).waitFor({ timeout: WAIT });
  assert.equal((await admin("GET", "/v1/blocklists/email")).entries.length, 0, "the preview stored something");
  await ana.locator("#bl-reason").fill("browser test");
  await ana.getByRole("button", { name: "Add" }).click();
  await ana.locator("td", { hasText: "browser test" }).waitFor({ timeout: WAIT });
  assert.equal(await ana.getByRole("button", { name: "Remove" }).count(), 0, "an analyst cannot remove");
  await ana.locator("#bl-value").fill("FRAUDSTER@example.com");
  await ana.locator("#bl-preview").filter({ hasText: "already on the list" }).waitFor({ timeout: WAIT });
  assert.doesNotMatch(await ana.locator("#bl-preview").innerText(), /object|undefined/, "the preview renders every part");
  await ana.screenshot({ path: `${shots}/blocklists.png` });

  step("sessions: search by session id shows its history and checks");
  const sessionId = review.session_id;
  await ana.locator("#nav").getByRole("link", { name: "Sessions & subjects" }).click();
  await ana.locator("#search-session").fill(sessionId);
  await ana.getByRole("button", { name: "Search" }).click();
  await ana.getByRole("heading", { name: "History" }).waitFor({ timeout: WAIT });
  await ana.getByRole("heading", { name: "Linked subjects" }).waitFor({ timeout: WAIT });
  await ana.screenshot({ path: `${shots}/session.png`, fullPage: true });

  step("search by a document number (matched by its keyed hash) finds the session");
  const withDoc = (await allEvents()).find((e) => e.session_id === sessionId && e.checks && e.checks.documents && e.checks.documents.some((d) => d.document_number));
  assert.ok(withDoc, "the session has a document number");
  const number = withDoc.checks.documents.find((d) => d.document_number).document_number;
  await ana.locator("#search-kind").selectOption("document");
  await ana.locator("#search-value").fill(` ${number.toLowerCase()} `);
  await ana.getByRole("button", { name: "Find sessions" }).click();
  await ana.locator("#search-count").waitFor({ timeout: WAIT });
  await ana.locator(`tr[data-session="${sessionId}"]`).waitFor({ timeout: WAIT });
  assert.ok(!(await ana.evaluate(() => location.href)).toLowerCase().includes(number.toLowerCase()), "the value is not in the URL");
  await ana.screenshot({ path: `${shots}/search-identity.png`, fullPage: true });

  step("rules: an error is shown at its line; a draft is backtested before it can be activated");
  const pat = await userPage("pat");
  await pat.locator("#nav").getByRole("link", { name: "Rules" }).click();
  await pat.locator("#rules-editor").fill("version_label: broken\nrules:\n  - id: bad\n    when: aml.hits >>> 0\n    outcome: review\n    reason: x\n    message: y\n");
  // Validated as it is typed: the error appears at its line before any button is pressed.
  await pat.locator("#rules-errors li").filter({ hasText: /line 4/ }).first().waitFor({ timeout: WAIT });
  await pat.getByRole("button", { name: "Backtest" }).click();
  await pat.locator("#rules-errors li").filter({ hasText: /line 4/ }).first().waitFor({ timeout: WAIT });
  assert.ok(await pat.locator("#rules-activate").isDisabled(), "activate without a backtest");
  await pat.screenshot({ path: `${shots}/rules-error.png` });
  const strict = execFileSync(bin, ["rules", "default"], { encoding: "utf8" })
    .replace(/^version_label: .*$/m, "version_label: browser-test-strict")
    .replace(/^rules:\n/m, "rules:\n  - id: decline-everything\n    when: \"true\"\n    outcome: decline\n    reason: test.decline_all\n    message: Everything is declined.\n");
  await pat.locator("#rules-editor").fill(strict);
  await pat.getByRole("button", { name: "Backtest" }).click();
  await pat.getByRole("heading", { name: /^Backtest of/ }).waitFor({ timeout: WAIT });
  assert.ok(await pat.locator('table[aria-label="Changed sessions"] tbody tr a').count() > 0, "no changed session listed");
  // A session the live rules sent to review links to its case.
  const caseLinks = pat.locator('table[aria-label="Changed sessions"] tbody tr').filter({ has: pat.locator(".pill.review") }).getByRole("link", { name: "Open case" });
  assert.ok(await caseLinks.count() > 0, "no changed review links to its case");
  await pat.screenshot({ path: `${shots}/rules-backtest.png`, fullPage: true });

  step("rules: `rules test` cases run against the draft; a bad cases document is shown at its line");
  await pat.locator("#rules-cases").fill("cases:\n  - name: anything is declined\n    expect: {outcome: maybe}\n");
  await pat.getByRole("button", { name: "Run cases" }).click();
  await pat.locator("#rules-cases-errors li").filter({ hasText: /line 3/ }).first().waitFor({ timeout: WAIT });
  await pat.locator("#rules-cases").fill([
    "cases:",
    "  - name: anything is declined",
    "    context: {provider: {status: approved, signature_covers_decision: true}}",
    "    expect: {outcome: decline}",
    "  - name: a clean session is approved",
    "    context: {provider: {status: approved, signature_covers_decision: true}}",
    "    expect: {outcome: approve}",
    "",
  ].join("\n"));
  await pat.getByRole("button", { name: "Run cases" }).click();
  await pat.locator("#rules-test-summary").filter({ hasText: "1 passed, 1 failed — browser-test-strict" }).waitFor({ timeout: WAIT });
  const failedCase = pat.locator('table[aria-label="Test cases"] tr.failed');
  assert.equal(await failedCase.count(), 1, "one failed case");
  assert.match(await failedCase.innerText(), /a clean session is approved[\s\S]*decline-everything/);
  assert.equal(await pat.locator("#rules-cases-errors li").count(), 0, "old errors cleared");
  await pat.locator(".cases-panel").screenshot({ path: `${shots}/rules-test.png` });
  await pat.getByRole("button", { name: "Upload as draft" }).click();
  await pat.locator("td", { hasText: "browser-test-strict" }).waitFor({ timeout: WAIT });
  const rulesets = await admin("GET", "/v1/rulesets");
  assert.ok(rulesets.rulesets.some((r) => r.label === "browser-test-strict" && !r.active), "draft not stored inactive");

  step("a viewer runs the same cases against the active ruleset (read-only)");
  await vic.locator("#nav").getByRole("link", { name: "Rules" }).click();
  await vic.locator("#rules-cases").fill("cases:\n  - name: honest user is approved\n    context:\n      provider: {status: approved, signature_covers_decision: true}\n      document: {age: 34, expired: false}\n      liveness: {score: 97.2}\n      face_match: {score: 91}\n    expect: {outcome: approve, reasons: [kyc.approved]}\n");
  await vic.getByRole("button", { name: "Run cases" }).click();
  await vic.locator("#rules-test-summary").filter({ hasText: /1 passed, 0 failed/ }).waitFor({ timeout: WAIT });
  assert.equal(await vic.locator("#rules-editor").count(), 0, "a viewer has no editor");

  step("four-eyes: an activation waits for a second approver, who activates it");
  await pat.locator("#rules-editor").waitFor({ timeout: WAIT });
  await pat.getByRole("button", { name: "Backtest" }).click();
  await pat.getByRole("heading", { name: /^Backtest of/ }).waitFor({ timeout: WAIT });
  await pat.getByRole("button", { name: "Upload and activate" }).click();
  await pat.locator("#rules-pending").filter({ hasText: "asked by user:pat" }).waitFor({ timeout: WAIT });
  assert.equal(await pat.locator("#rules-approve").count(), 0, "the requester can approve");
  assert.ok(!(await admin("GET", "/v1/rulesets")).rulesets.find((r) => r.label === "browser-test-strict").active, "active before approval");
  const adeleRules = await userPage("adele");
  await adeleRules.locator("#nav").getByRole("link", { name: "Rules" }).click();
  await adeleRules.locator("#rules-pending").waitFor({ timeout: WAIT });
  await adeleRules.screenshot({ path: `${shots}/rules-four-eyes.png` });
  await adeleRules.getByRole("button", { name: "Approve and activate" }).click();
  await adeleRules.locator("tr", { hasText: "browser-test-strict" }).locator(".pill", { hasText: "active" }).waitFor({ timeout: WAIT });
  assert.equal(await adeleRules.locator("#rules-pending").count(), 0, "still pending after approval");
  const activated = (await allEvents()).filter((e) => e.kind === "ruleset.activated").pop();
  assert.equal(activated.actor, "user:adele");
  assert.equal(activated.requested_by, "user:pat");

  step("overview: the tenant's webhooks, decisions and review queue, with charts and the queue alert");
  await vic.locator("#nav").getByRole("link", { name: "Overview" }).click();
  await vic.locator("#ov-accepted b").waitFor({ timeout: WAIT });
  let shownAccepted = null, stats = null;
  for (const deadline = Date.now() + WAIT; Date.now() < deadline; await vic.waitForTimeout(500)) {
    stats = await admin("GET", "/v1/stats?window_secs=3600");
    shownAccepted = Number(await vic.locator("#ov-accepted b").textContent());
    if (shownAccepted === stats.totals.webhooks_accepted) break;
    await vic.reload();
    await vic.locator("#ov-accepted b").waitFor({ timeout: WAIT });
  }
  assert.equal(shownAccepted, stats.totals.webhooks_accepted, "accepted webhooks shown");
  assert.ok(stats.totals.webhooks_accepted > 0 && stats.totals.approve + stats.totals.review + stats.totals.decline > 0, JSON.stringify(stats.totals));
  assert.ok(await vic.locator("figure.chart svg rect.bar").count() > 0, "no bars drawn");
  await vic.locator("#ov-alert").filter({ hasText: "oldest open case" }).waitFor({ timeout: WAIT });
  await vic.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  step("the page renews its stream token before it ends (30 s tokens here) and keeps streaming");
  const since = Date.now() - ana.loggedInAt;
  if (since < 36_000) await ana.waitForTimeout(36_000 - since);
  const renewed = ana.sockets.filter((t) => t - ana.loggedInAt > 18_000 && t - ana.loggedInAt < 30_000);
  assert.ok(renewed.length > 0, `no new stream connection before the first token ended: ${ana.sockets.map((t) => t - ana.loggedInAt)}`);
  simulate(2, 13);
  await ana.locator("#nav").getByRole("link", { name: "Live feed" }).click();
  const last = Math.max(...(await allEvents()).map((e) => e.offset));
  await ana.locator(`#feed-rows tr[data-offset="${last}"]`).waitFor({ timeout: WAIT });

  step("log out");
  await ana.getByRole("button", { name: "Log out" }).click();
  await ana.locator("#login-form").waitFor({ timeout: WAIT });
  await ana.reload();
  await ana.locator("#login-form").waitFor({ timeout: WAIT });

  assert.deepEqual(errors, [], "errors in the pages");
  console.log("browser tests passed");
} finally {
  await browser.close();
}
