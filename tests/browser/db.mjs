// Issue 20 in a real browser: the dashboard of `admin serve --db`, whose batches are
// rows in PostgreSQL and whose passes a `mailferry worker` runs (tests/browser.rs starts
// both). The pages must look and act as without --db.
//
// Run by tests/browser.rs, which passes:
//   MF_URL, MF_SERVER_CERT              the service and its certificate (key pinned)
//   MF_ADMIN, MF_ADMIN_PASSWORD, MF_ADMIN_TOTP
//   MF_MAIL_ROOT      one Maildir per user: amy and ben
//   MF_SCREENSHOTS    where to write one PNG per step
//   MF_CHROMIUM       the browser (default /usr/bin/chromium)
//
// The batch is created through the JSON API; Start, Suspend, Resume and Complete are
// clicked on the pages. Every page visited is checked by axe-core and for command-line
// advice in its text. Exits 0 when the whole scenario passed, 1 naming the failed step.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, totp, launch, replaceOneTimePassword, shooter, expect, waitForState, firstPage } from './lib.mjs';
import { checkA11y, checkNoCli } from './a11y.mjs';

const url = env('MF_URL');
const mailRoot = env('MF_MAIL_ROOT');
const shot = shooter(env('MF_SCREENSHOTS'));
const batch = 'db-wave';
const [amy, ben] = ['amy', 'ben'].map((u) => `${u}@example.com`);

let page;
let current = 'start';
function phase(name) { current = name; console.log(`== ${name}`); }

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

// No mailbox of the batch is leased or queued: the workers are done with it.
async function passesEnded() {
  await page.waitForFunction(async (b) => {
    const r = await fetch(`/api/v1/batches/${b}`, { credentials: 'same-origin' });
    const j = await r.json();
    return !j.mailboxes.some((m) => m.status.running);
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
  await visit('db-dashboard-empty');

  phase('a 2-mailbox batch recorded in the database through the API');
  let r = await api('POST', '/api/v1/endpoints', { name: 'files', kind: 'maildir', root: `${mailRoot}/{user}` });
  expect(r.status === 201, `the endpoint, got ${r.status} ${JSON.stringify(r.body)}`);
  r = await api('POST', '/api/v1/batches', {
    name: batch, migration_type: 'file', endpoint: 'files',
    csv: `EmailAddress,UserName,Password\n${amy},amy,\n${ben},ben,\n`,
    settings: { start: { when: 'manual' }, completion: { mode: 'manual' } },
  });
  expect(r.status === 201, `the batch, got ${r.status} ${JSON.stringify(r.body)}`);
  expect(r.body.job === null, `no run of the service's own against the database, got ${JSON.stringify(r.body.job)}`);
  await page.goto(`${url}/dashboard`);
  await page.waitForSelector(`tr[data-mailbox="${ben}"][data-state="created"]`);
  expect(await page.locator(`#start-${batch}`).count() === 1, 'a Start button');
  await visit('db-dashboard-created');

  phase('Start queues; the worker brings both to Synced');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click(`#start-${batch}`)]);
  await waitForState(page, amy, 'synced');
  await waitForState(page, ben, 'synced');
  await passesEnded();
  await visit('db-dashboard-synced');

  phase('Suspend (confirmed) and Resume change the batch in the database');
  await page.goto(`${url}/ui/batches/${batch}`);
  await page.click(`#suspend-${batch}`);
  await page.waitForSelector('#confirm');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await waitForState(page, amy, 'suspended');
  r = await api('GET', `/api/v1/batches/${batch}`);
  expect(r.body.suspended === true, 'the batch suspended after Confirm');
  await visit('db-dashboard-suspended');
  await page.click(`#resume-${batch}`);
  await page.waitForURL(/\/dashboard/);
  await waitForState(page, amy, 'synced');
  r = await api('GET', `/api/v1/batches/${batch}`);
  expect(r.body.suspended === false, 'the batch resumed');

  phase('Complete (confirmed): the worker runs the final passes');
  await page.click(`#complete-${batch}`);
  await page.waitForSelector('#confirm');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await waitForState(page, amy, 'completed');
  await waitForState(page, ben, 'completed');
  await passesEnded();
  await visit('db-dashboard-completed');

  phase('the mailbox page reads its passes and its audit log from the rows');
  await page.getByRole('link', { name: `Report for ${amy}` }).click();
  await page.locator('#audit').waitFor();
  const audit = await page.locator('#audit').innerText();
  expect(audit.includes('hash chain intact'), `the source log verified from the rows, got ${JSON.stringify(audit)}`);
  const main = await page.locator('main').innerText();
  expect(main.includes('Completed'), 'the mailbox Completed on its page');
  await visit('db-mailbox-completed');

  phase('batch page: per-state counts');
  await page.goto(`${url}/ui/batches/${batch}`);
  const perState = await page.locator('#per-state').innerText();
  expect(perState.includes('Completed 2'), `counts per state, got ${JSON.stringify(perState)}`);
  await visit('db-batch-completed');

  expect(scriptErrors.length === 0, `no script errors in the pages, got ${JSON.stringify(scriptErrors)}`);
  console.log(`db scenario passed; ${shot.count()} screenshots`);
} catch (e) {
  console.error(`db scenario FAILED at "${current}": ${e && e.stack ? e.stack : e}`);
  if (page) {
    try { await shot(page, 'failure'); } catch (_) { /* the page may be gone */ }
    try { console.error(`page: ${page.url()}\n${(await page.content()).slice(0, 4000)}`); } catch (_) { /* idem */ }
  }
  process.exitCode = 1;
} finally {
  if (context) { await context.close().catch(() => {}); }
  rmSync(profileDir, { recursive: true, force: true });
}
