// Issue 21, the lockbox in a real browser: an admin requests access to a mailbox, an
// approver of its domain (a second account, with a fresh authenticator code) approves
// it, the admin downloads the mailbox during the grant and is refused after it
// expires; the admin cannot approve its own request; every step shows on the admin
// audit page and in the mailbox's lockbox history. Run by tests/browser.rs after
// wizard.mjs and issue22.mjs, against the same service (wizard.mjs's batch moved the
// mailbox into the volume). The Rust side then reads the volume's audit log.
//
//   MF_URL, MF_SERVER_CERT, MF_CHROMIUM      as for wizard.mjs
//   MF_ADMIN, MF_ADMIN_PASSWORD, MF_ADMIN_TOTP           the requester (an admin, one-time password)
//   MF_APPROVER, MF_APPROVER_PASSWORD, MF_APPROVER_TOTP  an approver of the mailbox's domain (one-time password)
//   MF_MAILBOX, MF_BATCH     the mailbox and the batch that moved it
//   MF_MARKER                a text the mailbox's messages hold (found in the download)
//   MF_GRANT                 the grant's length, e.g. 20s (the scenario waits it out)
//   MF_TENANT_KEY            optional: the tenant key file the approver uploads
//   MF_SCREENSHOTS           where to write one PNG per step
//
// Two browser profiles, one per person. Every page is checked with axe and for
// command-line advice. Exits 0 when the whole scenario passed, 1 naming the failed step.
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, launch, totp, shooter, expect, firstPage, replaceOneTimePassword } from './lib.mjs';
import { checkA11y, checkNoCli } from './a11y.mjs';

const url = env('MF_URL');
const mailbox = env('MF_MAILBOX');
const batch = env('MF_BATCH');
const marker = env('MF_MARKER');
const grant = env('MF_GRANT');
const grantSeconds = parseInt(grant, 10);
const tenantKey = process.env.MF_TENANT_KEY || '';
const shot = shooter(env('MF_SCREENSHOTS'));
const people = {
  requester: { name: env('MF_ADMIN'), password: env('MF_ADMIN_PASSWORD'), secret: env('MF_ADMIN_TOTP') },
  approver: { name: env('MF_APPROVER'), password: env('MF_APPROVER_PASSWORD'), secret: env('MF_APPROVER_TOTP') },
};

let current = 'start';
function phase(name) { current = name; console.log(`== ${name}`); }

// A code the server accepts once: a step after the account's last, at most one ahead of
// the clock (see issue22.mjs).
const lastStep = new Map();
async function freshCode(who) {
  for (;;) {
    const now = Math.floor(Date.now() / 30000);
    const next = Math.max(now, (lastStep.get(who.name) ?? -Infinity) + 1);
    if (next <= now + 1) {
      lastStep.set(who.name, next);
      return totp(who.secret, next * 30000 + 15000);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function check(page, name) {
  await checkA11y(page, page.url());
  await checkNoCli(page, page.url());
  await shot(page, name);
}

async function textOf(page, selector) {
  const el = page.locator(selector).first();
  await el.waitFor();
  return el.innerText();
}

async function login(page, who) {
  await page.goto(`${url}/login`);
  await page.fill('#name', who.name);
  await page.fill('#password', who.password);
  await page.fill('#totp', await freshCode(who));
  await Promise.all([page.waitForLoadState('load'), page.click('#login')]);
  await page.waitForLoadState('load');
  await replaceOneTimePassword(page, url, who.password);
  expect(page.url().endsWith('/dashboard'), `${who.name} to be logged in, at ${page.url()}`);
}

// A JSON API call with the page's session (and its CSRF token for a POST).
async function api(page, method, path, body) {
  return page.evaluate(async ([method, path, body]) => {
    const s = await (await fetch('/api/v1/session')).json();
    const r = await fetch(path, {
      method,
      headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, body: await r.text() };
  }, [method, path, body]);
}

const dirs = [];
const contexts = [];
const errors = [];
async function browser() {
  const dir = mkdtempSync(join(tmpdir(), 'mf-lockbox-'));
  dirs.push(dir);
  const context = await launch(dir, env('MF_SERVER_CERT'), { width: 1280, height: 800 });
  context.setDefaultTimeout(30000);
  contexts.push(context);
  return firstPage(context, errors);
}

try {
  phase('the requester asks for access');
  const req = await browser();
  await login(req, people.requester);
  await req.click('nav[aria-label="Main"] >> text=Mailbox access');
  await req.waitForURL(/\/access$/);
  await check(req, 'access-page');
  await req.fill('#mailbox', mailbox);
  await req.fill('#reason', 'ticket 4711: the user asks us to find a lost message');
  await req.fill('#duration', grant);
  await Promise.all([req.waitForURL(/\/access\/[0-9a-f]+\?done=requested/), req.click('#request')]);
  const id = new URL(req.url()).pathname.split('/').pop();
  console.log(`request ${id}`);
  expect((await textOf(req, '#access-state')).includes('Waiting'), 'the request to wait for approval');
  expect(await req.locator('#approve').count() === 0, 'no Approve for the requester');
  expect(await req.locator('button[aria-describedby="export-why"]').isDisabled(), 'the download disabled before the approval');
  await check(req, 'request-pending');

  phase('the requester cannot approve its own request');
  await req.goto(`${url}/access/${id}/approve`);
  expect((await textOf(req, 'main')).includes('other than the one who asked'), 'the approval page refused to the requester');
  await check(req, 'own-approval-refused');
  const own = await api(req, 'POST', `/api/v1/access/${id}/approve`, { totp: await freshCode(people.requester) });
  expect(own.status === 403 && own.body.includes('cannot decide'), `the API to refuse the requester's own approval, got ${own.status} ${own.body}`);
  const early = await api(req, 'POST', `/api/v1/access/${id}/export`);
  expect(early.status === 409, `an export before the approval to be refused, got ${early.status} ${early.body}`);

  phase('the approver approves with a fresh code');
  const appr = await browser();
  await login(appr, people.approver);
  await appr.goto(`${url}/access`);
  await appr.waitForSelector(`tr[data-id="${id}"][data-state="pending"]`);
  expect(await appr.locator('#request-form').count() === 0, 'no request form for an approver');
  await appr.click(`tr[data-id="${id}"] a`);
  await appr.waitForURL(new RegExp(`/access/${id}$`));
  expect(await appr.locator('#export').count() === 0, 'no download for the approver');
  await check(appr, 'approver-sees-request');
  await Promise.all([appr.waitForURL(/\/approve$/), appr.click('#approve')]);
  expect((await textOf(appr, '#confirm-facts')).includes('ticket 4711'), 'the confirmation to show the reason');
  // A wrong code is refused and the form comes back with the reason.
  // Not a code of any step the server could accept during this check.
  const step = Math.floor(Date.now() / 30000);
  const near = [-1, 0, 1, 2].map((d) => totp(people.approver.secret, (step + d) * 30000 + 15000));
  await appr.fill('#totp', ['000000', '111111', '222222', '333333', '444444'].find((c) => !near.includes(c)));
  if (tenantKey) { await appr.setInputFiles('#tenant_key', tenantKey); }
  const invalid = await appr.evaluate(() => [...document.querySelector('#decide-form').elements]
    .filter((e) => e.willValidate && !e.checkValidity()).map((e) => `${e.name}: ${e.validationMessage}`));
  expect(invalid.length === 0, `the approval form to be complete, but ${invalid.join('; ')}`);
  await Promise.all([appr.waitForNavigation(), appr.click('#confirm')]);
  expect((await textOf(appr, '#decide-error')).includes('code'), 'a wrong code to be refused');
  await check(appr, 'approval-wrong-code');
  // Made now, not before the checks above: a code is good for 30 to 60 s.
  await appr.fill('#totp', await freshCode(people.approver));
  if (tenantKey) {
    expect(await appr.locator('#tenant_key').count() === 1, 'the tenant key upload on a customer-key tenant');
    await appr.setInputFiles('#tenant_key', tenantKey);
  }
  await check(appr, 'approval-confirmation');
  await Promise.all([appr.waitForURL(/\?done=approved/), appr.click('#confirm')]);
  const approvedAt = Date.now();
  expect((await textOf(appr, '#access-state')).includes('Granted'), 'the request to be granted');
  await check(appr, 'approved');

  phase('the requester downloads the mailbox during the grant');
  await req.goto(`${url}/access/${id}`);
  await check(req, 'granted');
  const [download] = await Promise.all([req.waitForEvent('download'), req.click('#export')]);
  const file = join(dirs[0], 'export.tar');
  await download.saveAs(file);
  const tar = readFileSync(file);
  expect(Date.now() - approvedAt < grantSeconds * 1000, `the download to finish within the grant (${grant}); make MF_GRANT longer`);
  expect(tar.length > 1024 && tar.subarray(257, 262).toString() === 'ustar', 'a tar archive');
  expect(tar.includes(Buffer.from(`${mailbox}/cur/`)) && tar.includes(Buffer.from(marker)), 'the mailbox\'s messages in the download');
  console.log(`downloaded ${tar.length} bytes`);
  await req.goto(`${url}/access/${id}`);
  expect((await textOf(req, '#uses')).includes('export'), 'the download listed as a use');

  phase('after the expiry the download is refused');
  const left = approvedAt + grantSeconds * 1000 + 2000 - Date.now();
  if (left > 0) { await new Promise((r) => setTimeout(r, left)); }
  await req.goto(`${url}/access/${id}`);
  expect((await textOf(req, '#access-state')).includes('Expired'), 'the grant to be expired');
  expect(await req.locator('#export').count() === 0, 'no download after the expiry');
  expect((await textOf(req, '#export-why')).includes('expired'), 'the reason the download is disabled');
  await check(req, 'expired');
  const late = await api(req, 'POST', `/api/v1/access/${id}/export`);
  expect(late.status === 409 && late.body.includes('expired'), `an export after the expiry to be refused, got ${late.status} ${late.body}`);

  phase('every step is on the audit page and in the mailbox\'s history');
  await appr.goto(`${url}/audit`);
  const log = await textOf(appr, 'main');
  for (const e of ['admin.access.requested', 'admin.access.approved', 'admin.access.used', 'admin.access.expired', 'admin.access.refused']) {
    expect(log.includes(e), `${e} on the audit page`);
  }
  await check(appr, 'audit-page');
  await req.goto(`${url}/ui/moves/${batch}/${mailbox}`);
  await req.waitForSelector(`#lockbox tr[data-id="${id}"][data-state="expired"]`);
  await check(req, 'mailbox-history');
  console.log(`LOCKBOX_ID=${id}`);
  if (errors.length) { throw new Error(`script errors on the pages: ${errors.join(' | ')}`); }
  console.log(`lockbox scenario passed (${shot.count()} screenshots)`);
} catch (e) {
  console.error(`lockbox scenario failed at "${current}": ${e.stack || e}`);
  // What each person's page showed, for the log.
  for (const c of contexts) {
    for (const p of c.pages()) {
      const text = await p.evaluate(() => document.body.innerText).catch(() => '(unreadable)');
      console.error(`-- ${p.url()}:\n${text.slice(0, 1500)}`);
      await shot(p, 'failure').catch(() => {});
    }
  }
  process.exitCode = 1;
} finally {
  for (const c of contexts) { await c.close().catch(() => {}); }
  for (const d of dirs) { rmSync(d, { recursive: true, force: true }); }
}
