// Shared by the browser scenarios (wizard.mjs, issue22.mjs, dashboard.mjs): environment,
// TOTP codes, a headless chromium that trusts exactly the admin service's certificate,
// numbered screenshots, and waiting for a mailbox's state on the dashboard.
//
// Nothing here knows a page of the service: the scenarios do.
import { chromium } from 'playwright-core';
import { createHmac, createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The environment variable `name`; throws if it is unset or empty. */
export const env = (name) => {
  const v = process.env[name];
  if (!v) { throw new Error(`environment variable ${name} is not set`); }
  return v;
};

// === TOTP (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits) ===

function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0; let value = 0; const out = [];
  for (const c of s.toUpperCase().replace(/=+$/, '')) {
    const i = alphabet.indexOf(c);
    if (i < 0) { throw new Error(`TOTP secret: not base32: ${c}`); }
    value = (value << 5) | i; bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}

/** The code of an otpauth:// URI (or a bare base32 secret) at time `when` (ms). */
export function totp(uri, when = Date.now()) {
  const secret = uri.startsWith('otpauth:') ? new URL(uri).searchParams.get('secret') : uri;
  if (!secret) { throw new Error(`no secret in ${uri}`); }
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(when / 1000 / 30)));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const off = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(code).padStart(6, '0');
}

// === chromium ===

/**
 * A headless chromium (persistent profile in `profileDir`) that accepts the service's
 * self-signed certificate by pinning its key, and would still refuse any other.
 */
export async function launch(profileDir, certFile, viewport) {
  const leaf = readFileSync(certFile, 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/)[0];
  const spki = new X509Certificate(leaf).publicKey.export({ type: 'spki', format: 'der' });
  const spkiHash = createHash('sha256').update(spki).digest('base64');
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.MF_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${spkiHash}`,
    ],
    viewport,
    timeout: 60000,
  });
}

// Numbered full-page screenshots in `dir`.
export function shooter(dir) {
  mkdirSync(dir, { recursive: true });
  let step = 0;
  const shot = async (page, name) => {
    step += 1;
    const file = join(dir, `${String(step).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`screenshot ${file}`);
  };
  shot.count = () => step;
  return shot;
}

export function expect(cond, what) {
  if (!cond) { throw new Error(`expected ${what}`); }
}

// Waits (generously) for the dashboard to show `state` for `mailbox` without a reload:
// the live updates must bring it.
export async function waitForState(page, mailbox, state) {
  await page.waitForSelector(`tr[data-mailbox="${mailbox}"][data-state="${state}"]`, { timeout: 180000 })
    .catch(async (e) => {
      const last = await page.locator(`tr[data-mailbox="${mailbox}"]`).first().getAttribute('data-state').catch(() => 'none');
      throw new Error(`${mailbox} did not reach ${state} on the dashboard (last seen: ${last}): ${e.message}`);
    });
}

// Accounts made by `admin add` have a one-time password: the first login lands on the
// change form, which must replace it before anything else (issue22.mjs tests that page
// itself). Does nothing when the login went straight to the dashboard.
export async function replaceOneTimePassword(page, url, password) {
  if (!page.url().includes('/account/password')) { return; }
  await page.fill('#current_password', password);
  await page.fill('#new_password', `${password}-own`);
  await page.fill('#confirm_password', `${password}-own`);
  await Promise.all([page.waitForURL(/\/account\?done=password/), page.click('#change-password')]);
  await page.goto(`${url}/dashboard`);
}

// The first tab of a launched chromium, with a 30 s default timeout, and the script
// errors it reports collected into `scriptErrors` (the scenarios fail on any): refused
// requests (401, 403, 422) are part of the scenarios, anything else the console reports
// as an error is a bug in the pages.
export async function firstPage(context, scriptErrors) {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => scriptErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) { scriptErrors.push(m.text()); }
  });
  return page;
}
