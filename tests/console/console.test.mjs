// The admin web console in a real browser: Debian's Chromium (CHROMIUM), driven by
// puppeteer-core, which never downloads a browser. Started by tests/console.rs
// (browser_console_end_to_end), which runs the gateway and checks afterwards what reached the IdP.
//
// Environment: CHROMIUM, CONSOLE_URL (http://admin/console/), PUBLIC_URL (http://public/),
// ADMIN_TOKEN (every scope), READER_TOKEN (read scopes only), SCREENSHOTS (a folder).
import assert from "node:assert/strict";
import path from "node:path";
import puppeteer from "puppeteer-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const CONSOLE = env("CONSOLE_URL").replace(/\/$/, "");
const PUBLIC = env("PUBLIC_URL").replace(/\/$/, "");
const ADMIN_TOKEN = env("ADMIN_TOKEN");
const READER_TOKEN = env("READER_TOKEN");
const SHOTS = env("SCREENSHOTS");
const REG = { client_name: "Console Test", redirect_uris: ["https://app.example.com/cb"] };

const step = (what) => console.log(`- ${what}`);

/** A registration on the public listener with the user agent the block-bots rule matches. */
async function register() {
  const r = await fetch(`${PUBLIC}/oidc/register`, {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": "BadBot/1.0" },
    body: JSON.stringify(REG),
  });
  return r.status;
}

/** Click and wait for the page the click leads to; returns its HTTP status. */
async function follow(page, selector) {
  const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
  return resp ? resp.status() : 0;
}

async function goto(page, where) {
  const resp = await page.goto(`${CONSOLE}${where}`, { waitUntil: "load" });
  return resp.status();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** What a page shows and where it is must never hold a token; neither may script-visible cookies. */
async function noToken(page) {
  const html = await page.content();
  for (const t of [ADMIN_TOKEN, READER_TOKEN]) {
    assert.ok(!html.includes(t), "a token in the page");
    assert.ok(!page.url().includes(t), "a token in the URL");
  }
  assert.equal(await page.evaluate(() => document.cookie), "", "the session cookie is HttpOnly");
}

/** Every visible form control has a label; the skip link comes first on the keyboard. */
async function accessible(page) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => el.type !== "hidden")
      .filter((el) => !el.getAttribute("aria-label") && !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)))
      .map((el) => el.name || el.id),
  );
  assert.deepEqual(unlabelled, [], `controls without a label on ${page.url()}`);
  const first = await page.evaluate(() => document.querySelector("a[href], button, input:not([type=hidden]), select, textarea").className);
  assert.equal(first, "skip", `the first keyboard stop on ${page.url()} is the skip link`);
}

async function signIn(page, token) {
  assert.equal(await goto(page, "/"), 200);
  assert.match(page.url(), /\/console\/login$/);
  await page.type("#token", token);
  const status = await follow(page, "form[action='/console/login'] button[type=submit]");
  assert.equal(status, 200);
  assert.match(page.url(), /\/console\/rules$/);
}

// Chromium's first start on a cold, loaded machine (a CI runner building in parallel) can take
// longer than puppeteer's 30 s default to print its DevTools endpoint: allow 120 s, and try a
// second time if the first start still times out (a start failure, not a console failure).
async function launch() {
  const options = {
    executablePath: env("CHROMIUM"),
    headless: true,
    timeout: 120000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--lang=en-US"],
  };
  try {
    return await puppeteer.launch(options);
  } catch (e) {
    if (e?.name !== "TimeoutError") throw e;
    console.error(`chromium did not start (${e.message}); trying once more`);
    return await puppeteer.launch(options);
  }
}

const browser = await launch();
const violations = [];
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 850 });
  page.on("console", (m) => {
    // Chromium reports every answer >= 400 (the refused sign-in and edit are meant to be) as a
    // "Failed to load resource" error; anything else (a CSP violation, a script error) counts.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) violations.push(m.text());
  });
  page.on("pageerror", (e) => violations.push(String(e)));

  step("sign in with an admin token");
  assert.equal(await goto(page, "/"), 200);
  await accessible(page);
  await shot(page, "login");
  await page.type("#token", "not-the-token");
  assert.equal(await follow(page, "form[action='/console/login'] button[type=submit]"), 401);
  assert.match(await page.$eval("#login-error", (e) => e.textContent), /unknown token/);
  await signIn(page, ADMIN_TOKEN);
  await noToken(page);
  assert.equal(await page.$eval("[data-testid=who]", (e) => e.textContent), "sec-team");

  step("see the rules, in evaluation order");
  const ids = await page.$$eval("table[data-testid=rules] tbody tr", (rows) => rows.map((r) => r.dataset.ruleId));
  assert.deepEqual(ids, ["block-bots", "allow-office"]);
  assert.equal(await page.$eval("tr[data-rule-id=block-bots]", (r) => r.dataset.action), "block");
  await accessible(page);

  step("a matching registration is blocked while the rule enforces");
  assert.equal(await register(), 403);

  step("toggle the rule into monitoring mode, from the keyboard");
  await page.focus("tr[data-rule-id=block-bots] [data-testid=monitor]");
  const [toggled] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.keyboard.press("Enter")]);
  assert.equal(toggled.status(), 200);
  assert.match(await page.$eval("[data-testid=notice]", (e) => e.textContent), /monitoring mode/);
  assert.equal(await page.$eval("tr[data-rule-id=block-bots]", (r) => r.dataset.monitoring), "true");

  step("the next matching request is recorded, not blocked");
  assert.equal(await register(), 201);
  assert.equal(await goto(page, "/rules"), 200);
  const logged = await page.$eval("tr[data-rule-id=block-bots] [data-testid=count-log]", (e) => e.textContent);
  assert.match(logged, /^1 · 1 · 1$/, `log matches: ${logged}`);
  const blocked = await page.$eval("tr[data-rule-id=block-bots] [data-testid=count-block]", (e) => e.textContent);
  assert.match(blocked, /^1 · 1 · 1$/, `block matches: ${blocked}`);
  await shot(page, "rules");

  step("the decisions page shows both, filtered by rule");
  assert.equal(await goto(page, "/decisions"), 200);
  await page.type("#q-rule", "block-bots");
  assert.equal(await follow(page, "form.filters button[type=submit]"), 200);
  const rows = await page.$$eval("table[data-testid=decisions] tbody tr", (rs) =>
    rs.map((r) => ({ decision: r.dataset.decision, rule: r.dataset.rule, logged: r.dataset.logged })),
  );
  assert.deepEqual(rows, [
    { decision: "allow", rule: "", logged: "block-bots" },
    { decision: "block", rule: "block-bots", logged: "" },
  ]);
  // console.js submits the filters as soon as a choice is made.
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.select("#q-decision", "allow")]);
  assert.equal(await page.$$eval("table[data-testid=decisions] tbody tr", (rs) => rs.length), 1);
  await accessible(page);
  await shot(page, "decisions");

  step("run an explain on the live snapshot");
  assert.equal(await goto(page, "/explain"), 200);
  await page.type("#x-ip", "192.0.2.10");
  await page.type("#x-ua", "BadBot/1.0");
  assert.equal(await follow(page, "form.explain-form button[type=submit]"), 200);
  assert.equal(await page.$eval("[data-testid=explain-decision]", (e) => e.textContent), "allow");
  assert.match(await page.$eval("[data-testid=explain-logged]", (e) => e.textContent), /block-bots/);
  await accessible(page);
  await shot(page, "explain");

  step("a bad edit is refused, with the error at its field");
  assert.equal(await goto(page, "/rules"), 200);
  assert.equal(await follow(page, "tr[data-rule-id=allow-office] a[href$='/edit']"), 200);
  const cidr = "[id='f-match.ipv4_cidrs']";
  await page.$eval(cidr, (e) => {
    e.value = "";
  });
  await page.type(cidr, "10.0.0.300/8");
  assert.equal(await follow(page, "form.rule-form button[type=submit]"), 400);
  assert.equal(await page.$eval(cidr, (e) => e.getAttribute("aria-invalid")), "true");
  const described = await page.$eval(cidr, (e) => e.getAttribute("aria-describedby"));
  const fieldError = await page.$eval(`[id='${described}']`, (e) => e.textContent);
  assert.match(fieldError, /10\.0\.0\.300\/8/);
  assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), "f-match.ipv4_cidrs");
  await shot(page, "rule-edit-error");

  step("tenant and clients pages");
  assert.equal(await goto(page, "/tenant"), 200);
  assert.equal(await page.$eval("[data-testid=dcr-enabled]", (e) => e.textContent.trim()), "on");
  await accessible(page);
  await shot(page, "tenant");
  // The registry writes accepted registrations off the response path: poll for the row.
  let clients = [];
  for (let i = 0; i < 50 && clients.length === 0; i++) {
    assert.equal(await goto(page, "/clients"), 200);
    clients = await page.$$eval("table[data-testid=clients] tbody tr", (rs) => rs.map((r) => r.dataset.clientId));
    if (clients.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(clients, ["client-1"], "the client registered in monitoring mode is listed");
  await accessible(page);
  await shot(page, "clients");
  await noToken(page);

  step("a token without write scopes sees no write control");
  const other = await browser.createBrowserContext();
  const ro = await other.newPage();
  await ro.setViewport({ width: 1366, height: 850 });
  ro.on("pageerror", (e) => violations.push(String(e)));
  await signIn(ro, READER_TOKEN);
  await noToken(ro);
  for (const where of ["/rules", "/tenant", "/decisions", "/explain", "/clients"]) {
    assert.equal(await goto(ro, where), 200);
    const writes = await ro.$$eval("[data-write], form[method=post]:not(.signout)", (els) => els.length);
    assert.equal(writes, 0, `write controls on ${where} for a read-only token`);
  }
  assert.equal(await goto(ro, "/rules"), 200);
  assert.equal(await ro.$$eval("tr[data-rule-id] button", (els) => els.length), 0);
  await shot(ro, "rules-read-only");
  await other.close();

  assert.deepEqual(violations, [], "browser errors (a CSP violation shows here)");
  console.log("console browser test: ok");
} finally {
  await browser.close();
}
