// The admin wizard in a real browser: headless Debian chromium driven by playwright-core.
//
// Run by tests/browser.rs, which starts `mailferry admin serve` and passes:
//   MF_URL            https://127.0.0.1:PORT
//   MF_SERVER_CERT    the service's certificate chain (PEM); its key is pinned in chromium
//   MF_ADMIN, MF_ADMIN_PASSWORD, MF_ADMIN_TOTP      admin name, password, otpauth:// URI
//   MF_AUDITOR, MF_AUDITOR_PASSWORD, MF_AUDITOR_TOTP
//   MF_MAIL_ROOT      directory holding one Maildir per user (MF_MAIL_ROOT/<user>)
//   MF_USER           the one user of the CSV (its Maildir is MF_MAIL_ROOT/<user>)
//   MF_SCREENSHOTS    where to write one PNG per step
//   MF_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits 0 when the whole scenario passed, 1 with a message naming the failed step.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env, launch, replaceOneTimePassword, totp, firstPage } from './lib.mjs';
import { checkA11y, checkNoCli } from './a11y.mjs';

// === the scenario ===

const url = env('MF_URL');
const shots = env('MF_SCREENSHOTS');
const mailRoot = env('MF_MAIL_ROOT');
const user = env('MF_USER');
const address = `${user}@example.com`;
const batch = 'spring-2026';
mkdirSync(shots, { recursive: true });

let step = 0;
let current = 'start';
let scriptless = false;
let page;
async function shot(name) {
  step += 1;
  const file = join(shots, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
  // Every page shown is checked for accessibility and command-line advice (issue 22),
  // except in the tab that runs with script execution off, where axe cannot run (the
  // auditor's pages are checked in issue22.mjs, with scripts on).
  if (name !== 'failure' && !scriptless) {
    await checkNoCli(page, name);
    await checkA11y(page, name);
  }
}
function expect(cond, what) {
  if (!cond) { throw new Error(`expected ${what}`); }
}
async function expectText(selector, text) {
  const el = page.locator(selector);
  await el.waitFor({ timeout: 30000 });
  const got = await el.innerText();
  expect(got.includes(text), `${selector} to contain ${JSON.stringify(text)}, got ${JSON.stringify(got)}`);
}
function phase(name) { current = name; console.log(`== ${name}`); }

async function login(name, password, uri) {
  await page.goto(`${url}/login`);
  await page.fill('#name', name);
  await page.fill('#password', password);
  await page.fill('#totp', totp(uri));
  await shot(`login-${name}`);
  await Promise.all([page.waitForURL(/\/(dashboard|account\/password)/, { timeout: 30000 }), page.click('#login')]);
  await replaceOneTimePassword(page, url, password);
}

async function stateOf(mailbox) {
  return page.locator(`tr[data-mailbox="${mailbox}"]`).getAttribute('data-state', { timeout: 30000 });
}

// Waits (generously) for the dashboard to show `state` for `mailbox` without a reload:
// the live updates must bring it.
async function waitForState(mailbox, state) {
  await page.waitForSelector(`tr[data-mailbox="${mailbox}"][data-state="${state}"]`, { timeout: 180000 })
    .catch(async (e) => {
      throw new Error(`${mailbox} did not reach ${state} on the dashboard (last seen: ${await stateOf(mailbox)}): ${e.message}`);
    });
}

const profileDir = mkdtempSync(join(tmpdir(), 'mailferry-chromium-'));
let context;
try {
  phase('launch chromium');
  context = await launch(profileDir, env('MF_SERVER_CERT'), { width: 1280, height: 900 });
  const scriptErrors = [];
  page = await firstPage(context, scriptErrors);

  phase('unauthenticated pages redirect to the login form, with security headers');
  const first = await page.goto(`${url}/dashboard`);
  expect(page.url().includes('/login'), `a redirect to /login, got ${page.url()}`);
  const h = first.headers();
  expect((h['content-security-policy'] || '').includes("script-src 'self'"), `a CSP without inline script, got ${h['content-security-policy']}`);
  expect((h['content-security-policy'] || '').includes("frame-ancestors 'none'"), 'a CSP refusing framing');
  expect(h['x-frame-options'] === 'DENY', `X-Frame-Options DENY, got ${h['x-frame-options']}`);
  expect((h['cache-control'] || '').includes('no-store'), `Cache-Control no-store, got ${h['cache-control']}`);

  phase('wrong TOTP code is refused with a clear message');
  await page.fill('#name', env('MF_ADMIN'));
  await page.fill('#password', env('MF_ADMIN_PASSWORD'));
  await page.fill('#totp', totp(env('MF_ADMIN_TOTP'), Date.now() + 10 * 60 * 1000));
  await page.click('#login');
  await expectText('#login-error', 'login refused');
  await shot('login-refused');

  phase('admin logs in with password and TOTP');
  await login(env('MF_ADMIN'), env('MF_ADMIN_PASSWORD'), env('MF_ADMIN_TOTP'));
  await shot('dashboard-empty');

  phase('wizard step 1: name and type');
  await page.click('text=New migration batch');
  await page.waitForSelector('#name');
  await page.fill('#name', 'bad name!');
  await page.check('#kind-maildir');
  // The browser's own pattern check would stop the submit; the server must check too.
  await page.$eval('#name', (el) => el.removeAttribute('pattern'));
  await page.click('#next');
  await expectText('.field-error', 'batch name');
  expect(await page.isChecked('#kind-maildir'), 'the type to be kept after an error');
  await page.fill('#name', batch);
  await shot('wizard-1-name-type');
  await page.click('#next');

  phase('wizard step 2: create the endpoint inline and test it');
  await page.waitForSelector('#ep_root');
  await page.check('#ep-new');
  await page.fill('#ep_name', 'local-maildirs');
  await page.fill('#ep_root', `${mailRoot}/{user}`);
  await page.fill('#test_user', user);
  await page.click('#test-connection');
  await expectText('#test-result', 'Connection test passed');
  await shot('wizard-2-endpoint-tested');
  await page.click('#next');

  phase('wizard step 3: CSV with a bad row, then a good one');
  await page.waitForSelector('#csv_file');
  await page.setInputFiles('#csv_file', {
    name: 'users.csv', mimeType: 'text/csv',
    buffer: Buffer.from(`EmailAddress,UserName,Password\n${address},${user},\nnot-an-address,nobody,\n`),
  });
  await page.click('#next');
  await expectText('#csv-problems', 'row');
  const problems = await page.locator('#csv-problems tbody tr').count();
  expect(problems >= 1, `at least one bad row listed, got ${problems}`);
  await shot('wizard-3-csv-problems');
  await page.setInputFiles('#csv_file', {
    name: 'users.csv', mimeType: 'text/csv',
    buffer: Buffer.from(`EmailAddress,UserName,Password\n${address},${user},\n`),
  });
  await page.click('#next');

  phase('wizard step 4: settings (a bad value first), Back keeps the CSV');
  await page.waitForSelector('#large_item_limit');
  await page.click('#back');
  await page.waitForSelector('#csv_text');
  expect((await page.inputValue('#csv_text')).includes(address), 'Back to keep the CSV');
  await page.click('#next');
  await page.waitForSelector('#large_item_limit');
  await page.fill('#exclude_folders', 'Trash/Old');
  await page.fill('#bad_item_limit', '5');
  await page.fill('#large_item_limit', 'huge');
  await page.fill('#concurrency', '2');
  await page.click('#next');
  await expectText('.field-error', 'size');
  expect(await page.inputValue('#exclude_folders') === 'Trash/Old', 'the other settings to be kept after an error');
  await page.fill('#large_item_limit', '100KB');
  await shot('wizard-4-settings');
  await page.click('#next');

  phase('wizard step 5: schedule');
  await page.waitForSelector('#complete-manual');
  await page.check('#start-now');
  await page.check('#complete-manual');
  await page.fill('#recipients', 'migration-team@example.com');
  await shot('wizard-5-schedule');
  await page.click('#next');

  phase('wizard step 6: review and start');
  await expectText('#review', batch);
  await expectText('#review', address);
  await expectText('#review', 'local-maildirs');
  await shot('wizard-6-review');
  await Promise.all([page.waitForURL(/\/dashboard/, { timeout: 60000 }), page.click('#start')]);

  phase('dashboard: the move reaches Synced (live, no reload)');
  await page.waitForSelector(`tr[data-mailbox="${address}"]`);
  await waitForState(address, 'synced');
  await expectText(`tr[data-mailbox="${address}"] .skipped`, '1');
  await shot('dashboard-synced');

  phase('dashboard: a form without its CSRF token is refused');
  // Sync again shows once the start run has ended.
  await page.waitForSelector(`#sync-${batch}`, { timeout: 180000 });
  await page.$eval(`#sync-${batch}`, (b) => b.form.querySelector('input[name=csrf]').remove());
  const [refused] = await Promise.all([page.waitForNavigation(), page.click(`#sync-${batch}`)]);
  expect(refused && refused.status() === 403, `403 for a form without CSRF token, got ${refused && refused.status()}`);
  await expectText('main', 'CSRF');
  await shot('csrf-refused');
  await page.goto(`${url}/dashboard`);
  await waitForState(address, 'synced');
  await page.waitForSelector(`#sync-${batch}`, { timeout: 180000 });

  phase('dashboard: approve the skipped large item (after its confirmation)');
  await page.click(`tr[data-mailbox="${address}"] a:has-text("Approve skipped")`);
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await page.waitForFunction(
    (b) => document.querySelector(`[data-batch="${b}"] .batch-facts`).textContent.includes('last approval pass ended'),
    batch, { timeout: 180000 },
  );
  await expectText(`tr[data-mailbox="${address}"] .skipped`, '1 approved');
  await shot('dashboard-approved');

  phase('dashboard: Complete, the move reaches Completed');
  await page.click(`#complete-${batch}`);
  await Promise.all([page.waitForURL(/\/dashboard/), page.click('#confirm')]);
  await waitForState(address, 'completed');
  // The live script has been polling the fragment (the state may also have been final
  // when the page loaded, so this is what shows the updates run).
  await page.waitForFunction(() => Number(document.getElementById('live').getAttribute('data-updates') || 0) > 0, null, { timeout: 30000 });
  await shot('dashboard-completed');

  phase('report: the throughput plot and both audit sides');
  await page.click(`tr[data-mailbox="${address}"] >> text=Report`);
  await page.waitForSelector('#throughput svg.plot');
  const polyline = await page.locator('#throughput svg polyline').count();
  expect(polyline === 1, `a throughput line in the plot, got ${polyline}`);
  await expectText('#audit', 'verified');
  await expectText('#skipped', 'large item');
  await expectText('#skipped', 'yes');
  // Fetched by the page itself: the browser trusts the service, node does not.
  const standalone = await page.evaluate(async (href) => {
    const r = await fetch(href);
    return { status: r.status, disposition: r.headers.get('content-disposition') || '', text: await r.text() };
  }, await page.locator('a:has-text("self-contained HTML")').getAttribute('href'));
  expect(standalone.status === 200, `the standalone report, got ${standalone.status}`);
  expect(standalone.disposition.startsWith('attachment'), 'the standalone report as a download');
  expect(standalone.text.includes('<svg'), 'the plot in the standalone report');
  await shot('report');

  phase('logout, then the auditor cannot start or complete (without JavaScript)');
  await Promise.all([page.waitForURL(/\/login/), page.click('#logout')]);
  await shot('logged-out');
  // Every form must work without JavaScript: the auditor's whole walk runs with
  // script execution turned off in a new tab.
  const noJs = await context.newPage();
  const cdp = await context.newCDPSession(noJs);
  await cdp.send('Emulation.setScriptExecutionDisabled', { value: true });
  scriptless = true;
  await page.close();
  page = noJs;
  page.setDefaultTimeout(30000);
  await page.goto(`${url}/dashboard`);
  expect(page.url().includes('/login'), 'the session to be gone after logout');
  await login(env('MF_AUDITOR'), env('MF_AUDITOR_PASSWORD'), env('MF_AUDITOR_TOTP'));
  await page.waitForSelector(`tr[data-mailbox="${address}"][data-state="completed"]`);
  await expectText('#live-status', 'Values as of');
  await page.click('#refresh');
  await page.waitForSelector(`tr[data-mailbox="${address}"][data-state="completed"]`);
  // Auditors are offered no way to change anything: no buttons, no wizard (issue 22).
  expect(await page.locator('#live button, #live a.button').count() === 0, 'no lifecycle buttons for the auditor');
  expect(await page.locator('a[href="/wizard"]').count() === 0, 'no wizard link for the auditor');
  await shot('auditor-dashboard');

  phase('auditor: the wizard itself refuses, and nothing was created');
  const resp = await page.goto(`${url}/wizard`);
  expect(resp && resp.status() === 403, `the server to refuse the auditor's wizard with 403, got ${resp && resp.status()}`);
  await expectText('main', 'auditor');
  await shot('auditor-refused');
  await page.goto(`${url}/dashboard`);
  expect(await page.locator('[data-batch="autumn"]').count() === 0, 'no batch created by the auditor');

  expect(scriptErrors.length === 0, `no script errors in the pages, got ${JSON.stringify(scriptErrors)}`);
  console.log(`browser scenario passed; ${step} screenshots in ${shots}`);
} catch (e) {
  console.error(`browser scenario FAILED at "${current}": ${e && e.stack ? e.stack : e}`);
  if (page) {
    try { await shot('failure'); } catch (_) { /* the page may be gone */ }
    try { console.error(`page: ${page.url()}\n${(await page.content()).slice(0, 4000)}`); } catch (_) { /* idem */ }
  }
  process.exitCode = 1;
} finally {
  if (context) { await context.close().catch(() => {}); }
  rmSync(profileDir, { recursive: true, force: true });
}
