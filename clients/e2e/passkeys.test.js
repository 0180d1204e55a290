// Passkeys in Debian's headless Chromium with a virtual authenticator (the DevTools
// protocol's WebAuthn domain: CTAP2, internal transport, resident keys, user verification),
// against the real binary served as http://localhost:PORT (WebAuthn needs a domain, and
// localhost counts as secure): a passkey added on /account, renamed, used to sign in with no
// address typed on /login, removed, and then refused. A screenshot of /account is kept.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startTessera } from '../node/test/tessera-server.js';

const here = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const PASSWORD = 'a long enough password';

let tessera;
let browser;
/** http://localhost:PORT: the public URL, hence the relying party id and origin. */
let base;

/** A port free just now (the server is told it before it starts: it is the origin). */
async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

before(async () => {
  const port = await freePort();
  base = `http://localhost:${port}`;
  tessera = await startTessera({
    TESSERA_LISTEN: `127.0.0.1:${port}`,
    TESSERA_PUBLIC_URL: base,
    TESSERA_COOKIE_SECURE: 'false',
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await tessera?.stop();
});

/** A page whose browser has a platform authenticator with user verification. */
async function pageWithAuthenticator() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true,
    },
  });
  return { context, page, cdp, authenticatorId };
}

async function signOut(page) {
  await page.locator('#sign-out').click();
  await page.waitForURL('**/login?**');
}

test('a passkey added on /account signs in alone, and once removed no more', async () => {
  const { context, page, cdp, authenticatorId } = await pageWithAuthenticator();
  const email = 'passkey@example.com';
  await page.goto(`${base}/login`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL('**/account');

  // Add one: the virtual authenticator makes a resident credential for localhost.
  const card = page.locator('#passkeys-card');
  await card.waitFor();
  await card.getByText('No passkeys yet.').waitFor();
  await page.getByRole('button', { name: 'Add a passkey' }).click();
  await card.getByText('Passkey 1').waitFor();
  await page.locator('#notice', { hasText: 'Added Passkey 1' }).waitFor();
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1);
  assert.equal(credentials[0].isResidentCredential, true);
  assert.equal(credentials[0].rpId, 'localhost');

  // Rename it.
  await page.getByRole('button', { name: 'Rename Passkey 1' }).click();
  await page.getByLabel('New name for Passkey 1').fill('This laptop');
  await page.getByRole('button', { name: 'Save' }).click();
  await card.getByText('This laptop').waitFor();
  await card.getByText('never used to sign in').waitFor();

  // Sign out, then in with the passkey alone: no address typed.
  await signOut(page);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await page.waitForURL('**/account');
  await page.locator('#who-email', { hasText: email }).waitFor();
  await card.getByText(/last used/).waitFor();
  const used = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.ok(used.credentials[0].signCount >= 1, 'the authenticator signed');
  await page.screenshot({ path: join(ARTIFACTS, 'account-passkeys.png'), fullPage: true });

  // The password now asks for a second step, which the passkey gives.
  await signOut(page);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('button', { name: 'Use a passkey' }).click();
  await page.waitForURL('**/account');
  await page.locator('#who-email', { hasText: email }).waitFor();

  // Remove it: the authenticator still offers it, but it signs in no more.
  await page.getByRole('button', { name: 'Remove This laptop' }).click();
  await card.getByText('No passkeys yet.').waitFor();
  await signOut(page);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await page.locator('#error', { hasText: 'isn’t registered' }).waitFor();
  assert.match(page.url(), /\/login/);
  // The password still works, and the button names are told apart.
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/account');
  await context.close();
});

test('the passkey button is not offered where passkeys are off', async () => {
  const off = await startTessera({ TESSERA_COOKIE_SECURE: 'false' });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${off.base}/login`);
    await page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    // The page asked the server whether it has passkeys before showing the button.
    await page.waitForFunction(() => performance.getEntriesByName(`${location.origin}/pages/config.json`).length > 0);
    await page.waitForTimeout(200);
    assert.equal(await page.locator('#passkey-line').isHidden(), true);
    await context.close();
  } finally {
    await off.stop();
  }
});
