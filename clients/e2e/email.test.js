// The pages of the mailed links in Debian's headless Chromium, against the real binary and a
// real SMTP server (aiosmtpd running tests/mail/smtp_sink.py, as the Rust mail tests do): a new
// account confirms its address through /verify#token=, then a forgotten password is reset
// through "Forgot password?", /forgot and /reset#token=, and the new password signs in.
// The Python comes from TESSERA_TEST_SMTP_PYTHON, else the venv the Rust tests make under
// target/mail-venv; without either the tests are skipped (said so).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startTessera } from '../node/test/tessera-server.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const PASSWORD = 'a long enough password';
const NEW_PASSWORD = 'another long password';

const python = process.env.TESSERA_TEST_SMTP_PYTHON ?? join(repoRoot, 'target/mail-venv/bin/python');
const haveSink = existsSync(python)
  && spawnSync(python, ['-c', 'import aiosmtpd']).status === 0;

let sink;
let maildir;
let tessera;
let browser;

async function startSink() {
  maildir = mkdtempSync(join(tmpdir(), 'tessera-mail-'));
  const child = spawn(python, ['-W', 'ignore', join(repoRoot, 'tests/mail/smtp_sink.py'),
    '--port', '0', '--maildir', maildir], { stdio: ['ignore', 'pipe', 'ignore'] });
  const port = await new Promise((resolvePort, reject) => {
    let seen = '';
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = /ready (\d+)/.exec(seen);
      if (match) resolvePort(Number(match[1]));
    });
    child.on('exit', (code) => reject(new Error(`the SMTP sink exited with ${code}: ${seen}`)));
  });
  return { child, port };
}

/** The token after `marker` in the `n`th mail to `to` that has it (waits up to 15 s). */
async function tokenFromMail(to, marker, n = 1) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const found = readdirSync(maildir)
      .filter((f) => f.endsWith('.json'))
      .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
      .map((f) => JSON.parse(readFileSync(join(maildir, f), 'utf8')))
      .filter((m) => m.rcpt_tos.includes(to) && (m.text || '').includes(marker));
    if (found.length >= n) {
      const text = found[n - 1].text;
      return /^[A-Za-z0-9_-]+/.exec(text.slice(text.indexOf(marker) + marker.length))[0];
    }
    assert.ok(Date.now() < deadline, `no mail #${n} to ${to} with ${marker}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  if (!haveSink) return;
  sink = await startSink();
  tessera = await startTessera({
    TESSERA_SMTP_URL: `smtp://127.0.0.1:${sink.port}?tls=none`,
    TESSERA_MAIL_FROM: 'Tessera <no-reply@example.com>',
    TESSERA_COOKIE_SECURE: 'false',
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await tessera?.stop();
  sink?.child.kill();
  if (maildir) rmSync(maildir, { recursive: true, force: true });
});

test('a new account confirms its address, then resets a forgotten password', { skip: !haveSink && 'no aiosmtpd (run the Rust mail tests once, or set TESSERA_TEST_SMTP_PYTHON)' }, async () => {
  const email = 'pages@example.com';
  const context = await browser.newContext();
  const page = await context.newPage();

  // Create the account on /login: /account says the address is not confirmed yet.
  await page.goto(`${tessera.base}/login`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL('**/account');
  await page.getByText('Not confirmed yet').waitFor();

  // The mailed link confirms it.
  const verify = await tokenFromMail(email, '/verify#token=');
  await page.goto(`${tessera.base}/verify#token=${verify}`);
  await page.getByRole('heading', { name: 'Address confirmed' }).waitFor();
  assert.equal(new URL(page.url()).hash, '', 'the token left the address bar');
  await page.goto(`${tessera.base}/account`);
  await page.getByText('Confirmed', { exact: true }).waitFor();
  // The same link again: refused, in words.
  await page.goto(`${tessera.base}/verify#token=${verify}`);
  await page.getByRole('heading', { name: 'Address not confirmed' }).waitFor();

  // Signed out, the password forgotten: "Forgot password?" on /login.
  await page.goto(`${tessera.base}/account`);
  await page.getByRole('button', { name: 'Sign out' }).first().click();
  await page.waitForURL('**/login?**');
  await page.getByRole('link', { name: 'Forgot password?' }).click();
  await page.waitForURL('**/forgot');
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Mail me a link' }).click();
  await page.getByText('a link to reset its password is on its way').waitFor();

  const reset = await tokenFromMail(email, '/reset#token=');
  await page.goto(`${tessera.base}/reset#token=${reset}`);
  await page.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Set password' }).click();
  await page.getByText('Your password is set').waitFor();

  // The new password signs in; the old one no longer does.
  await page.goto(`${tessera.base}/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByText('don’t match').waitFor();
  await page.getByLabel('Password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/account');
  await context.close();
});
