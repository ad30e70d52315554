// The console's browser test: headless Chromium (Debian's) through
// playwright-core, against a running `pipeline serve --admin-addr`.
//
//   ADMIN_URL=http://127.0.0.1:PORT/ ADMIN_TOKEN=... SCREENSHOT_DIR=.cache/ui node e2e/ui/console.mjs
//
// Optional: PIPELINE (churn), SINK (crm), DEAD_ID (the webhook-id of the
// dead delivery to replay; else the first dead one), EXPECT_NODES (graph
// node ids, comma-separated), EXPECT_CODE (a status code the dead
// delivery's attempts show). e2e/console_test.go sets them all.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const ADMIN_URL = env.ADMIN_URL;
const TOKEN = env.ADMIN_TOKEN;
const SHOTS = resolve(env.SCREENSHOT_DIR || '.cache/ui');
const PIPELINE = env.PIPELINE || 'churn';
const SINK = env.SINK || 'crm';
const DEAD_ID = env.DEAD_ID || '';
const EXPECT_NODES = (env.EXPECT_NODES || '').split(',').filter(Boolean);
const EXPECT_CODE = env.EXPECT_CODE || '';

if (!ADMIN_URL || !TOKEN) {
  console.error('console.mjs: set ADMIN_URL (the console, e.g. http://127.0.0.1:8080/) and ADMIN_TOKEN');
  process.exit(2);
}
mkdirSync(SHOTS, { recursive: true });

const sel = (testid, attrs = {}) => `[data-testid="${testid}"]` + Object.entries(attrs).map(([k, v]) => `[data-${k}="${v}"]`).join('');
const log = [];
let page;
let browser;
let shot = 0;
let current = '';

async function screenshot(name) {
  const file = join(SHOTS, `${String(++shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`  screenshot ${file}`);
}

// until polls fn until it returns something truthy, or fails with what.
async function until(what, fn, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000}s waiting for ${what}${last ? ` (${last.message.split('\n')[0]})` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
}

async function fail(e) {
  console.error(`FAIL ${current}: ${e?.message || e}`);
  if (page) {
    console.error(`     at ${page.url()}`);
    try { await screenshot('failed'); } catch { /* the page is gone */ }
  }
  if (log.length) console.error('     browser log (last 20):\n       ' + log.slice(-20).join('\n       '));
  await browser?.close().catch(() => {});
  process.exit(1);
}

// A hung browser must not hang the test.
setTimeout(() => fail(new Error('the whole test took over 4 minutes')), 240000).unref();

try {
  await step('launch chromium', async () => {
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--no-first-run', '--disable-sync', '--disable-quic'],
    });
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log.push(`console.${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => log.push(`uncaught: ${e.message}`));
    page.on('requestfailed', (r) => { if (!/aborted/i.test(r.failure()?.errorText || '')) log.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`); });
    page.on('response', (r) => { if (r.status() >= 400) log.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
  });

  await step('open the console: it asks for the token', async () => {
    await page.goto(ADMIN_URL);
    await page.locator(sel('token-form')).waitFor();
    await screenshot('token');
  });

  await step('a wrong token is refused and asked again', async () => {
    await page.fill(sel('token-input'), 'not-the-token');
    await page.click(sel('token-submit'));
    await page.locator(sel('token-message')).waitFor();
    const msg = await page.textContent(sel('token-message'));
    if (!/refused/i.test(msg)) throw new Error(`the token form says ${JSON.stringify(msg)}, want a refusal`);
    await screenshot('token-refused');
  });

  await step('enter the token', async () => {
    await page.fill(sel('token-input'), TOKEN);
    await page.click(sel('token-submit'));
    await page.locator(sel('token-form')).waitFor({ state: 'detached' });
  });

  await step(`see pipeline ${PIPELINE} in the list`, async () => {
    const row = page.locator(sel('pipeline-row', { name: PIPELINE }));
    await row.waitFor({ timeout: 30000 });
    const state = await row.locator(sel('pipeline-state')).textContent();
    if (!['running', 'idle', 'failed', 'paused'].includes(state)) throw new Error(`state badge says ${JSON.stringify(state)}`);
    await row.locator(sel('pipeline-sink', { name: SINK })).waitFor();
    // Two samples (one refresh, 3 s) draw the sparkline.
    await row.locator(`${sel('sparkline')} polyline`).waitFor({ timeout: 10000 });
    await screenshot('pipelines');
  });

  await step(`open ${PIPELINE}: its graph has a source, a filter and a sink`, async () => {
    await page.locator(sel('pipeline-row', { name: PIPELINE })).locator(sel('pipeline-link')).click();
    await page.locator(sel('graph')).waitFor();
    for (const kind of ['source', 'filter', 'sink']) {
      await until(`a ${kind} box`, async () => (await page.locator(sel('graph-node', { kind })).count()) > 0, 5000);
    }
    for (const id of EXPECT_NODES) {
      if (!(await page.locator(sel('graph-node', { id })).count())) throw new Error(`no box for node ${id}`);
    }
    const nodes = await page.locator(sel('graph-node')).count();
    const edges = await page.locator(sel('graph-edge')).count();
    if (edges < nodes - 1) throw new Error(`${nodes} boxes but ${edges} arrows`);
    // Sources left of filters left of sinks.
    const x = async (kind) => (await page.locator(sel('graph-node', { kind })).first().boundingBox()).x;
    const [xs, xf, xk] = [await x('source'), await x('filter'), await x('sink')];
    if (!(xs < xf && xf < xk)) throw new Error(`boxes not layered left to right: source x=${xs}, filter x=${xf}, sink x=${xk}`);
    await page.locator(sel('sink', { name: SINK })).waitFor();
    await screenshot('pipeline');
  });

  let key;
  await step('go to deliveries and filter status dead', async () => {
    await page.click(sel('nav-deliveries'));
    await page.locator(sel('deliveries-filters')).waitFor();
    await page.selectOption(sel('filter-status'), 'dead');
    await page.click(sel('filter-apply'));
    await until('the URL to carry the filter', async () => page.url().includes('status=dead'), 5000);
    const row = page.locator(DEAD_ID ? sel('delivery-row', { status: 'dead', id: DEAD_ID }) : sel('delivery-row', { status: 'dead' })).first();
    await row.waitFor({ timeout: 20000 });
    const others = await page.locator(`${sel('delivery-row')}:not([data-status="dead"])`).count();
    if (others) throw new Error(`${others} rows that are not dead under status=dead`);
    key = await row.getAttribute('data-key');
    await screenshot('deliveries-dead');
  });

  const row = () => page.locator(`${sel('delivery-row')}[data-key="${key.replace(/["\\]/g, '\\$&')}"]`);
  await step('open the dead delivery: its attempts', async () => {
    await row().locator(sel('delivery-id')).click();
    const detail = page.locator(sel('delivery-detail')).first();
    await detail.waitFor();
    await until('the attempts', async () => (await detail.locator(sel('attempt-row')).count()) > 0, 10000);
    if (EXPECT_CODE) {
      const t = await detail.textContent();
      if (!t.includes(EXPECT_CODE)) throw new Error(`the attempts do not show ${EXPECT_CODE}: ${t.slice(0, 300)}`);
    }
    await screenshot('delivery-attempts');
  });

  await step('replay it: it becomes delivered', async () => {
    await row().locator(sel('delivery-replay')).click();
    await until('the delivery to be delivered', async () => (await row().getAttribute('data-status')) === 'delivered', 30000);
    await page.locator(sel('deliveries-message')).waitFor();
    await screenshot('delivery-replayed');
  });

  await step('the delivered filter lists it', async () => {
    await page.selectOption(sel('filter-status'), 'delivered');
    await page.click(sel('filter-apply'));
    await row().waitFor();
    if ((await row().getAttribute('data-status')) !== 'delivered') throw new Error('listed, but not as delivered');
  });

  await step(`pause sink ${SINK} on the pipeline page`, async () => {
    await page.goto(new URL(`#/pipelines/${encodeURIComponent(PIPELINE)}`, ADMIN_URL).href);
    const sink = page.locator(sel('sink', { name: SINK }));
    await sink.waitFor();
    const before = await sink.locator(sel('sink-paused')).textContent();
    if (before !== 'active') throw new Error(`the sink shows ${JSON.stringify(before)} before the pause, want active`);
    await sink.locator(sel('sink-pause')).click();
    await until('the sink to show paused', async () => (await page.locator(sel('sink', { name: SINK })).locator(sel('sink-paused')).textContent()) === 'paused', 10000);
    await screenshot('sink-paused');
  });

  await step('the pipelines list shows it paused', async () => {
    await page.click(sel('nav-pipelines'));
    await page.locator(sel('pipeline-row', { name: PIPELINE })).locator(sel('pipeline-sink', { name: SINK })).locator(sel('sink-paused')).waitFor();
  });

  await step(`resume sink ${SINK} from the deliveries page`, async () => {
    await page.goto(new URL(`#/deliveries?pipeline=${encodeURIComponent(PIPELINE)}&sink=${encodeURIComponent(SINK)}`, ADMIN_URL).href);
    const control = page.locator(sel('sink-control'));
    await until('the sink control to show paused', async () => (await control.locator(sel('sink-paused')).textContent()) === 'paused', 10000);
    await control.locator(sel('sink-resume')).click();
    await until('the sink control to show active', async () => (await page.locator(sel('sink-control')).locator(sel('sink-paused')).textContent()) === 'active', 10000);
    await screenshot('sink-resumed');
  });

  current = 'no uncaught errors or refused resources (CSP) in the page';
  const bad = log.filter((l) => l.startsWith('uncaught') || /Content Security Policy|Refused to/i.test(l));
  if (bad.length) throw new Error(bad.join('; '));
  await browser.close();
  console.log(`console test passed; screenshots in ${SHOTS}`);
} catch (e) {
  await fail(e);
}
