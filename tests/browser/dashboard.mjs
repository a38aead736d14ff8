// Issue 22 in a real browser: the dashboard, the batch and mailbox pages and the
// confirmation steps, as an admin who never opens a terminal sees them at 1280×800.
//
// Run by tests/browser.rs, which starts `mailferry admin serve` and passes:
//   MF_URL, MF_SERVER_CERT              the service and its certificate (key pinned)
//   MF_ADMIN, MF_ADMIN_PASSWORD, MF_ADMIN_TOTP
//   MF_MAIL_ROOT      one Maildir per user: amy (with one message over 100KB) and ben;
//                     ghost has none, so its move fails
//   MF_SCREENSHOTS    where to write one PNG per step
//   MF_CHROMIUM       the browser (default /usr/bin/chromium)
//
// The batch is created through the JSON API (the wizard has its own scenario), then
// everything is done on the pages. Every page visited is checked by axe-core (no
// serious or critical violation) and for command-line advice in its text.
// Exits 0 when the whole scenario passed, 1 with a message naming the failed step.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, totp, launch, replaceOneTimePassword, shooter, expect, waitForState, firstPage } from './lib.mjs';
import { checkA11y, checkNoCli } from './a11y.mjs';

const url = env('MF_URL');
const mailRoot = env('MF_MAIL_ROOT');
const shot = shooter(env('MF_SCREENSHOTS'));
const batch = 'summer-2026';
const [amy, ben, ghost] = ['amy', 'ben', 'ghost'].map((u) => `${u}@example.com`);

let page;
let current = 'start';
function phase(name) { current = name; console.log(`== ${name}`); }

// Every page gets the same checks and a screenshot.
async function visit(name) {
  await checkNoCli(page, name);
  await checkA11y(page, name);
  await shot(page, name);
}

// The JSON API, called from the page (the browser trusts the service; node does not).
async function api(method, path, body) {
  return page.evaluate(async ({ method, path, body }) => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const r = await fetch(path, {
      method, credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, { method, path, body });
}

// What Cancel must leave unchanged: the batch's state and the admin audit log.
async function snapshot() {
  const b = await api('GET', `/api/v1/batches/${batch}`);
  const log = await api('GET', '/api/v1/audit/admin');
  return JSON.stringify({
    suspended: b.body.suspended,
    job: b.body.job && [b.body.job.kind, b.body.job.started_at],
    moves: b.body.mailboxes.map((m) => [m.address, m.status.state, m.status.items_approved, m.status.passes]),
    audit: log.body.length,
  });
}

async function runEnded() {
  await page.waitForFunction(async (b) => {
    const r = await fetch(`/api/v1/batches/${b}`, { credentials: 'same-origin' });
    const j = await r.json();
    return !(j.job && j.job.running) && !j.mailboxes.some((m) => m.status.running);
  }, batch, { timeout: 180000, polling: 500 });
}

const profileDir = mkdtempSync(join(tmpdir(), 'mailferry-chromium-'));
let context;
try {
  phase('launch chromium at 1280x800');
  context = await launch(profileDir, env('MF_SERVER_CERT'), { width: 1280, height: 800 });
  const scriptErrors = [];
  page = await firstPage(context, scriptErrors);

  phase('admin logs in');
  await page.goto(`${url}/login`);
  await page.fill('#name', env('MF_ADMIN'));
  await page.fill('#password', env('MF_ADMIN_PASSWORD'));
  await page.fill('#totp', totp(env('MF_ADMIN_TOTP')));
  await Promise.all([page.waitForURL(/\/(dashboard|account\/password)/, { timeout: 30000 }), page.click('#login')]);
  await replaceOneTimePassword(page, url, env('MF_ADMIN_PASSWORD'));
  await visit('dashboard-empty');

  phase('a 3-mailbox batch, one without a source mailbox, made through the API');
  let r = await api('POST', '/api/v1/endpoints', { name: 'files', kind: 'maildir', root: `${mailRoot}/{user}` });
  expect(r.status === 201, `the endpoint, got ${r.status} ${JSON.stringify(r.body)}`);
  r = await api('POST', '/api/v1/batches', {
    name: batch, migration_type: 'file', endpoint: 'files',
    csv: `EmailAddress,UserName,Password\n${amy},amy,\n${ben},ben,\n${ghost},ghost,\n`,
    settings: { large_item_limit: 100000, max_bytes_per_second: '50MB', completion: { mode: 'manual' } },
  });
  expect(r.status === 201, `the batch, got ${r.status} ${JSON.stringify(r.body)}`);
  await page.goto(`${url}/dashboard`);
  await page.waitForSelector(`tr[data-mailbox="${ghost}"][data-state="created"]`);
  const stateCell = await page.locator(`tr[data-mailbox="${amy}"] td`).first().innerText();
  expect(stateCell.trim() === 'Created', `the state cell to say Created once, got ${JSON.stringify(stateCell)}`);
  expect(await page.locator(`#start-${batch}`).count() === 1, 'a Start button');
  expect(await page.locator(`#suspend-${batch}`).count() === 0, 'no Suspend on the dashboard of a batch that never started');
  await visit('dashboard-created');

  phase('batch page: every action, the disabled ones with their reason in text');
  await page.click(`a:has-text("Batch page")`);
  await page.waitForSelector('#totals');
  expect(await page.isDisabled(`#suspend-${batch}`), 'Suspend disabled before the batch started');
  const why = await page.locator(`#why-suspend-${batch}`).innerText();
  expect(why.includes('has not started'), `the reason beside Suspend, got ${JSON.stringify(why)}`);
  expect(await page.isDisabled(`#complete-${batch}`), 'Complete disabled before anything is synced');
  await visit('batch-created');

  phase('Start: amy and ben reach Synced, ghost fails');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click(`#start-${batch}`)]);
  await waitForState(page, ben, 'synced');
  await waitForState(page, amy, 'synced');
  await waitForState(page, ghost, 'failed');
  await runEnded();
  await page.reload();
  await waitForState(page, ghost, 'failed');

  phase('dashboard at 1280x800: no sideways scroll, no control cut off');
  const fit = await page.evaluate(() => {
    const out = { scroll: document.documentElement.scrollWidth, inner: window.innerWidth, cut: [] };
    document.querySelectorAll('#live a, #live button').forEach((el) => {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > window.innerWidth) { out.cut.push(el.textContent.trim()); }
    });
    return out;
  });
  expect(fit.scroll <= fit.inner, `no horizontal scroll at 1280 px, scrollWidth ${fit.scroll} > ${fit.inner}`);
  expect(fit.cut.length === 0, `every control inside the window, cut off: ${JSON.stringify(fit.cut)}`);
  const names = await page.evaluate(() => [...document.querySelectorAll('#live a, #live button')]
    .map((el) => (el.getAttribute('aria-label') || el.textContent).replace(/\s+/g, ' ').trim()));
  const dup = names.filter((n, i) => names.indexOf(n) !== i);
  expect(dup.length === 0, `unique accessible names on the dashboard, repeated: ${JSON.stringify(dup)}`);
  expect(names.includes(`Report for ${ghost}`), `a "Report for ${ghost}" link, got ${JSON.stringify(names)}`);
  await visit('dashboard-synced-and-failed');

  phase('the failed mailbox has a page showing its error');
  await page.getByRole('link', { name: `Report for ${ghost}` }).click();
  await page.waitForSelector('#mailbox-error');
  const err = await page.locator('#mailbox-error').innerText();
  expect(err.includes('not a Maildir'), `the move's error on its page, got ${JSON.stringify(err)}`);
  expect(await page.locator('#no-pass').count() === 1, 'the page to say no pass has ended');
  await visit('mailbox-failed');

  phase('approve skipped: Cancel leaves everything unchanged');
  await page.goto(`${url}/dashboard`);
  await waitForState(page, amy, 'synced');
  expect((await page.locator(`tr[data-mailbox="${amy}"]`).innerText()).includes('1 to approve'), 'amy to have an item to approve');
  await page.getByRole('link', { name: `Approve skipped of ${amy}` }).click();
  await page.waitForSelector('#confirm');
  const facts = await page.locator('#confirm-facts').innerText();
  expect(facts.includes('large-item') && facts.includes('0.2 MB'), `the item to approve named, got ${JSON.stringify(facts)}`);
  await visit('confirm-approve');
  let before = await snapshot();
  await Promise.all([page.waitForURL(/\/ui\/moves\//), page.click('#cancel')]);
  await page.waitForSelector('#skipped');
  expect(await snapshot() === before, 'Cancel to leave batch and audit log unchanged');
  const skipped = await page.locator('#skipped').innerText();
  expect(skipped.includes('0.2 MB') && skipped.includes('2023-11-14'), `size and date of the skipped item, got ${JSON.stringify(skipped)}`);
  expect(skipped.includes('large item size (0.1 MB)'), `the reason in the page's words, got ${JSON.stringify(skipped)}`);
  await visit('mailbox-synced');

  phase('approve skipped: Confirm does it');
  await page.click('#approve');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await page.waitForFunction((m) => {
    const c = document.querySelector(`tr[data-mailbox="${m}"] .skipped`);
    return c && c.textContent.includes('1 approved');
  }, amy, { timeout: 180000 });
  await runEnded();
  await shot(page, 'dashboard-approved');

  phase('complete: Cancel leaves everything unchanged, Confirm runs the cut-over');
  await page.goto(`${url}/dashboard`);
  await page.click(`#complete-${batch}`);
  await page.waitForSelector('#confirm');
  expect((await page.locator('h1').innerText()).includes(`Complete batch ${batch}?`), 'the question named');
  const cfacts = await page.locator('#confirm-facts').innerText();
  expect(cfacts.includes('final delta pass') && cfacts.includes(amy) && cfacts.includes(ben), `what Complete does, got ${JSON.stringify(cfacts)}`);
  await visit('confirm-complete');
  before = await snapshot();
  await Promise.all([page.waitForURL(/\/ui\/batches\//), page.click('#cancel')]);
  expect(await snapshot() === before, 'Cancel to leave batch and audit log unchanged');
  await page.click(`#complete-${batch}`);
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await waitForState(page, amy, 'completed');
  await waitForState(page, ben, 'completed');
  await runEnded();
  // The banner goes with its news: the next live update drops it.
  await page.waitForFunction(() => !document.getElementById('flash'), null, { timeout: 30000 });
  await page.waitForFunction(() => Number(document.getElementById('live').getAttribute('data-updates') || 0) >= 2, null, { timeout: 30000 });
  const announced = await page.locator('#live-announce').innerText();
  expect(!announced.includes('updated'), `the live region to announce state changes only, got ${JSON.stringify(announced)}`);
  await visit('dashboard-completed');

  phase('suspend: Cancel leaves it running, Confirm suspends, Resume resumes');
  await page.click(`#suspend-${batch}`);
  await page.waitForSelector('#confirm');
  await visit('confirm-suspend');
  before = await snapshot();
  await Promise.all([page.waitForURL(/\/ui\/batches\//), page.click('#cancel')]);
  expect(await snapshot() === before, 'Cancel to leave batch and audit log unchanged');
  await page.click(`#suspend-${batch}`);
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  r = await api('GET', `/api/v1/batches/${batch}`);
  expect(r.body.suspended === true, 'the batch suspended after Confirm');
  await page.click(`#resume-${batch}`);
  await page.waitForURL(/\/dashboard/);
  r = await api('GET', `/api/v1/batches/${batch}`);
  expect(r.body.suspended === false, 'the batch resumed');

  phase('the completed mailbox: plot with average and throttle, audit verified');
  await page.getByRole('link', { name: `Report for ${amy}` }).click();
  await page.waitForSelector('#throughput svg.plot');
  expect(await page.locator('#throughput svg .average').count() === 1, 'the average line');
  expect((await page.locator('#throughput svg').textContent()).includes('throttle 50.0 MB/s'), 'the throttle named');
  await page.locator('#audit').waitFor();
  expect((await page.locator('#audit').innerText()).includes('verified'), 'both audit sides verified');
  await visit('mailbox-completed');

  phase('batch page: per-state counts and the report as CSV and HTML');
  await page.goto(`${url}/ui/batches/${batch}`);
  const perState = await page.locator('#per-state').innerText();
  expect(perState.includes('Completed 2') && perState.includes('Failed 1'), `counts per state, got ${JSON.stringify(perState)}`);
  const ghostLine = await page.locator(`#batch-report tr:has-text("${ghost}")`).innerText();
  expect(ghostLine.includes('not a Maildir'), `ghost's error kept after suspend and resume, got ${JSON.stringify(ghostLine)}`);
  const files = await page.evaluate(async () => {
    const get = async (id) => {
      const r = await fetch(document.getElementById(id).getAttribute('href'));
      return { status: r.status, type: r.headers.get('content-type'), disposition: r.headers.get('content-disposition') || '', text: await r.text() };
    };
    return { csv: await get('report-csv'), html: await get('report-html') };
  });
  expect(files.csv.status === 200 && files.csv.type.startsWith('text/csv'), `the CSV, got ${files.csv.status} ${files.csv.type}`);
  const rows = files.csv.text.trim().split('\r\n');
  expect(rows.length === 4 && rows[0].startsWith('mailbox,'), `a header and 3 rows, got ${JSON.stringify(rows)}`);
  expect(rows.some((l) => l.startsWith(`${ghost},ghost,Failed`)), `ghost's line, got ${JSON.stringify(rows)}`);
  expect(files.html.disposition.startsWith('attachment') && files.html.text.includes(`Batch ${batch}`), 'the HTML report as a download');
  await visit('batch-completed');

  expect(scriptErrors.length === 0, `no script errors in the pages, got ${JSON.stringify(scriptErrors)}`);
  console.log(`dashboard scenario passed; ${shot.count()} screenshots`);
} catch (e) {
  console.error(`dashboard scenario FAILED at "${current}": ${e && e.stack ? e.stack : e}`);
  if (page) {
    try { await shot(page, 'failure'); } catch (_) { /* the page may be gone */ }
    try { console.error(`page: ${page.url()}\n${(await page.content()).slice(0, 4000)}`); } catch (_) { /* idem */ }
  }
  process.exitCode = 1;
} finally {
  if (context) { await context.close().catch(() => {}); }
  rmSync(profileDir, { recursive: true, force: true });
}
