// The mobile-style client of auth.js against the real Tessera binary: an asynchronous store
// that survives a restart of the "app", the body transport, an expiry crossed on resume,
// Expo SecureStore's key rules, and sign-out. Tessera runs with a 2 s access-token lifetime.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CookiesNotStoredError, TesseraClient } from '@tessera-auth/client';

import { startTessera } from '../../clients/node/test/tessera-server.js';
import { createAuth, secureStoreAdapter } from './auth.js';

const PASSWORD = 'a long enough password';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let tessera;
let dir;

/** AsyncStorage's shape: every call a promise, settled a little later, the data in a file
 * (so a second store on the same file is the app after a restart). */
function fileStore(path) {
  const read = () => {
    try {
      return JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      return {};
    }
  };
  const later = async (f) => { await sleep(3); return f(); };
  return {
    getItem: (key) => later(() => read()[key] ?? null),
    setItem: (key, value) => later(() => writeFileSync(path, JSON.stringify({ ...read(), [key]: value }))),
    removeItem: (key) => later(() => { const all = read(); delete all[key]; writeFileSync(path, JSON.stringify(all)); }),
  };
}

before(async () => {
  tessera = await startTessera({ TESSERA_ACCESS_TTL: '2' });
  dir = mkdtempSync(join(tmpdir(), 'tessera-mobile-'));
  const r = await fetch(`${tessera.base}/v1/auth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'phone@example.com', password: PASSWORD }),
  });
  assert.equal(r.status, 201);
}, { timeout: 60_000 });

after(async () => {
  await tessera?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, { timeout: 60_000 });

test('sign in, restart the app, resume past an expiry, sign out: all from an asynchronous store', async () => {
  const file = join(dir, 'async-storage.json');
  const app = createAuth({ baseUrl: tessera.base, storage: fileStore(file) });
  assert.equal(await app.restore(), false);
  const wrong = await app.signIn('phone@example.com', 'not the password');
  assert.equal(wrong.code, 'invalid_credentials');
  const { user } = await app.signIn('phone@example.com', PASSWORD);
  assert.equal(user.email, 'phone@example.com');
  const stored = JSON.parse(JSON.parse(readFileSync(file, 'utf8'))['notes-app:state']);
  assert.ok(stored.refreshToken && stored.accessToken, 'the tokens are in the app’s store');

  // The app is killed and started again: a new client on the same store.
  const events = [];
  const restarted = createAuth({ baseUrl: tessera.base, storage: fileStore(file), onSignedOut: (e) => events.push(e.code) });
  assert.equal(await restarted.restore(), true);
  assert.equal((await restarted.resume()).id, user.id);

  // Back from the background after the access token expired: resume refreshes and goes on.
  await sleep(3200);
  assert.equal((await restarted.resume()).id, user.id);
  const after = JSON.parse(JSON.parse(readFileSync(file, 'utf8'))['notes-app:state']);
  assert.notEqual(after.refreshToken, stored.refreshToken, 'rotated, and the new one stored');
  const api = await restarted.client.fetch(`${tessera.base}/v1/auth/sessions`);
  assert.equal(api.status, 200);

  await restarted.signOut();
  assert.equal(await restarted.restore(), false);
  assert.deepEqual(events, ['logged_out']);
  // The refresh token presented at the sign-out is over on the server too.
  const again = await fetch(`${tessera.base}/v1/auth/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: after.refreshToken }),
  });
  assert.equal(again.status, 401);
});

test('Expo SecureStore through the adapter: keys it accepts, the session kept in it', async () => {
  const items = new Map();
  const SecureStore = {
    check(key) {
      if (!/^[A-Za-z0-9._-]+$/.test(key)) throw new Error(`Invalid key provided to SecureStore: ${key}`);
    },
    async getItemAsync(key) { this.check(key); return items.get(key) ?? null; },
    async setItemAsync(key, value) { this.check(key); items.set(key, value); },
    async deleteItemAsync(key) { this.check(key); items.delete(key); },
  };
  const app = createAuth({ baseUrl: tessera.base, storage: secureStoreAdapter(SecureStore) });
  assert.ok((await app.signIn('phone@example.com', PASSWORD)).user);
  assert.deepEqual([...items.keys()], ['notes-app.state']);
  assert.equal((await app.resume()).email, 'phone@example.com');
  await app.signOut();
});

test('the cookie transport outside a browser fails at sign-in, saying so', async () => {
  const client = new TesseraClient({ baseUrl: tessera.base, transport: 'cookie', channel: null });
  await assert.rejects(client.login('phone@example.com', PASSWORD), (e) => {
    assert.ok(e instanceof CookiesNotStoredError);
    assert.match(e.message, /transport: 'body'/);
    return true;
  });
});
