// The browser suite: a real headless Chromium (Debian's, driven by playwright-core; nothing
// downloads a browser) against the real Tessera binary, the example Express API and a page
// of an origin Tessera does not list. Tessera runs with a 2 s access-token lifetime so that
// every flow crosses an expiry. A screenshot of /account is kept in artifacts/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startTessera } from '../node/test/tessera-server.js';
import { createApp } from '../../examples/express-api/server.js';

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, 'artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ACCESS_TTL_MS = 2000;
const PASSWORD = 'a long enough password';

let tessera;
let browser;
let api;
let stranger;
/** A single-page app served as http://localhost:<port>, against Tessera on 127.0.0.1. */
let spa;

/** An HTTP server on a free port whose handler is set later (its origin must be known first). */
async function listenLater() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** The number of refreshes Tessera has answered so far (every outcome). */
async function refreshCount() {
  const text = await (await fetch(`${tessera.base}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('tessera_refreshes_total'))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pastExpiry = () => sleep(ACCESS_TTL_MS + 1200);

async function createAccountOnLoginPage(page, email) {
  await page.goto(`${tessera.base}/login`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL('**/account');
}

async function signInOnLoginPage(page, email) {
  await page.goto(`${tessera.base}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/account');
}

/** Waits for /account to show `email` and `count` sessions (any number when omitted). */
async function accountShows(page, email, count) {
  await page.locator('#who-email', { hasText: email }).waitFor();
  await page.waitForFunction(
    (n) => document.querySelector('main').getAttribute('aria-busy') === 'false'
      && (n === undefined ? document.querySelectorAll('#sessions li').length > 0
        : document.querySelectorAll('#sessions li').length === n),
    count,
  );
}

before(async () => {
  const apiServer = await listenLater();
  stranger = await listenLater();
  spa = await listenLater();
  spa.origin = spa.origin.replace('127.0.0.1', 'localhost');
  const clientDist = join(here, '../js/dist');
  spa.server.on('request', async (req, res) => {
    if (req.url.startsWith('/client/')) {
      try {
        const file = await readFile(join(clientDist, req.url.slice('/client/'.length).replace(/\.\.+/g, '')));
        res.setHeader('content-type', 'text/javascript');
        return res.end(file);
      } catch {
        res.statusCode = 404;
        return res.end();
      }
    }
    res.setHeader('content-type', 'text/html');
    res.end('<!doctype html><title>SPA</title><p>an app on localhost</p>');
  });
  stranger.server.on('request', (_req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end('<!doctype html><title>Not listed</title><p>another site</p>');
  });
  tessera = await startTessera({
    TESSERA_ACCESS_TTL: String(ACCESS_TTL_MS / 1000),
    TESSERA_CORS_ORIGINS: `${apiServer.origin},${spa.origin}`,
    // Plain HTTP test host (API.md: Secure may be turned off for such hosts).
    TESSERA_COOKIE_SECURE: 'false',
    // The built-in pages as an app's own login: its name and colour, and back to it after.
    TESSERA_RETURN_TO_ORIGINS: spa.origin,
    TESSERA_PRODUCT_NAME: 'Acme Notes',
    TESSERA_ACCENT_COLOR: '#0a7d4f',
  });
  apiServer.server.on('request', createApp({ tesseraUrl: tessera.base, issuer: 'http://127.0.0.1:8080' }));
  api = apiServer;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  api?.server.close();
  stranger?.server.close();
  spa?.server.close();
  await tessera?.stop();
}, { timeout: 60_000 });

test('create an account on /login, land on /account, keep working past the access expiry', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // The pages' CSP allows no inline script or style: anything it blocks is a bug in them.
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) refused.push(m.text()); });
  await createAccountOnLoginPage(page, 'first@example.com');
  await accountShows(page, 'first@example.com', 1);
  assert.match(await page.locator('#sessions li').first().innerText(), /This device/);

  const before = await refreshCount();
  await pastExpiry();
  await page.reload();
  await accountShows(page, 'first@example.com', 1);
  assert.equal(new URL(page.url()).pathname, '/account', 'still signed in');
  assert.equal(await refreshCount() - before, 1, 'one refresh for the page’s two calls');

  // Signed in, /login sends you on to your account.
  await page.goto(`${tessera.base}/login`);
  await page.waitForURL('**/account');
  assert.deepEqual(refused, []);
  await context.close();
});

test('a short password, a wrong password and a taken email get clear messages', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${tessera.base}/login`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill('short@example.com');
  await page.getByLabel('Password').fill('short');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('alert').filter({ hasText: 'Password must be at least 8 characters.' }).waitFor();
  assert.equal(await page.getByLabel('Password').getAttribute('aria-invalid'), 'true');
  await page.getByRole('button', { name: 'Sign in instead' }).click();
  await page.getByLabel('Email').fill('first@example.com');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('alert').filter({ hasText: 'don’t match' }).waitFor();
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('alert').filter({ hasText: 'already exists' }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'login.png') });
  await context.close();
});

test('two tabs whose tokens expire together both keep working, with one refresh', async () => {
  const context = await browser.newContext();
  const first = await context.newPage();
  await signInOnLoginPage(first, 'first@example.com');
  const second = await context.newPage();
  await second.goto(`${tessera.base}/account`);
  await accountShows(first, 'first@example.com');
  await accountShows(second, 'first@example.com');

  await pastExpiry();
  const before = await refreshCount();
  await Promise.all([first.reload(), second.reload()]);
  await accountShows(first, 'first@example.com');
  await accountShows(second, 'first@example.com');
  assert.equal(await refreshCount() - before, 1, 'four calls in two tabs, one refresh');
  for (const page of [first, second]) assert.equal(new URL(page.url()).pathname, '/account');
  await context.close();
});

test('a second device signs in; the first sees both and signs the other out', async () => {
  const laptop = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  // A phone in dark mode: the screenshot shows the narrow layout and the dark palette.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 800 },
    colorScheme: 'dark',
    userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 '
      + '(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1',
  });
  const mine = await laptop.newPage();
  await createAccountOnLoginPage(mine, 'devices@example.com');
  const other = await phone.newPage();
  await signInOnLoginPage(other, 'devices@example.com');

  await mine.reload();
  await accountShows(mine, 'devices@example.com', 2);
  const phoneRow = mine.locator('#sessions li:not([data-current])');
  assert.match(await phoneRow.innerText(), /Safari on iPhone/);
  assert.match(await mine.locator('#sessions li[data-current]').innerText(), /This device/);
  await mine.screenshot({ path: join(ARTIFACTS, 'account.png'), fullPage: true });
  await other.screenshot({ path: join(ARTIFACTS, 'account-phone.png'), fullPage: true });

  await phoneRow.getByRole('button', { name: /Sign out/ }).click();
  await accountShows(mine, 'devices@example.com', 1);
  await mine.getByRole('status').filter({ hasText: 'Signed out Safari on iPhone' }).waitFor();

  await other.reload();
  await other.waitForURL('**/login?reason=session_revoked');
  await other.getByRole('status').filter({ hasText: 'session was ended' }).waitFor();
  await laptop.close();
  await phone.close();
});

test('sign out everywhere else, then sign out', async () => {
  const a = await browser.newContext();
  const b = await browser.newContext();
  const mine = await a.newPage();
  await signInOnLoginPage(mine, 'first@example.com');
  await signInOnLoginPage(await b.newPage(), 'first@example.com');
  await mine.reload();
  await mine.waitForFunction(() => document.querySelectorAll('#sessions li').length >= 2);
  await mine.getByRole('button', { name: 'Sign out everywhere else' }).click();
  await accountShows(mine, 'first@example.com', 1);
  await mine.locator('header').getByRole('button', { name: 'Sign out' }).click();
  await mine.waitForURL('**/login?reason=signed_out');
  await mine.goto(`${tessera.base}/account`);
  await mine.waitForURL('**/login?reason=invalid_token');
  await mine.getByRole('status').filter({ hasText: 'Please sign in' }).waitFor();
  await a.close();
  await b.close();
});

test('the example Express API answers the page through the browser client, with CSRF', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const csrfHeaders = [];
  page.on('request', (r) => {
    if (r.url().startsWith(`${api.origin}/api/`) && r.method() === 'POST') {
      csrfHeaders.push(r.headers()['x-csrf-token']);
    }
  });
  await page.goto(`${api.origin}/`);
  await page.waitForFunction(() => window.example);
  const result = await page.evaluate(async (password) => {
    const { client, api: call } = window.example;
    await client.register('notes@example.com', password);
    await client.login('notes@example.com', password);
    const added = await call('POST', '/api/notes', { text: 'first note' });
    const listed = await call('GET', '/api/notes');
    const me = await client.me();
    return { added, listed, me };
  }, PASSWORD);
  assert.equal(result.added.text, 'first note');
  assert.deepEqual(result.listed.notes.map((n) => n.text), ['first note']);
  assert.equal(result.listed.userId, result.me.user.id);
  assert.equal(csrfHeaders.length, 1);
  assert.ok(csrfHeaders[0], 'the unsafe call carried X-CSRF-Token');

  // Past the expiry the API answers token_expired; the client refreshes through Tessera
  // (cross-origin, credentials, CORS) and retries.
  await pastExpiry();
  const before = await refreshCount();
  const later = await page.evaluate(async () => {
    const { api: call } = window.example;
    await call('POST', '/api/notes', { text: 'second note' });
    return (await call('GET', '/api/notes')).notes.map((n) => n.text);
  });
  assert.deepEqual(later, ['first note', 'second note']);
  assert.equal(await refreshCount() - before, 1);

  // The same cookies without the header: the middleware refuses.
  const forged = await page.evaluate(async () => {
    const r = await fetch('/api/notes', {
      method: 'POST', credentials: 'include',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'forged' }),
    });
    return { status: r.status, body: await r.json() };
  });
  assert.deepEqual([forged.status, forged.body.code], [403, 'csrf_failed']);
  await context.close();
});

test('a page of an origin Tessera does not list cannot call it', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${stranger.origin}/`);
  const outcomes = await page.evaluate(async (base) => {
    const attempt = async (path, init) => {
      try {
        const r = await fetch(base + path, { credentials: 'include', ...init });
        return `read ${r.status}`;
      } catch (e) {
        return e.name;
      }
    };
    return [
      await attempt('/v1/auth/me'),
      await attempt('/v1/auth/login', {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: 'first@example.com', password: 'x', transport: 'cookie' }),
      }),
    ];
  }, tessera.base);
  assert.deepEqual(outcomes, ['TypeError', 'TypeError']);

  // The listed origin, in the same browser, can.
  await page.goto(`${api.origin}/`);
  const listed = await page.evaluate(async (base) => (await fetch(`${base}/healthz`, { credentials: 'include' })).status, tessera.base);
  assert.equal(listed, 200);
  await context.close();
});

test('being rate limited on /login says how long to wait', async () => {
  const strict = await startTessera({ TESSERA_LOGIN_RATE: '2' });
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${strict.base}/login`);
    await page.getByLabel('Email').fill('nobody@example.com');
    await page.getByLabel('Password').fill('not the password');
    for (let i = 0; i < 2; i++) {
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      await page.getByRole('alert').filter({ hasText: 'don’t match' }).waitFor();
      await page.getByRole('button', { name: 'Sign in', exact: true }).and(page.locator(':enabled')).waitFor();
    }
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    const alert = page.getByRole('alert').filter({ hasText: 'Too many attempts' });
    await alert.waitFor();
    assert.match(await alert.innerText(), /wait \d+ seconds?/);
  } finally {
    await context.close();
    await strict.stop();
  }
});

test('a SPA on localhost against Tessera on 127.0.0.1: the cookie login says why nothing will work', async () => {
  // localhost and 127.0.0.1 are different sites: the browser drops Tessera's SameSite cookies
  // from the login's answer. Without the check, login() resolved and every call then failed
  // with "no access token".
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${spa.origin}/`);
  const outcome = await page.evaluate(async ({ base, password }) => {
    const { TesseraClient } = await import('/client/index.js');
    const client = new TesseraClient({ baseUrl: base, transport: 'cookie' });
    await client.register('spa@example.com', password);
    try {
      await client.login('spa@example.com', password);
      return { resolved: true, signedIn: client.signedIn };
    } catch (e) {
      return { name: e.name, code: e.code, message: e.message, signedIn: client.signedIn };
    }
  }, { base: tessera.base, password: PASSWORD });
  assert.equal(outcome.name, 'CookiesNotStoredError', JSON.stringify(outcome));
  assert.equal(outcome.code, 'cookies_not_stored');
  assert.match(outcome.message, /this page \(http:\/\/localhost:\d+\)/);
  assert.match(outcome.message, /localhost and 127\.0\.0\.1 are different sites/);
  assert.equal(outcome.signedIn, false);
  assert.deepEqual((await context.cookies(tessera.base)).map((c) => c.name), [], 'indeed no cookie');
  await context.close();
});

test('/docs renders the API reference from /openapi.json, under the pages\u2019 CSP', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) refused.push(m.text()); });
  await page.goto(`${tessera.base}/`);
  await page.getByRole('link', { name: 'API reference' }).click();
  await page.waitForURL('**/docs');
  await page.locator('#toc a', { hasText: 'POST /v1/auth/login' }).waitFor();
  const login = page.locator('#login');
  assert.match(await login.innerText(), /Request body \(application\/json\)[\s\S]*email[\s\S]*password/);
  assert.match(await login.innerText(), /invalid_credentials/);
  assert.ok(await page.locator('.op').count() >= 10, 'every operation has a card');
  await page.screenshot({ path: join(ARTIFACTS, 'docs.png'), fullPage: false });
  assert.deepEqual(refused, []);
  await context.close();
});

test('/login?return_to= sends the user back to a listed origin or a path of ours, and nowhere else', async () => {
  const target = `${spa.origin}/welcome?from=login`;
  let context = await browser.newContext();
  let page = await context.newPage();
  await page.goto(`${tessera.base}/login?return_to=${encodeURIComponent(target)}`);
  // The pages carry the configured brand.
  await page.locator('.brand', { hasText: 'Acme Notes' }).waitFor();
  assert.match(await page.title(), /Acme Notes$/);
  assert.equal(await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()), '#0a7d4f');
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill('returning@example.com');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(target);
  // Signed in already: /login sends straight on to the target too.
  await page.goto(`${tessera.base}/login?return_to=${encodeURIComponent(target)}`);
  await page.waitForURL(target);
  await context.close();

  const ours = new URL(tessera.base).origin;
  for (const [bad, lands] of [
    ['https://evil.example/phish', '/account'],
    ['//evil.example/x', '/account'],
    ['/\\evil.example/x', '/account'],
    ['javascript:alert(1)', '/account'],
    [`${stranger.origin}/x`, '/account'],
    ['/docs', '/docs'],
  ]) {
    context = await browser.newContext();
    page = await context.newPage();
    await page.goto(`${tessera.base}/login?return_to=${encodeURIComponent(bad)}`);
    await page.getByLabel('Email').fill('returning@example.com');
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL(`**${lands}`);
    assert.equal(new URL(page.url()).origin, ours, `${bad} must not leave ${ours}`);
    await context.close();
  }
});

test('changing the password on /account signs the other devices out; the new password works', async () => {
  const laptop = await browser.newContext();
  const phone = await browser.newContext();
  const a = await laptop.newPage();
  const b = await phone.newPage();
  await createAccountOnLoginPage(a, 'changer@example.com');
  await signInOnLoginPage(b, 'changer@example.com');
  await accountShows(a, 'changer@example.com');
  await a.getByLabel('Current password').fill('not the password');
  await a.getByLabel('New password').fill('a brand new password');
  await a.getByRole('button', { name: 'Change password' }).click();
  await a.locator('#error', { hasText: 'current password is not right' }).waitFor();
  await a.getByLabel('Current password').fill(PASSWORD);
  await a.getByRole('button', { name: 'Change password' }).click();
  await a.locator('#notice', { hasText: 'Password changed' }).waitFor();
  await accountShows(a, 'changer@example.com', 1);
  await b.reload();
  await b.waitForURL('**/login?reason=session_revoked');
  const again = await browser.newContext();
  const c = await again.newPage();
  await c.goto(`${tessera.base}/login`);
  await c.getByLabel('Email').fill('changer@example.com');
  await c.getByLabel('Password').fill('a brand new password');
  await c.getByRole('button', { name: 'Sign in', exact: true }).click();
  await c.waitForURL('**/account');
  await Promise.all([laptop.close(), phone.close(), again.close()]);
});
