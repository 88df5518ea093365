// Benchmark (not a test): the dashboard's live feed under ~1,000 events/s, in Debian's chromium
// driven by playwright-core. Run by scripts/bench-feed.sh (through scripts/browser-test.sh, which
// starts `idstream serve` and sets IDSTREAM_URL, IDSTREAM_ADMIN_KEY, IDSTREAM_BIN,
// IDSTREAM_SIM_SECRET).
//
// Each run: the feed page idles for IDLE_SECS (the baseline: the same page's frames with no
// events), then `idstream simulate` posts signed webhooks at SIM_RATE deliveries/s, which with
// their decisions and review changes make the log grow by ~1,000 entries/s. In the page, a
// requestAnimationFrame loop records frame intervals and a PerformanceObserver records long
// tasks (> 50 ms, main thread blocked); the harness polls the log's head and the page's
// "received" counter every 250 ms (the backlog: entries in the log not yet counted by the
// page). At the end the page's counter must equal the number of entries appended (nothing
// dropped), waited for with a timeout. Prints one line per run and a table of medians.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import { admin } from "./admin.mjs";

const base = process.env.IDSTREAM_URL;
const bin = process.env.IDSTREAM_BIN;
const RUNS = Number(process.env.RUNS || 3);
const SIM_RATE = Number(process.env.SIM_RATE || 750);
const LOAD_SECS = Number(process.env.LOAD_SECS || 20);
const IDLE_SECS = Number(process.env.IDLE_SECS || 5);
const PASSWORD = "feed-bench-password-1";

const head = async () => (await admin("GET", "/v1/events?limit=1&after=0")).head;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : 0;
};

// In the page: frame intervals and long tasks since the last `take()`.
const PROBE = () => {
  const w = window;
  w.__probe = { frames: [], long: [], last: performance.now() };
  const tick = (t) => {
    w.__probe.frames.push(t - w.__probe.last);
    w.__probe.last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) w.__probe.long.push(e.duration);
  }).observe({ type: "longtask" });
  w.__take = () => {
    const out = { frames: w.__probe.frames, long: w.__probe.long };
    w.__probe.frames = [];
    w.__probe.long = [];
    return out;
  };
  w.__received = () => {
    for (const s of document.querySelectorAll(".stats .stat")) {
      if (s.textContent.startsWith("received")) return Number(s.querySelector("b").textContent);
    }
    return -1;
  };
};

function frameStats(t) {
  return {
    frames: t.frames.length,
    p50_frame_ms: pct(t.frames, 0.5),
    p99_frame_ms: pct(t.frames, 0.99),
    max_frame_ms: t.frames.length ? Math.max(...t.frames) : 0,
    long_tasks: t.long.length,
    long_task_ms: t.long.reduce((a, b) => a + b, 0),
  };
}

function simulate(sessions, seed) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ["simulate", "--target", `${base}/webhooks/didit`, "--sessions", String(sessions),
      "--rate", String(SIM_RATE), "--seed", String(seed), "--duplicate-rate", "0", "--retry-rate", "0", "--quiet"],
      { stdio: ["ignore", "ignore", "inherit"] });
    p.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`simulate exited ${code}`))));
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const results = [];
try {
  await admin("POST", "/v1/users", { username: "ana", role: "analyst", password: PASSWORD });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/");
  await page.getByLabel("Username").fill("ana");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#feed-state").filter({ hasText: "live" }).waitFor({ timeout: 20_000 });
  await page.evaluate(PROBE);

  for (let run = 1; run <= RUNS; run++) {
    // Baseline: the same page with no events arriving.
    await page.evaluate(() => window.__take());
    await sleep(IDLE_SECS * 1000);
    const idle = frameStats(await page.evaluate(() => window.__take()));

    // PROFILE=1: a CPU profile of the page during the first load, its top functions by self time.
    const cdp = process.env.PROFILE && run === 1 ? await page.context().newCDPSession(page) : null;
    if (cdp) {
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.start");
    }
    const h0 = await head();
    const c0 = await page.evaluate(() => window.__received());
    const sessions = Math.round((SIM_RATE * LOAD_SECS) / 3.15); // ~3.15 deliveries per session
    const t0 = Date.now();
    let done = false;
    const sim = simulate(sessions, 1000 + run).then(() => (done = true));
    const backlog = [];
    while (!done) {
      await sleep(250);
      const [h, c] = [await head(), await page.evaluate(() => window.__received())];
      backlog.push(Math.max(0, h - h0 - (c - c0)));
    }
    await sim;
    const loadSecs = (Date.now() - t0) / 1000;
    const load = frameStats(await page.evaluate(() => window.__take()));
    if (cdp) {
      const { profile } = await cdp.send("Profiler.stop");
      const self = new Map();
      const dt = new Map();
      profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) || 0) + (profile.timeDeltas[i] || 0)));
      for (const n of profile.nodes) {
        const f = n.callFrame;
        const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
        self.set(key, (self.get(key) || 0) + (dt.get(n.id) || 0));
      }
      const total = [...self.values()].reduce((a, b) => a + b, 0);
      console.log("page CPU profile, self time (top 20):");
      for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
        console.log(`  ${(us / 1000).toFixed(0).padStart(7)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}`);
      }
    }
    // Decisions of the last webhooks may still be coming: wait for the log to settle, then for
    // the page to have counted every entry.
    let h1 = await head();
    for (let prev = -1; prev !== h1; ) {
      prev = h1;
      await sleep(1000);
      h1 = await head();
    }
    const appended = h1 - h0;
    const settled = Date.now();
    let counted = 0;
    while (Date.now() - settled < 30_000) {
      counted = (await page.evaluate(() => window.__received())) - c0;
      if (counted >= appended) break;
      await sleep(100);
    }
    assert.equal(counted, appended, `run ${run}: the page counted ${counted} of ${appended} entries`);
    const r = {
      run,
      entries: appended,
      entries_per_sec: appended / loadSecs,
      load_secs: loadSecs,
      max_backlog: Math.max(...backlog),
      p50_backlog: pct(backlog, 0.5),
      idle,
      load,
    };
    results.push(r);
    console.log(JSON.stringify(r));
  }
  assert.deepEqual(errors, [], "page errors");
  await page.screenshot({ path: process.env.FEED_SHOT || "/tmp/feed-bench.png" });
} finally {
  await browser.close();
}

const m = (f) => median(results.map(f));
const row = (name, f, unit = "") => console.log(`| ${name} | ${f(true).toFixed(1)}${unit} | ${f(false).toFixed(1)}${unit} |`);
console.log(`\nlive feed at ~1,000 entries/s: medians of ${results.length} runs ` +
  `(${m((r) => r.entries_per_sec).toFixed(0)} entries/s for ${m((r) => r.load_secs).toFixed(1)} s, ` +
  `${m((r) => r.entries)} entries each; every one counted by the page)\n`);
console.log("| figure | under load | idle page (baseline) |");
console.log("|---|---|---|");
row("frames per second", (l) => m((r) => (l ? r.load.frames / r.load_secs : r.idle.frames / IDLE_SECS)));
row("frame interval p50", (l) => m((r) => (l ? r.load : r.idle).p50_frame_ms), " ms");
row("frame interval p99", (l) => m((r) => (l ? r.load : r.idle).p99_frame_ms), " ms");
row("longest frame", (l) => m((r) => (l ? r.load : r.idle).max_frame_ms), " ms");
row("long tasks (> 50 ms)", (l) => m((r) => (l ? r.load : r.idle).long_tasks));
row("time in long tasks", (l) => m((r) => (l ? r.load : r.idle).long_task_ms), " ms");
console.log(`| backlog (log entries not yet counted), p50 / max | ${m((r) => r.p50_backlog)} / ${m((r) => r.max_backlog)} | — |`);
