// Issue 22 in a real browser: the first-login password change, the account page's
// authenticator re-enrolment, the auditor's audit page, and the wizard saving nothing
// before its last step. Run by tests/browser.rs after wizard.mjs, against the same
// service (the batch wizard.mjs made is there, completed).
//
//   MF_URL, MF_SERVER_CERT, MF_CHROMIUM     as for wizard.mjs
//   MF_ADMIN, MF_ADMIN_PASSWORD, MF_ADMIN_TOTP        a new admin (one-time password)
//   MF_AUDITOR, MF_AUDITOR_PASSWORD, MF_AUDITOR_TOTP  a new auditor (one-time password)
//   MF_MAIL_ROOT, MF_USER   the Maildir root and the user of wizard.mjs's batch
//   MF_BATCH                that batch's name
//   MF_VOLUME               the service's volume directory (the review must name it)
//   MF_SCREENSHOTS          where to write one PNG per step (1280x800, full page)
//
// Every page visited is checked for command-line advice in its text (`--flag`, or a
// command in backticks). Exits 0 when the whole scenario passed, 1 with a message
// naming the failed step.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, launch, totp, firstPage } from './lib.mjs';
import { checkA11y } from './a11y.mjs';

const url = env('MF_URL');
const shots = env('MF_SCREENSHOTS');
const mailRoot = env('MF_MAIL_ROOT');
const user = env('MF_USER');
const address = `${user}@example.com`;
const batch = env('MF_BATCH');
const volume = env('MF_VOLUME');
mkdirSync(shots, { recursive: true });

let step = 0;
let current = 'start';
let page;
const visited = new Set();

function expect(cond, what) {
  if (!cond) { throw new Error(`expected ${what}`); }
}
function phase(name) { current = name; console.log(`== ${name}`); }

// No advice for the command line: no `--flag`, no `command` in backticks, in what the
// page shows (its rendered text, not its markup).
async function checkWords() {
  const text = await page.evaluate(() => document.body.innerText);
  const flag = text.match(/(^|[^\w-])--[a-z][\w-]*/);
  expect(!flag, `no command-line flag on ${page.url()}, found ${JSON.stringify(flag && flag[0])}`);
  const tick = text.match(/`[^`\n]+`/);
  expect(!tick, `no backticked command on ${page.url()}, found ${JSON.stringify(tick && tick[0])}`);
  visited.add(new URL(page.url()).pathname);
  await checkA11y(page, page.url());
}

async function shot(name) {
  step += 1;
  const file = join(shots, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  await checkWords();
  console.log(`screenshot ${file}`);
}

async function textOf(selector) {
  const el = page.locator(selector);
  await el.first().waitFor({ timeout: 30000 });
  return el.first().innerText();
}
async function expectText(selector, text) {
  const got = await textOf(selector);
  expect(got.includes(text), `${selector} to contain ${JSON.stringify(text)}, got ${JSON.stringify(got)}`);
}

// === TOTP steps ===
// Every code works once per account (the server keeps the last step it accepted, across
// authenticator entries), and it accepts the steps next to the current one. A code that
// the server will accept is one of a step after the last one used, at most one ahead of
// the clock; wait for the clock when there is none. Never the step before the clock's:
// that one may run out between making the code and the server reading it (a page load
// and an accessibility check come between), while the clock's step and the next stay
// good for at least 30 s.
const lastStep = new Map();
async function freshCode(account, secret) {
  for (;;) {
    const now = Math.floor(Date.now() / 30000);
    const next = Math.max(now, (lastStep.get(account) ?? -Infinity) + 1);
    if (next <= now + 1) {
      lastStep.set(account, next);
      return totp(secret, next * 30000 + 15000);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
// A code for a login the server must refuse before it looks at the code (a wrong
// password) or because it is not the account's secret: it uses up no step.
function spareCode(secret) {
  return totp(secret, Date.now());
}

async function submitLogin(name, password, code) {
  await page.goto(`${url}/login`);
  await checkWords();
  await page.fill('#name', name);
  await page.fill('#password', password);
  await page.fill('#totp', code);
  await Promise.all([page.waitForLoadState('load'), page.click('#login')]);
  await page.waitForLoadState('load');
}

async function logout() {
  await Promise.all([page.waitForURL(/\/login/), page.click('#logout')]);
}

// The endpoints the service has, read through the API as the page's own session.
async function endpointNames() {
  return page.evaluate(async () => {
    const r = await fetch('/api/v1/endpoints');
    if (!r.ok) { throw new Error(`GET /api/v1/endpoints: ${r.status}`); }
    return (await r.json()).map((e) => e.name).sort();
  });
}

// The first login of an account with a one-time password: nothing but the change opens.
async function firstLogin(name, oneTime, secret, newPassword, checks) {
  await submitLogin(name, oneTime, await freshCode(name, secret));
  expect(page.url().endsWith('/account/password'), `${name}'s first login to land on the password page, got ${page.url()}`);
  await expectText('#forced-change', 'one-time password');
  expect(await page.locator('nav[aria-label="Main"] a').count() === 0, 'no navigation before the change');
  if (checks) {
    await shot(`${name}-first-login`);
    for (const p of ['/dashboard', '/wizard', '/audit', '/account', `/ui/moves/${batch}/${address}/report`]) {
      await page.goto(`${url}${p}`);
      expect(page.url().endsWith('/account/password'), `${p} to lead back to the password page, got ${page.url()}`);
    }
    const api = await page.evaluate(async () => {
      const r = await fetch('/api/v1/batches');
      return { status: r.status, body: await r.text() };
    });
    expect(api.status === 403 && api.body.includes('password_change_required'), `the API to refuse before the change, got ${api.status} ${api.body}`);
    // Two different new passwords: refused, with the reason, and nothing changes.
    await page.fill('#current_password', oneTime);
    await page.fill('#new_password', newPassword);
    await page.fill('#confirm_password', `${newPassword}x`);
    await page.click('#change-password');
    await expectText('#account-error', 'differ');
    await shot(`${name}-password-mismatch`);
  }
  await page.fill('#current_password', oneTime);
  await page.fill('#new_password', newPassword);
  await page.fill('#confirm_password', newPassword);
  await Promise.all([page.waitForURL(/\/account\?done=password/), page.click('#change-password')]);
  await expectText('#account-done', 'password has been changed');
  if (checks) { await shot(`${name}-password-changed`); }
}

// What an auditor must never be offered: a link or button that changes something.
async function expectNoWriteEntryPoints() {
  await checkWords();
  const where = page.url();
  expect(await page.locator('a[href="/wizard"]').count() === 0, `no wizard link on ${where}`);
  const labels = await page.locator('button:visible, a.button:visible').allInnerTexts();
  const writes = labels.filter((l) => /^(Start|Sync again|Suspend|Resume|Complete|Approve skipped|New migration batch|Create batch)/.test(l.trim()));
  expect(writes.length === 0, `no write buttons on ${where}, got ${JSON.stringify(writes)}`);
  // Every form that posts is the logout or the auditor's own account.
  const actions = await page.locator('form[method=post]').evaluateAll((fs) => fs.map((f) => f.getAttribute('action')));
  const other = actions.filter((a) => a !== '/logout' && !a.startsWith('/account'));
  expect(other.length === 0, `no forms that change anything on ${where}, got ${JSON.stringify(other)}`);
}

const profileDir = mkdtempSync(join(tmpdir(), 'mailferry-chromium-'));
let context;
try {
  phase('launch chromium');
  context = await launch(profileDir, env('MF_SERVER_CERT'), { width: 1280, height: 800 });
  const scriptErrors = [];
  page = await firstPage(context, scriptErrors);

  const admin = env('MF_ADMIN');
  const adminSecret = env('MF_ADMIN_TOTP');
  const oneTime = env('MF_ADMIN_PASSWORD');
  const chosen = 'ferry boats cross the fjord at dawn';

  phase('first login: only the password change opens, then the new password works and the old one does not');
  await firstLogin(admin, oneTime, adminSecret, chosen, true);
  await logout();
  await submitLogin(admin, oneTime, spareCode(adminSecret));
  await expectText('#login-error', 'login refused');
  await shot('old-password-refused');
  await submitLogin(admin, chosen, await freshCode(admin, adminSecret));
  expect(page.url().endsWith('/dashboard'), `the new password to open the dashboard, got ${page.url()}`);
  await shot('admin-dashboard');

  phase('account page: a new authenticator entry, in force only after one valid code');
  await page.click('nav[aria-label="Main"] >> text=Account');
  await page.waitForSelector('#begin-totp');
  await shot('account');
  await page.fill('#totp_password', chosen);
  await page.fill('#totp_code', await freshCode(admin, adminSecret));
  await page.click('#begin-totp');
  await page.waitForSelector('#totp-qr');
  const qr = await page.locator('#totp-qr').evaluate((img) => ({ ok: img.complete && img.naturalWidth > 0, src: img.getAttribute('src') }));
  expect(qr.ok && qr.src.startsWith('data:image/svg+xml'), `a QR code image of the new entry, got ${JSON.stringify(qr).slice(0, 200)}`);
  const newSecret = (await textOf('#totp-secret')).replace(/\s+/g, '');
  expect(/^[A-Z2-7]{32}$/.test(newSecret), `a base32 secret shown, got ${newSecret}`);
  await shot('totp-new-entry');
  // Reloading does not show the secret again.
  await page.goto(`${url}/account`);
  expect(await page.locator('#totp-secret').count() === 0, 'the new secret to be shown only once');
  // The entry is still pending: confirm it with one of its codes.
  await page.fill('#totp_password', chosen);
  await page.fill('#totp_code', await freshCode(admin, adminSecret));
  await page.click('#begin-totp');
  const secret2 = (await textOf('#totp-secret')).replace(/\s+/g, '');
  expect(secret2 !== newSecret, 'starting again to make another secret');
  await page.fill('#new_totp', await freshCode(admin, secret2));
  await Promise.all([page.waitForURL(/\/account\?done=totp/), page.click('#confirm-totp')]);
  await expectText('#account-done', 'new authenticator entry is in use');
  await shot('totp-confirmed');
  await logout();
  await submitLogin(admin, chosen, spareCode(adminSecret));
  await expectText('#login-error', 'login refused');
  await submitLogin(admin, chosen, await freshCode(admin, secret2));
  expect(page.url().endsWith('/dashboard'), `the new authenticator entry to log in, got ${page.url()}`);

  phase('wizard: an existing endpoint is preselected');
  const before = await endpointNames();
  expect(before.length >= 1, `wizard.mjs's endpoint to exist, got ${JSON.stringify(before)}`);
  await page.click('nav[aria-label="Main"] >> text=New migration batch');
  await page.fill('#name', 'summer-2026');
  await page.check('#kind-maildir');
  await page.click('#next');
  await page.waitForSelector('#ep-new');
  const preselected = await page.locator('input[name=endpoint]:checked').getAttribute('value');
  expect(preselected === before[0], `the existing endpoint ${before[0]} preselected, got ${JSON.stringify(preselected)}`);
  await shot('wizard-endpoint-preselected');

  phase('wizard: Test connection and Next save nothing');
  await page.check('#ep-new');
  await page.fill('#ep_name', 'scratch-maildirs');
  await page.fill('#ep_root', `${mailRoot}/{user}`);
  await page.fill('#test_user', user);
  await page.click('#test-connection');
  await expectText('#test-result', 'Connection test passed');
  await expectText('#test-result', 'not saved');
  await shot('wizard-tested-not-saved');
  expect(JSON.stringify(await endpointNames()) === JSON.stringify(before), 'Test connection to save no endpoint');
  await page.click('#next');
  await page.waitForSelector('#csv_text');
  expect(JSON.stringify(await endpointNames()) === JSON.stringify(before), 'Next to save no endpoint');
  await checkWords();
  await page.fill('#csv_text', `EmailAddress,UserName,Password\n${address},${user},\n`);
  await page.click('#next');
  await page.waitForSelector('#large_item_limit');
  await checkWords();
  await page.click('#next');
  await page.waitForSelector('#start-manual');
  await checkWords();
  await page.check('#start-manual');
  await page.click('#next');

  phase('wizard: the review names the destination and estimates size and time');
  await expectText('#destination', volume);
  await expectText('#destination', 'example.com');
  await expectText('#destination', 'unlocked');
  await expectText('#destination', 'Recovery key');
  await expectText('#estimate', 'Estimated time');
  await expectText('#estimate', 'message(s)');
  await expectText('#estimate-mailboxes', address);
  await expectText('main', 'Nothing has been saved yet');
  await shot('wizard-review');
  // Tab order is the drawn order: Back, Cancel, then the button that goes forward.
  const order = await page.evaluate(() => [...document.querySelectorAll('.wizard-actions > *')]
    .map((el) => ({ text: el.textContent.trim(), x: el.getBoundingClientRect().x })));
  const xs = order.map((o) => o.x);
  expect(order.map((o) => o.text).join('|') === 'Back|Cancel|Create batch' && xs[0] < xs[1] && xs[1] < xs[2],
    `the buttons drawn in markup order, got ${JSON.stringify(order)}`);
  await page.focus('#back');
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.textContent.trim()) === 'Cancel', 'Tab from Back to reach Cancel');
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.id) === 'start', 'Tab from Cancel to reach Create batch');
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('text=Cancel')]);
  expect(JSON.stringify(await endpointNames()) === JSON.stringify(before), 'Cancel to leave no endpoint behind');
  expect(await page.locator('[data-batch="summer-2026"]').count() === 0, 'Cancel to leave no batch behind');
  await logout();

  phase('auditor: first login, then no write entry point on any page');
  const auditor = env('MF_AUDITOR');
  await firstLogin(auditor, env('MF_AUDITOR_PASSWORD'), env('MF_AUDITOR_TOTP'), 'auditors read the log twice', false);
  await page.goto(`${url}/dashboard`);
  await page.waitForSelector(`tr[data-mailbox="${address}"]`);
  await expectNoWriteEntryPoints();
  await shot('auditor-dashboard');
  const wizard = await page.goto(`${url}/wizard`);
  expect(wizard.status() === 403, `the wizard refused to the auditor, got ${wizard.status()}`);
  await expectNoWriteEntryPoints();
  await shot('auditor-wizard-refused');
  await page.goto(`${url}/ui/moves/${batch}/${address}/report`);
  await expectNoWriteEntryPoints();
  await page.goto(`${url}/account`);
  await expectNoWriteEntryPoints();

  phase('auditor: the audit page, newest first, with working verify buttons');
  await page.goto(`${url}/dashboard`);
  await page.click('nav[aria-label="Main"] >> text=Audit log');
  await page.waitForSelector('#admin-log');
  await expectText('#admin-log-status', 'verified');
  const seqs = (await page.locator('#admin-log tbody tr td:first-child').allInnerTexts()).map(Number);
  expect(seqs.length > 10 && seqs.every((s, i) => i === 0 || s < seqs[i - 1]), `the admin log newest first, got ${JSON.stringify(seqs.slice(0, 12))}`);
  const events = await page.locator('#admin-log tbody').innerText();
  expect(events.includes('admin.password.changed') && events.includes('admin.totp.enrolled'), 'the password change and the new authenticator entry in the admin log');
  await expectNoWriteEntryPoints();
  await shot('audit-page');
  await page.click(`#moves tr[data-mailbox="${address}"] button.verify-move`);
  await page.waitForSelector(`#moves tr[data-mailbox="${address}"] .source-check`);
  await expectText(`#moves tr[data-mailbox="${address}"] .source-check`, 'verified');
  await expectText(`#moves tr[data-mailbox="${address}"] .volume-check`, 'both sides agree');
  await expectNoWriteEntryPoints();
  await shot('audit-move-verified');
  await page.click('#verify-admin-log');
  await expectText('#admin-log-status', 'verified');
  await expectNoWriteEntryPoints();
  await logout();

  expect(scriptErrors.length === 0, `no script errors in the pages, got ${JSON.stringify(scriptErrors)}`);
  console.log(`issue 22 scenario passed; ${step} screenshots in ${shots}; pages checked for command-line words: ${[...visited].sort().join(' ')}`);
} catch (e) {
  console.error(`issue 22 scenario FAILED at "${current}": ${e && e.stack ? e.stack : e}`);
  if (page) {
    try { await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }); } catch (_) { /* the page may be gone */ }
    try { console.error(`page: ${page.url()}\n${(await page.content()).slice(0, 4000)}`); } catch (_) { /* idem */ }
  }
  process.exitCode = 1;
} finally {
  if (context) { await context.close().catch(() => {}); }
  rmSync(profileDir, { recursive: true, force: true });
}
