// tests/browser/dashboard.mjs - drives GET /dashboard in Debian's headless Chromium.
//
//   node tests/browser/dashboard.mjs STATS_URL ADMIN_TOKEN SCREENSHOT.png
//
// Run by tests/faults/e2e_dashboard.sh once the service is in a known state: a
// Gemini outage has opened its breaker and some submissions are in needs_review.
// Checks what an operator relies on: the page loads with no console error and no
// request leaving the stats server's origin, its numbers are those of /stats,
// the outage shows as an open breaker, the latest failures are listed with their
// reasons, and a button is refused without an admin token and works with one.
// Prints one "PASS: ..." or "FAIL: ..." line per check; exit 1 on any failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, token, screenshot] = process.argv.slice(2);
if (!url || !token || !screenshot) {
    console.error("usage: dashboard.mjs STATS_URL ADMIN_TOKEN SCREENSHOT.png");
    process.exit(2);
}

let failures = 0;
function check(ok, what) {
    console.log(`${ok ? "PASS" : "FAIL"}: e2e_dashboard (browser): ${what}`);
    if (!ok) failures++;
}

// Polls fn until it returns true, at most `ms` milliseconds.
async function until(fn, ms) {
    const end = Date.now() + ms;
    for (;;) {
        if (await fn()) return true;
        if (Date.now() > end) return false;
        await new Promise((r) => setTimeout(r, 200));
    }
}

async function stats() {
    const r = await fetch(url + "/stats");
    return r.json();
}

const profile = mkdtempSync(join(tmpdir(), "ev-chromium-"));
// A fresh profile directory every run (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
});
try {
    const page = await browser.newPage();
    const errors = [];
    const foreign = [];
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("request", (r) => { if (!r.url().startsWith(url)) foreign.push(r.url()); });

    const resp = await page.goto(url + "/dashboard", { waitUntil: "load" });
    check(resp && resp.status() === 200, "GET /dashboard answers 200");
    check(await until(async () => (await page.textContent("#updated")).startsWith("updated"), 10000),
          "the page renders the figures");

    // The page's numbers are /stats's (it refreshes every 2 s; the service is quiet).
    const fields = [
        ["#queue-pending", (s) => String(s.queue.pending)],
        ["#queue-processing", (s) => String(s.queue.processing)],
        ["#queue-needs-review", (s) => String(s.queue.needs_review)],
        ["#queue-failed", (s) => String(s.queue.failed)],
        ["#spend-today", (s) => Number(s.spend.today_usd).toFixed(4)],
        ["#prov-gemini .calls", (s) => String(s.providers.gemini.calls)],
        ["#prov-groq .calls", (s) => String(s.providers.groq.calls)],
    ];
    let mismatch = "";
    const same = await until(async () => {
        const s = await stats();
        mismatch = "";
        for (const [sel, want] of fields) {
            const got = (await page.textContent(sel)).trim();
            if (got !== want(s)) mismatch += ` ${sel}=${got} (stats: ${want(s)})`;
        }
        return mismatch === "";
    }, 15000);
    check(same, "every number on the page matches /stats" + mismatch);

    check(await until(async () => (await page.textContent("#prov-gemini .breaker")).trim() === "open", 10000),
          "the Gemini outage shows as an open breaker");
    const rows = await page.locator("#failures tbody tr").count();
    const firstReason = rows ? (await page.textContent("#failures tbody tr:first-child td.reason")) : "";
    check(rows >= 2 && firstReason.length > 0,
          `the latest failures are listed with their reasons (${rows} rows, "${firstReason.trim()}")`);

    // Without a token the service refuses the action.
    await page.fill("#token", "");
    await page.click("#btn-requeue");
    check(await until(async () => (await page.textContent("#action-result")).includes("refused (401)"), 10000),
          "Requeue without a token is refused (401)");
    // Chromium logs every non-2xx fetch as a console error: the refusal just
    // asked for is the one expected, and only it is forgiven.
    const expected = errors.filter((e) => /status of 401/.test(e));
    check(expected.length === 1, "the refusal is the page's one 401");
    errors.splice(0, errors.length, ...errors.filter((e) => !/status of 401/.test(e)));
    const before = (await stats()).queue.needs_review;
    check(before >= 2, `needs_review still holds the failures (${before})`);

    // With the admin token it works and the page reports what was done.
    await page.fill("#token", token);
    await page.click("#btn-requeue");
    check(await until(async () => /requeued \d+ submission/.test(await page.textContent("#action-result")), 10000),
          "Requeue with an admin token works and reports what it did: " +
          (await page.textContent("#action-result")).split("\n")[0]);

    await page.screenshot({ path: screenshot, fullPage: true });
    check(errors.length === 0, "no console errors" + (errors.length ? ": " + errors.join(" | ") : ""));
    check(foreign.length === 0, "no request leaves the service's origin" + (foreign.length ? ": " + foreign.join(" ") : ""));
} finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
}
process.exit(failures ? 1 : 0);
