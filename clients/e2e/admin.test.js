// The built-in /admin page (TESSERA_ADMIN_PAGE=true) in Debian's headless Chromium, against
// the real binary: an administrator signs in through /login, searches users, revokes a
// session (and that device is signed out), sets roles, disables a user. A back-office
// credential seeds the accounts through the admin API, as a support tool would.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startTessera } from '../node/test/tessera-server.js';

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const PASSWORD = 'a long enough password';
const SECRET = 'e2e-admin-secret-e2e-admin-secret-e2e-admin';

let tessera;
let browser;

async function admin(method, path, body) {
  const response = await fetch(`${tessera.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response.status === 204 ? null : response.json();
}

async function signIn(page, email, path) {
  await page.goto(`${tessera.base}${path}`);
  await page.waitForURL('**/login?**');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`**${path}`);
}

before(async () => {
  tessera = await startTessera({
    TESSERA_ADMIN_PAGE: 'true',
    TESSERA_ADMIN_CREDENTIALS: `e2e:admin:write:${SECRET}`,
    TESSERA_COOKIE_SECURE: 'false',
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
  await admin('POST', '/v1/admin/users', { email: 'boss@example.com', password: PASSWORD, roles: ['admin'] });
  await admin('POST', '/v1/admin/users', { email: 'target@example.com', password: PASSWORD });
  await admin('POST', '/v1/admin/users', { email: 'other@example.com', password: PASSWORD });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await tessera?.stop();
}, { timeout: 60_000 });

test('an administrator searches, revokes a device, sets roles and disables a user', async () => {
  // The target signs in on a device of its own.
  const device = await (await browser.newContext()).newPage();
  await signIn(device, 'target@example.com', '/account');
  await device.locator('#who-email', { hasText: 'target@example.com' }).waitFor();

  const context = await browser.newContext();
  const page = await context.newPage();
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) refused.push(m.text()); });
  await signIn(page, 'boss@example.com', '/admin');
  await page.waitForFunction(() => document.querySelector('main').getAttribute('aria-busy') === 'false');
  assert.equal(await page.locator('#users li').count(), 3);

  // Search by email prefix, open the user: its one session and its events.
  await page.getByLabel('Email starts with').fill('targ');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#users li').length === 1);
  await page.getByRole('button', { name: 'target@example.com' }).click();
  await page.locator('#user-title', { hasText: 'target@example.com' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#user-sessions li[data-session-id]').length === 1);
  assert.match(await page.locator('#user-events').innerText(), /login_succeeded/);
  await page.screenshot({ path: join(ARTIFACTS, 'admin.png'), fullPage: true });

  // Revoke the device's session: that device is signed out at its next request.
  await page.getByRole('button', { name: /^Revoke / }).click();
  await page.locator('#notice', { hasText: 'Revoked' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#user-sessions li[data-session-id]').length === 0);
  await device.reload();
  await device.waitForURL('**/login?reason=session_revoked');

  // Roles.
  await page.getByLabel('Roles (comma-separated)').fill('support, billing');
  await page.getByRole('button', { name: 'Save roles' }).click();
  await page.locator('#notice', { hasText: 'Roles of target@example.com saved' }).waitFor();
  const shown = await admin('GET', `/v1/admin/users/${await page.locator('#user').getAttribute('data-user-id')}`);
  assert.deepEqual(shown.user.roles, ['support', 'billing']);

  // Disable: the user can no longer sign in; enable again.
  await page.getByRole('button', { name: 'Disable' }).click();
  await page.locator('#user-status', { hasText: 'Disabled' }).waitFor();
  const login = await fetch(`${tessera.base}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'target@example.com', password: PASSWORD }),
  });
  assert.equal(login.status, 401);
  await page.getByRole('button', { name: 'Enable' }).click();
  await page.locator('#user-status', { hasText: 'Active' }).waitFor();
  assert.deepEqual(refused, []);
});

test('a signed-in user without the admin role is told so, and shown nothing', async () => {
  const page = await (await browser.newContext()).newPage();
  await signIn(page, 'other@example.com', '/admin');
  await page.locator('#error', { hasText: 'not an administrator' }).waitFor();
  assert.equal(await page.locator('#users li').count(), 0);
});
