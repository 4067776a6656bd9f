// crier's web console in Debian's Chromium, through playwright-core (no browser download).
// Started by tests/console_browser.rs, which sets up crier serve, the BulkSMS mock and
// this environment: CRIER_URL, CRIER_TOKEN, CRIER_MOCK, CRIER_BIN, CRIER_PROJECT,
// CRIER_CUSTOMERS, CRIER_SHOTS (and CRIER_DOCS_SHOTS to write the README's screenshots).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const BASE = process.env.CRIER_URL;
const TOKEN = process.env.CRIER_TOKEN;
const MOCK = process.env.CRIER_MOCK;
const SHOTS = process.env.CRIER_SHOTS || tmpdir();
const DOCS = process.env.CRIER_DOCS_SHOTS;
const CUSTOMERS = Number(process.env.CRIER_CUSTOMERS);

let context;
let page;
let profile;
/** Console errors and page errors of the current test. */
let errors = [];
/** Every URL the page requested, in order. */
let requests = [];

before(async () => {
  assert.ok(BASE && TOKEN && MOCK, 'run through tests/console_browser.rs (cargo test --test console_browser)');
  profile = mkdtempSync(join(tmpdir(), 'crier-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
    viewport: { width: 1280, height: 900 },
  });
  // Nothing leaves this machine: every request but the console's is aborted.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(BASE + '/') || url === BASE) return route.continue();
    return route.abort();
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('request', (r) => requests.push(r.url()));
  page.on('dialog', (d) => d.accept());
  page.setDefaultTimeout(15000);
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

afterEach(async (t) => {
  const name = t.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  const failed = errors.length > 0;
  if (failed || t.passed === false) {
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true }).catch(() => {});
  }
  const seen = errors;
  errors = [];
  assert.deepEqual(seen, [], 'no console errors on any page');
});

/** A screenshot for the README, when asked for. */
async function docShot(name) {
  if (DOCS) await page.screenshot({ path: join(DOCS, `console-${name}.png`), fullPage: false });
}

/** Runs `body`, and on failure keeps a screenshot named after the test. */
function screen(name, body) {
  test(name, async () => {
    try {
      await body();
    } catch (e) {
      await page.screenshot({ path: join(SHOTS, `${name.replace(/[^a-z0-9]+/gi, '-')}.png`), fullPage: true }).catch(() => {});
      throw e;
    }
  });
}

async function mockAccepted() {
  const r = await fetch(`${MOCK}/accepted`);
  return r.json();
}

screen('sign in', async () => {
  await page.goto(`${BASE}/runs?status=any`);
  assert.match(page.url(), /\/signin\?next=/);
  await page.getByLabel('Token').fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /not the server's token/);
  await page.getByLabel('Token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE}/runs?status=any`);
  await page.getByRole('heading', { name: 'History' }).waitFor();
  const cookies = await context.cookies(BASE);
  const session = cookies.find((c) => c.name === 'crier_session');
  assert.ok(session.httpOnly, 'HttpOnly');
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the cookie is not readable by script');
});

screen('history filters live in the URL', async () => {
  await page.goto(`${BASE}/runs`);
  await page.getByLabel('Status').selectOption('sent');
  await page.getByLabel('Period').selectOption('today');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/status=sent/);
  assert.match(page.url(), /period=today/);
  await page.reload();
  assert.equal(await page.getByLabel('Status').inputValue(), 'sent');
  assert.equal(await page.getByLabel('Period').inputValue(), 'today');
  const statuses = await page.locator('tr[data-run]').evaluateAll((rows) => rows.map((r) => r.dataset.status));
  assert.ok(statuses.length >= 1, 'the quick run is listed');
  assert.ok(statuses.every((s) => s === 'sent'), statuses.join());
  // Another status hides it, and says so.
  await page.getByLabel('Status').selectOption('cancelled');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/status=cancelled/);
  await page.getByText('No runs match.').waitFor();
});

screen('preview a job', async () => {
  await page.goto(`${BASE}/jobs`);
  await page.locator('tr[data-job="slow"] a').first().click();
  await page.waitForURL(`${BASE}/jobs/slow`);
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.locator('#preview-count').waitFor();
  assert.equal(await page.locator('#preview-count').innerText(), String(CUSTOMERS));
  // The recipient named like a script is text, and never ran.
  await page.getByText('<script>window.__xss = 1</script>').first().waitFor();
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  await docShot('job');
});

screen('send as test reaches the mock', async () => {
  await page.goto(`${BASE}/jobs/slow`);
  const before = (await mockAccepted()).length;
  await page.getByLabel('Phone or email').fill('+27821119999');
  await page.getByRole('button', { name: 'Send as test' }).click();
  await page.locator('#test-result').waitFor();
  assert.match(await page.locator('#test-result').innerText(), /Test sent to \+27821119999/);
  const accepted = await mockAccepted();
  assert.equal(accepted.length, before + 1);
  assert.match(accepted.at(-1).to, /27821119999/);
  assert.match(accepted.at(-1).body, /Dear Customer 1, maintenance tonight\./);
});

screen('send with confirmation and watch it reach 100% over SSE', async () => {
  await page.goto(`${BASE}/jobs/slow`);
  await page.locator('#send-link').click();
  await page.waitForURL(`${BASE}/jobs/slow/confirm`);
  assert.equal(await page.locator('#confirm-count').innerText(), String(CUSTOMERS));
  await page.getByText('Customer 2').first().waitFor();
  requests = [];
  await page.locator('#confirm-send').click();
  await page.waitForURL(/\/runs\/[0-9A-Z]{26}$/);
  const id = page.url().split('/').pop();
  const seen = new Set();
  const deadline = Date.now() + 60000;
  let percent = -1;
  while (Date.now() < deadline) {
    percent = Number(await page.locator('#progress').getAttribute('data-percent'));
    seen.add(percent);
    if (percent === 100) break;
    await page.waitForTimeout(150);
  }
  assert.equal(percent, 100, `progress seen: ${[...seen].join(', ')}`);
  assert.ok([...seen].some((p) => p > 0 && p < 100), `live values between 0 and 100: ${[...seen].join(', ')}`);
  assert.ok(requests.some((u) => u.endsWith(`/runs/${id}/events`)), 'the page opened the event stream');
  // SSE carried it: no page reload, and no poll needed within the ~5 s run.
  assert.equal(requests.filter((u) => u.endsWith(`/runs/${id}`)).length, 1, 'one page load');
  await page.locator('#progress[data-status="sent"]').waitFor();
  // The live part is whole: the finished run offers no cancel any more.
  assert.equal(await page.getByRole('button', { name: 'Cancel queued' }).count(), 0);
  assert.equal(await page.locator('.t-sent .count').innerText(), String(CUSTOMERS));
  await page.locator('#breakdown table.breakdown').waitFor();
  await page.getByLabel('Break down by').selectOption('partner');
  await page.locator('#breakdown td', { hasText: 'North' }).waitFor();
  await docShot('run');
});

screen('open a tile to its messages', async () => {
  await page.goto(`${BASE}/runs?status=sent`);
  await page.locator('tr[data-run] a', { hasText: 'slow' }).first().click();
  await page.waitForURL(/\/runs\/[0-9A-Z]{26}$/);
  await page.locator('.t-sent a').click();
  await page.waitForURL(/\/messages\?run=.*state=sent/);
  const states = await page.locator('tr[data-state]').evaluateAll((rows) => rows.map((r) => r.dataset.state));
  assert.equal(states.length, CUSTOMERS);
  assert.ok(states.every((s) => s === 'sent'));
  await docShot('messages');
  await page.locator('tr[data-state] a').first().click();
  await page.getByRole('heading', { name: 'Transitions' }).waitFor();
  assert.match(await page.locator('.facts').innerText(), /bulksms/);
  await docShot('message');
});

screen('cancel a run', async () => {
  await page.goto(`${BASE}/jobs/crawl/confirm`);
  await page.locator('#confirm-send').click();
  await page.waitForURL(/\/runs\/[0-9A-Z]{26}$/);
  // Once messages are planned (a cancel during planning finds none queued).
  await page.waitForFunction(() => Number(document.querySelector('.t-queued .count')?.textContent.replace(/,/g, '')) > 0);
  await page.getByRole('button', { name: 'Cancel queued' }).click();
  await page.locator('#progress[data-status="cancelled"]').waitFor({ timeout: 45000 });
  const cancelled = Number((await page.locator('.t-cancelled .count').innerText()).replace(/,/g, ''));
  assert.ok(cancelled > 0 && cancelled < 100, `cancelled ${cancelled}`);
  // Nothing is queued any more, and the history lists it as cancelled.
  assert.equal(await page.locator('.t-queued .count').innerText(), '0');
});

screen('jobs and dashboard', async () => {
  await page.goto(`${BASE}/jobs`);
  const nightly = page.locator('tr[data-job="nightly"]');
  assert.match(await nightly.innerText(), /Africa\/Johannesburg/);
  assert.equal((await nightly.locator('td').nth(4).innerHTML()).split('<br>').length, 3, 'next three fires');
  await docShot('jobs');
  await page.goto(`${BASE}/`);
  await page.getByRole('heading', { name: /Messages per day/ }).waitFor();
  assert.ok(await page.locator('svg.chart rect').count() > 0);
  await docShot('dashboard');
  await page.goto(`${BASE}/runs`);
  await docShot('history');
  // Phone width: still readable, no page-wide horizontal scroll.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${BASE}/runs`);
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.setViewportSize({ width: 1280, height: 900 });
  assert.ok(wide <= 400, `page is ${wide}px wide on a phone`);
});

screen('recipients search and a recipient page', async () => {
  await page.goto(`${BASE}/recipients`);
  await page.getByLabel('Location').fill('Cape Town');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL(/location=Cape(%20|\+)Town/);
  assert.match(await page.locator('#recipient-count').innerText(), new RegExp(`^${CUSTOMERS} customers`));
  await page.getByRole('link', { name: '2', exact: true }).click();
  await page.getByRole('heading', { name: 'Opt-out' }).waitFor();
  assert.ok(await page.locator('tr[data-state]').count() >= 2, 'the messages sent to customer 2');
});

screen('messages filters and export', async () => {
  await page.goto(`${BASE}/messages?type=test`);
  const rows = await page.locator('tr[data-state]').count();
  assert.equal(rows, 1, 'the one test message');
  const download = page.waitForEvent('download');
  await page.getByRole('link', { name: 'Export CSV' }).click();
  const file = await (await download).path();
  const csv = readFileSync(file, 'utf8').trim().split('\n');
  assert.equal(csv.length, 2, csv.join('\n'));
  assert.match(csv[1], /27821119999/);
});

screen('compose a send, download it as a job file, confirm it', async () => {
  await page.goto(`${BASE}/compose`);
  await page.getByLabel('Job name').fill('composed');
  await page.getByLabel('Location').fill('Cape Town');
  await page.getByLabel('Message', { exact: true }).fill('Hello {{ customer.name }}, composed in the console.');
  await page.locator('#compose-preview').click();
  await page.locator('#preview-count').waitFor();
  assert.equal(await page.locator('#preview-count').innerText(), String(CUSTOMERS));
  await docShot('compose');
  // Download as job file: `crier validate` accepts it as it is.
  const download = page.waitForEvent('download');
  await page.locator('#compose-download').click();
  const file = join(process.env.CRIER_PROJECT, 'composed.yaml');
  await (await download).saveAs(file);
  const text = readFileSync(file, 'utf8');
  assert.match(text, /location: Cape Town/);
  const out = execFileSync(process.env.CRIER_BIN, ['validate', file], {
    cwd: process.env.CRIER_PROJECT, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' },
  });
  assert.match(out, /composed/);
  // A bad filter value is the job parser's error.
  await page.getByLabel('Status').fill('actve');
  await page.locator('#compose-preview').click();
  await page.locator('#invalid').waitFor();
  assert.match(await page.locator('#invalid').innerText(), /recipients\.where\.status/);
  await page.getByLabel('Status').fill('active');
  // Send: the confirmation lists the recipients, then the run opens.
  await page.locator('#compose-send').click();
  await page.locator('#confirm-count').waitFor();
  assert.equal(await page.locator('#confirm-count').innerText(), String(CUSTOMERS));
  await page.locator('#confirm-send').click();
  await page.waitForURL(/\/runs\/[0-9A-Z]{26}$/);
  assert.match(await page.locator('h1').innerText(), /composed/);
  await page.locator('#progress[data-percent="100"]').waitFor({ timeout: 30000 });
});
