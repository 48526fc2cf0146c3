// The admin dashboard driven by headless Chromium, as a person would use it: sign in, read
// the analytics, purge a tag, change the config, debug a URL, look at the jobs, sign out.
//
// Run by the Rust end-to-end test (which starts media-edge, makes traffic first, and checks
// the effects afterwards: the purged object misses, the config change took effect):
//
//   ME_BASE=http://127.0.0.1:PORT ME_TOKEN=... ME_SCREENSHOTS=DIR ME_PURGE_TAG=... \
//   ME_DEBUG_URL=/samples/a.jpg?width=100 ME_EXPECT_KEY=... \
//   ME_CONFIG_FIND=... ME_CONFIG_REPLACE=... node dashboard.mjs
//
// One line a passed step on stdout; the first unmet expectation ends it with a message on
// stderr (and a `failure.png`) and exit code 1. Every wait has a deadline; none is a sleep.
import {chromium} from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const TIMEOUT = 15_000; // for any one expectation
const WHOLE_RUN = 180_000; // a hung browser must not hang the caller

function env(name) {
  const v = process.env[name];
  if (v === undefined || v === '') fail(`environment variable ${name} is not set`);
  return v;
}

function fail(msg) {
  process.stderr.write(`dashboard: ${msg}\n`);
  process.exit(1);
}

const BASE = env('ME_BASE').replace(/\/+$/, '');
const TOKEN = env('ME_TOKEN');
const SHOTS = env('ME_SCREENSHOTS');
const PURGE_TAG = env('ME_PURGE_TAG');
const DEBUG_URL = env('ME_DEBUG_URL');
const EXPECT_KEY = env('ME_EXPECT_KEY');
const CONFIG_FIND = env('ME_CONFIG_FIND');
const CONFIG_REPLACE = process.env.ME_CONFIG_REPLACE ?? fail('environment variable ME_CONFIG_REPLACE is not set');
fs.mkdirSync(SHOTS, {recursive: true});
setTimeout(() => fail(`the whole run took over ${WHOLE_RUN / 1000} s`), WHOLE_RUN).unref();

class Unmet extends Error {}
const expect = (cond, msg) => { if (!cond) throw new Unmet(msg); };

const browser = await chromium.launch({
  executablePath: process.env.ME_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({viewport: {width: 1280, height: 800}});
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('dialog', (d) => pageErrors.push(`a native ${d.type()} dialog appeared: ${d.message()}`) && d.dismiss());

let shot = 0;
async function screenshot(name) {
  shot += 1;
  await page.screenshot({path: path.join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true});
}

/** Waits for `selector` to be visible; the message says what was expected. */
async function visible(selector, what) {
  try {
    await page.locator(selector).first().waitFor({state: 'visible', timeout: TIMEOUT});
  } catch {
    throw new Unmet(`${what}: ${selector} not visible within ${TIMEOUT / 1000} s${await banner()}`);
  }
}

/** Polls `fn` in the page until it returns a truthy value (or the deadline passes). */
async function until(what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, {timeout: TIMEOUT, polling: 100})).jsonValue();
  } catch {
    throw new Unmet(`${what} (not within ${TIMEOUT / 1000} s)${await banner()}`);
  }
}

/** The dashboard's error banner, if it shows one: the likeliest explanation of a failure. */
async function banner() {
  const b = page.locator('#app-error');
  return (await b.count()) && (await b.isVisible()) ? `; the page says: ${await b.textContent()}` : '';
}

const text = async (selector) => (await page.locator(selector).first().innerText()).replace(/\s+/g, ' ').trim();

/** A result box's outcome once it is no longer pending. */
async function outcome(selector, attr) {
  return until(`${selector} shows an outcome`, ([sel, a]) => {
    const el = document.querySelector(sel);
    const v = el && el.getAttribute(a);
    return v && v !== 'pending' ? v : null;
  }, [selector, attr]);
}

async function tab(name) {
  await page.click(`#tab-${name}`);
  await visible(`#panel-${name}`, `the ${name} tab opens`);
}

const steps = [
  ['login: a wrong token is refused, the right one opens the dashboard', async () => {
    await page.goto(`${BASE}/admin/dashboard`);
    await visible('#token', 'the login page');
    expect(await page.locator('#login-error').isHidden(), 'login-error shows before any attempt');
    await screenshot('login');
    await page.fill('#token', `${TOKEN}-wrong`);
    await Promise.all([page.waitForURL(/error=1/), page.click('#login')]);
    await visible('#login-error', 'a wrong token shows the error');
    expect(/wrong token/i.test(await text('#login-error')), `login-error says "${await text('#login-error')}"`);
    expect((await context.cookies()).length === 0, 'a wrong token set a cookie');
    await screenshot('login-error');
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL((u) => !u.search.includes('error')), page.click('#login')]);
    await visible('#tab-analytics', 'the right token opens the dashboard');
    const cookies = await context.cookies();
    expect(cookies.length > 0, 'no session cookie after signing in');
    for (const c of cookies) {
      expect(c.httpOnly, `cookie ${c.name} is not HttpOnly`);
      expect(c.sameSite === 'Strict', `cookie ${c.name} is SameSite=${c.sameSite}, not Strict`);
    }
    expect(!(await page.evaluate(() => document.cookie)), 'the session cookie is readable by scripts');
  }],

  ['analytics: the request count is shown', async () => {
    await tab('analytics');
    const n = await until('stat-total shows a number > 0', () => {
      const v = Number((document.getElementById('stat-total').textContent || '').replace(/[^0-9]/g, ''));
      return v > 0 ? v : null;
    });
    await visible('#analytics-chart svg', 'the time-series chart');
    await visible('#breakdown-by_status', 'the status breakdown');
    await screenshot('analytics');
    return `${n} requests`;
  }],

  ['cache: a tag is purged after confirmation', async () => {
    await tab('cache');
    // A cookie-only POST without the dashboard's header is refused (the CSRF guard).
    const forged = await page.evaluate(async () => (await fetch('/admin/cache/purge', {
      method: 'POST', credentials: 'same-origin', body: '{"tags":["csrf-probe"]}'})).status);
    expect(forged >= 400, `a POST without X-Dashboard answered ${forged}`);
    await page.selectOption('#purge-kind', 'tag');
    await page.fill('#purge-value', PURGE_TAG);
    await page.click('#purge-go');
    await visible('#purge-confirm', 'the purge asks for confirmation');
    await screenshot('purge-confirm');
    await page.click('#purge-confirm');
    const state = await outcome('#purge-result', 'data-state');
    const said = await text('#purge-result');
    expect(state === 'ok', `the purge failed: ${said}`);
    expect(said.includes(PURGE_TAG), `purge-result does not name the tag: ${said}`);
    await screenshot('purge-done');
  }],

  ['config: edited, validated and applied', async () => {
    await tab('config');
    const loaded = await until('the config text is loaded',
      () => document.getElementById('config-text').value || null);
    expect(loaded.includes(CONFIG_FIND), `the config text does not contain ${JSON.stringify(CONFIG_FIND)}`);
    await page.fill('#config-text', loaded.replace(CONFIG_FIND, CONFIG_REPLACE));
    await page.click('#config-validate');
    let o = await outcome('#config-result', 'data-outcome');
    expect(o === 'valid', `validate answered ${o}: ${await text('#config-result')}`);
    await screenshot('config-valid');
    await page.click('#config-apply');
    await visible('#config-confirm', 'applying asks for confirmation');
    await page.click('#config-confirm');
    o = await outcome('#config-result', 'data-outcome');
    expect(o === 'applied', `apply answered ${o}: ${await text('#config-result')}`);
    if (CONFIG_REPLACE) {
      await until('the running config (loaded again) holds the change',
        (s) => document.getElementById('config-text').value.includes(s), CONFIG_REPLACE);
    }
    await screenshot('config-applied');
  }],

  ['debug: the resolution shows the cache key, and the response its headers', async () => {
    await tab('debug');
    await page.fill('#debug-url', DEBUG_URL);
    await page.click('#debug-go');
    await visible('#debug-key', `the resolution of ${DEBUG_URL}`);
    const key = await text('#debug-key');
    expect(key.includes(EXPECT_KEY), `debug-key is ${JSON.stringify(key)}, expected it to contain ${JSON.stringify(EXPECT_KEY)}`);
    await visible('#debug-response #debug-status', 'the response of the URL itself');
    await visible('#debug-headers', 'the response headers');
    await screenshot('debug');
    return key;
  }],

  ['jobs: the tab renders', async () => {
    await tab('jobs');
    await visible('#jobs-table, #jobs-none, #jobs-empty', 'a job table or a note');
    await screenshot('jobs');
    return (await page.locator('#jobs-none').count()) ? 'no job queue on this node' : 'job list';
  }],

  ['logout: the login form is back', async () => {
    await page.click('#logout');
    await visible('#token', 'the login form after signing out');
    expect(!(await page.locator('#tab-analytics').count()), 'the dashboard is still shown');
    await page.goto(`${BASE}/admin/dashboard`);
    await visible('#token', 'the login form after a reload (the session is gone)');
    await screenshot('logged-out');
  }],
];

let n = 0;
for (const [name, run] of steps) {
  n += 1;
  try {
    const note = await run();
    expect(!pageErrors.length, `errors in the page: ${pageErrors.join(' | ')}`);
    console.log(`ok ${n} - ${name}${note ? ` (${note})` : ''}`);
  } catch (e) {
    await page.screenshot({path: path.join(SHOTS, 'failure.png'), fullPage: true}).catch(() => {});
    await browser.close().catch(() => {});
    fail(`step ${n} (${name}) failed: ${e instanceof Unmet ? e.message : e.stack || e}`);
  }
}
await browser.close();
