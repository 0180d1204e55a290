// Two-step verification on the built-in pages in real Chromium: an account with TOTP on
// (enrolled through the API, the code computed here as an authenticator app would) is asked
// for a code on /login after its password; a wrong code is refused with a message, a
// recovery code signs in and lands on /account.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';

import { startTessera } from '../node/test/tessera-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const PASSWORD = 'a long enough password';

let tessera;
let browser;

/** RFC 6238 (SHA-1, 6 digits, 30 s) for a base32 secret, at `seconds`. */
function totp(secret, seconds = Date.now() / 1000) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(seconds / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(value).padStart(6, '0');
}

async function api(path, body, token) {
  const r = await fetch(`${tessera.base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

before(async () => {
  tessera = await startTessera({ TESSERA_COOKIE_SECURE: 'false' });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await tessera?.stop();
});

test('/login asks for the second factor; a wrong code is refused, a recovery code signs in', async () => {
  const email = 'two-step@example.com';
  assert.equal((await api('/v1/auth/register', { email, password: PASSWORD })).status, 201);
  const access = (await api('/v1/auth/login', { email, password: PASSWORD })).body.access_token;
  const enrolment = await api('/v1/account/mfa/totp', undefined, access);
  assert.equal(enrolment.status, 201);
  assert.match(enrolment.body.qr_svg, /<svg/);
  const confirmed = await api('/v1/account/mfa/totp/confirm', { code: totp(enrolment.body.secret) }, access);
  assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
  const [recovery] = confirmed.body.recovery_codes;

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${tessera.base}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { name: 'Two-step verification' }).waitFor();
  // The password alone left no session behind.
  assert.equal((await context.cookies()).filter((c) => c.name === 'tessera_rt').length, 0);

  await page.getByLabel('Verification code').fill('000000');
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.locator('#error', { hasText: 'That code is not right' }).waitFor();

  await page.getByRole('button', { name: 'Use a recovery code instead' }).click();
  await page.getByLabel('Recovery code').fill(recovery);
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.waitForURL('**/account');
  await page.locator('#who-email', { hasText: email }).waitFor();
  await context.close();
});

test('/account turns two-step verification on (QR code, a first code, recovery codes), replaces the recovery codes, and turns it off', async () => {
  const email = 'account-two-step@example.com';
  assert.equal((await api('/v1/auth/register', { email, password: PASSWORD })).status, 201);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${tessera.base}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/account');
  await page.locator('#mfa-status', { hasText: /^Off:/ }).waitFor();
  await page.getByRole('button', { name: 'Turn on two-step verification' }).click();
  await page.locator('#mfa-qr svg').waitFor();
  const secret = (await page.locator('#mfa-secret').textContent()).trim();
  await page.getByLabel('Code from the app').fill(totp(secret));
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.locator('#mfa-status', { hasText: /^On:/ }).waitFor();
  assert.equal(await page.locator('#mfa-code-list li').count(), 10);
  await page.screenshot({ path: new URL('./artifacts/account-two-step.png', import.meta.url).pathname, fullPage: true });
  const first = await page.locator('#mfa-code-list li').allTextContents();

  // A new set, with the password: a wrong one is refused, the right one shows ten new codes.
  await page.getByLabel('Password (for new recovery codes)').fill('not the password');
  await page.getByRole('button', { name: 'New recovery codes' }).click();
  await page.locator('#error', { hasText: 'Your password is not right' }).waitFor();
  await page.getByLabel('Password (for new recovery codes)').fill(PASSWORD);
  await page.getByRole('button', { name: 'New recovery codes' }).click();
  await page.locator('#notice', { hasText: 'the old ones no longer work' }).waitFor();
  const second = await page.locator('#mfa-code-list li').allTextContents();
  assert.equal(second.length, 10);
  assert.ok(second.every((c) => !first.includes(c)), `${first} / ${second}`);
  // The old set is dead, the new one works: checked where it matters, at a sign-in.
  const login = await api('/v1/auth/login', { email, password: PASSWORD });
  assert.equal(login.body.mfa_required, true, JSON.stringify(login.body));
  const old = await api('/v1/auth/mfa/verify', { challenge: login.body.challenge, method: 'recovery_code', code: first[0] });
  assert.equal(old.status, 401, JSON.stringify(old.body));
  const fresh = await api('/v1/auth/mfa/verify', { challenge: login.body.challenge, method: 'recovery_code', code: second[0] });
  assert.equal(fresh.status, 200, JSON.stringify(fresh.body));

  await page.getByLabel('Password (to turn it off)').fill(PASSWORD);
  await page.getByRole('button', { name: 'Turn off two-step verification' }).click();
  await page.locator('#mfa-status', { hasText: /^Off:/ }).waitFor();
  await context.close();
});
