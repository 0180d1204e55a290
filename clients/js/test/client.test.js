// Unit tests of the browser client against an in-process fake of Tessera's HTTP answers:
// single-flight refresh within a page and across tabs, the newest refresh token always,
// sign-out events, CSRF and bearer headers, and the typed error for every code.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  TesseraClient, TesseraError, ERROR_CLASSES, RateLimitedError, RefreshTokenReusedError,
  ValidationFailedError, errorFromResponse, CookiesNotStoredError, MfaRequiredError, InvalidMfaCodeError,
} from '../dist/index.js';

const json = (status, body, headers = {}) =>
  new Response(body === undefined ? null : JSON.stringify(body), {
    status, headers: { 'content-type': 'application/json', ...headers },
  });
const problem = (status, code, headers) =>
  json(status, { type: 'about:blank', title: 'x', status, code, detail: `${code} happened` }, headers);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fake Tessera + resource API. Access tokens are `at<N>`, refresh tokens `rt<N>`; only
 * the newest of each is accepted; an older refresh token is reuse (the session dies). */
function fakeServer({ refreshDelay = 20 } = {}) {
  // `dropsCookies`: the browser kept none of the cookies (another site): cookie-authenticated
  // calls then carry nothing.
  const s = { generation: 1, refreshes: 0, revoked: false, requests: [], dropsCookies: false };
  s.fetch = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const headers = new Headers(init.headers);
    const text = init.body ?? (input instanceof Request ? await input.text() : '');
    const body = text ? JSON.parse(text) : undefined;
    s.requests.push({ path: url.pathname, method: init.method ?? 'GET', headers, body, credentials: init.credentials });
    switch (url.pathname) {
      case '/v1/auth/login':
        return json(200, {
          access_token: body.transport === 'cookie' ? undefined : `at${s.generation}`,
          refresh_token: body.transport === 'cookie' ? undefined : `rt${s.generation}`,
          csrf_token: body.transport === 'cookie' ? 'csrf-1' : undefined,
          token_type: 'Bearer', expires_in: 2, session_id: 'sid-1',
          user: { id: 'u1', email: body.email, created_at: '2026-01-01T00:00:00Z' },
        });
      case '/v1/auth/refresh': {
        s.refreshes += 1;
        await sleep(refreshDelay);
        if (s.revoked) return problem(401, 'session_revoked');
        if (body && body.refresh_token !== `rt${s.generation}`) {
          s.revoked = true;
          return problem(401, 'refresh_token_reused');
        }
        s.generation += 1;
        s.expired = false;
        return json(200, {
          access_token: body ? `at${s.generation}` : undefined,
          refresh_token: body ? `rt${s.generation}` : undefined,
          csrf_token: body ? undefined : 'csrf-1',
          expires_in: 2, session_id: 'sid-1', user: { id: 'u1', email: 'a@b.c', created_at: '' },
        });
      }
      default: {
        if (s.revoked) return problem(401, 'session_revoked');
        const auth = headers.get('authorization');
        if (!auth && s.dropsCookies) return problem(401, 'invalid_token');
        if (auth && auth !== `Bearer at${s.generation}`) return problem(401, 'token_expired');
        if (s.expired) return problem(401, 'token_expired');
        return json(200, { ok: true, path: url.pathname });
      }
    }
  };
  return s;
}

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
}

/** A lock manager shared by "tabs": one holder at a time, like navigator.locks (with
 * `ifAvailable`: the callback gets null when the lock is held or asked for). */
function sharedLocks() {
  const tails = new Map();
  const pending = new Map();
  return {
    request(name, options, task) {
      if (options.ifAvailable && (pending.get(name) ?? 0) > 0) return Promise.resolve().then(() => task(null));
      pending.set(name, (pending.get(name) ?? 0) + 1);
      const prev = tails.get(name) ?? Promise.resolve();
      const run = prev.then(() => task({ name })).finally(() => pending.set(name, pending.get(name) - 1));
      tails.set(name, run.catch(() => {}));
      return run;
    },
  };
}

/** Channels of one name delivering to each other (not to themselves), like BroadcastChannel. */
function channelHub() {
  const members = new Set();
  return () => {
    const listeners = [];
    const ch = {
      postMessage: (data) => { for (const m of members) if (m !== ch) m.listeners.forEach((l) => l({ data })); },
      addEventListener: (_type, l) => listeners.push(l),
      close: () => members.delete(ch),
      listeners,
    };
    members.add(ch);
    return ch;
  };
}

const tab = (server, storage, extra = {}) => new TesseraClient({
  baseUrl: 'https://auth.test/', transport: 'bearer', storage, fetch: server.fetch,
  locks: sharedLocks(), channel: null, apiOrigins: ['https://api.test'], ...extra,
});

test('concurrent calls that all see an expired token share one refresh', async () => {
  const server = fakeServer();
  const client = tab(server, memoryStorage());
  await client.login('a@b.c', 'password1');
  server.expired = true;
  const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => client.fetch(`https://api.test/r${i}`)));
  assert.deepEqual(answers.map((r) => r.status), Array(10).fill(200));
  assert.equal(server.refreshes, 1);
  const retried = server.requests.filter((r) => r.path.startsWith('/r') && r.headers.get('authorization') === 'Bearer at2');
  assert.equal(retried.length, 10, 'every call retried with the new token');
});

test('signing in again presents the session this device holds, for the account lock', async () => {
  const server = fakeServer();
  const client = tab(server, memoryStorage());
  await client.login('a@b.c', 'password1');
  await client.login('a@b.c', 'password1');
  const logins = server.requests.filter((r) => r.path === '/v1/auth/login');
  assert.equal(logins[0].body.refresh_token, undefined, 'nothing held at the first sign-in');
  assert.equal(logins[1].body.refresh_token, 'rt1', 'the held refresh token at the second');
});

test('two tabs expiring together refresh once under the shared lock', async () => {
  const server = fakeServer({ refreshDelay: 40 });
  const storage = memoryStorage();
  const locks = sharedLocks();
  const a = tab(server, storage, { locks });
  const b = tab(server, storage, { locks });
  await a.login('a@b.c', 'password1');
  server.expired = true;
  const answers = await Promise.all([a.fetch('https://api.test/x'), b.fetch('https://api.test/y'),
    a.fetch('https://api.test/z'), b.fetch('https://api.test/w')]);
  assert.deepEqual(answers.map((r) => r.status), [200, 200, 200, 200]);
  assert.equal(server.refreshes, 1);
  assert.equal(server.revoked, false);
});

test('without Web Locks a storage lease still lets only one tab refresh', async () => {
  const server = fakeServer({ refreshDelay: 80 });
  const storage = memoryStorage();
  const a = tab(server, storage, { locks: null });
  const b = tab(server, storage, { locks: null });
  await a.login('a@b.c', 'password1');
  server.expired = true;
  const answers = await Promise.all([a.fetch('https://api.test/x'), b.fetch('https://api.test/y')]);
  assert.deepEqual(answers.map((r) => r.status), [200, 200]);
  assert.equal(server.refreshes, 1);
});

test('a tab that slept presents the newest refresh token, never the one it saw last', async () => {
  const server = fakeServer();
  const storage = memoryStorage();
  const awake = tab(server, storage);
  const asleep = tab(server, storage);
  await awake.login('a@b.c', 'password1');
  assert.equal(asleep.signedIn, true, 'tabs share the session');
  for (let i = 0; i < 3; i++) {
    server.expired = true;
    assert.equal((await awake.fetch('https://api.test/x')).status, 200);
  }
  server.expired = true;
  assert.equal((await asleep.fetch('https://api.test/y')).status, 200);
  const presented = server.requests.filter((r) => r.path === '/v1/auth/refresh').map((r) => r.body.refresh_token);
  assert.deepEqual(presented, ['rt1', 'rt2', 'rt3', 'rt4']);
  assert.equal(server.revoked, false);
});

test('a dead session fires signed-out here and in other tabs, and the 401 is returned', async () => {
  const server = fakeServer();
  const storage = memoryStorage();
  const hub = channelHub();
  const a = tab(server, storage, { channel: hub() });
  const b = tab(server, storage, { channel: hub() });
  await a.login('a@b.c', 'password1');
  const seen = { a: [], b: [] };
  a.onSignedOut((e) => seen.a.push(e.code));
  b.onSignedOut((e) => seen.b.push(e.code));
  // Someone else rotated the token: ours is now rotated out.
  server.generation = 5;
  server.expired = true;
  const r = await a.fetch('https://api.test/x');
  assert.equal(r.status, 401);
  assert.deepEqual(seen, { a: ['refresh_token_reused'], b: ['refresh_token_reused'] });
  assert.equal(a.signedIn, false);
  await assert.rejects(a.me(), (e) => e instanceof TesseraError && e.status === 401);
});

test('cookie transport sends credentials, and the CSRF header on unsafe requests only', async () => {
  const server = fakeServer();
  const client = tab(server, memoryStorage(), { transport: 'cookie' });
  await client.login('a@b.c', 'password1');
  await client.fetch('https://api.test/read');
  await client.fetch('https://api.test/write', { method: 'POST', body: '{}' });
  await client.logoutAll({ scope: 'others' });
  const [read, write, all] = server.requests.filter((r) => !['/v1/auth/login', '/v1/auth/me'].includes(r.path));
  assert.equal(read.credentials, 'include');
  assert.equal(read.headers.get('x-csrf-token'), null);
  assert.equal(write.headers.get('x-csrf-token'), 'csrf-1');
  assert.equal(all.path, '/v1/auth/logout-all');
  assert.deepEqual(all.body, { scope: 'others' });
  assert.equal(all.headers.get('x-csrf-token'), 'csrf-1');
  assert.equal(server.requests[0].body.transport, 'cookie');
});

test('every problem code of the contract surfaces as its own error class', async () => {
  for (const [code, Class] of Object.entries(ERROR_CLASSES)) {
    const e = await errorFromResponse(problem(code === 'rate_limited' ? 429 : 401, code, { 'retry-after': '7' }));
    assert.ok(e instanceof Class, code);
    assert.ok(e instanceof TesseraError, code);
    assert.equal(e.code, code);
    assert.equal(e.message, `${code} happened`);
  }
  const limited = await errorFromResponse(problem(429, 'rate_limited', { 'retry-after': '7' }));
  assert.ok(limited instanceof RateLimitedError);
  assert.equal(limited.retryAfter, 7);
  const invalid = await errorFromResponse(json(422, { code: 'validation_failed', errors: [{ field: 'email', message: 'bad' }] }));
  assert.ok(invalid instanceof ValidationFailedError);
  assert.deepEqual(invalid.errors, [{ field: 'email', message: 'bad' }]);
  const proxy = await errorFromResponse(new Response('<html>bad gateway</html>', { status: 502 }));
  assert.equal(proxy.constructor, TesseraError);
  assert.equal(proxy.code, 'http_502');
  assert.ok(!(proxy instanceof RefreshTokenReusedError));
});

test('cookie transport: a tab whose storage has not yet seen the other tab refresh does not refresh again', async () => {
  const server = fakeServer({ refreshDelay: 40 });
  const locks = sharedLocks();
  // Separate storages: the worst case of localStorage reaching the other tab's process late.
  const a = tab(server, memoryStorage(), { transport: 'cookie', locks });
  const b = tab(server, memoryStorage(), { transport: 'cookie', locks });
  await a.login('a@b.c', 'password1');
  await b.login('a@b.c', 'password1');
  server.expired = true;
  const answers = await Promise.all([a.fetch('https://api.test/x'), b.fetch('https://api.test/y')]);
  assert.deepEqual(answers.map((r) => r.status), [200, 200]);
  assert.equal(server.refreshes, 1, 'the cookie jar showed the refresh the storage did not');
});

test('tokens go only to Tessera, the page and the named API origins', async () => {
  const server = fakeServer();
  for (const transport of ['bearer', 'cookie']) {
    const client = tab(server, memoryStorage(), { transport });
    await client.login('a@b.c', 'password1');
    server.requests.length = 0;
    await client.fetch('https://api.test/mine', { method: 'POST', body: '{}' });
    await client.fetch('https://cdn.elsewhere.test/x', { method: 'POST', body: '{}' });
    await client.fetch('https://api.test.elsewhere.test/y', { method: 'POST', body: '{}' });
    const [mine, cdn, lookalike] = server.requests;
    const token = (r) => r.headers.get('authorization') ?? r.headers.get('x-csrf-token');
    assert.ok(token(mine), `${transport}: the named API gets its token`);
    assert.equal(token(cdn), null, `${transport}: another origin gets nothing`);
    assert.equal(token(lookalike), null, `${transport}: a look-alike origin gets nothing`);
    assert.equal(cdn.credentials, undefined);
  }
});

test('a Request with a body is retried intact after the refresh', async () => {
  const server = fakeServer();
  const client = tab(server, memoryStorage());
  await client.login('a@b.c', 'password1');
  server.expired = true;
  const r = await client.fetch(new Request('https://api.test/notes', { method: 'POST', body: '{"text":"hi"}' }));
  assert.equal(r.status, 200);
  const posts = server.requests.filter((q) => q.path === '/notes');
  assert.deepEqual(posts.map((q) => q.body), [{ text: 'hi' }, { text: 'hi' }]);
});

test('after a sign-out in another tab, a refresh presents nothing and reports signed out', async () => {
  const server = fakeServer();
  const storage = memoryStorage();
  const a = tab(server, storage);
  const b = tab(server, storage);
  await a.login('a@b.c', 'password1');
  await b.logout();
  const events = [];
  a.onSignedOut((e) => events.push(e.code));
  await assert.rejects(a.refresh(), (e) => e.code === 'invalid_refresh_token');
  assert.deepEqual(events, ['invalid_refresh_token']);
  assert.equal(server.requests.filter((r) => r.path === '/v1/auth/refresh').length, 0);
});

test('transports are named as on the wire; bearer is the old name of body', async () => {
  const server = fakeServer();
  assert.equal(new TesseraClient({ baseUrl: 'https://auth.test', transport: 'bearer', fetch: server.fetch }).transport, 'body');
  assert.equal(new TesseraClient({ baseUrl: 'https://auth.test', fetch: server.fetch }).transport, 'cookie');
  assert.throws(() => new TesseraClient({ baseUrl: 'https://auth.test', transport: 'header' }), TypeError);
  for (const transport of ['body', 'bearer']) {
    const client = tab(server, memoryStorage(), { transport });
    await client.login('a@b.c', 'password1');
    assert.equal(server.requests.at(-1).body.transport, 'body');
    assert.equal((await client.fetch('https://api.test/x')).status, 200);
    assert.equal(server.requests.at(-1).headers.get('authorization'), 'Bearer at1');
  }
});

test('a cookie login whose cookies the browser dropped throws CookiesNotStoredError', async () => {
  const server = fakeServer();
  server.dropsCookies = true; // The page is on localhost, Tessera on 127.0.0.1, say.
  const client = tab(server, memoryStorage(), { transport: 'cookie' });
  await assert.rejects(client.login('a@b.c', 'password1'), (e) => {
    assert.ok(e instanceof CookiesNotStoredError, String(e));
    assert.ok(e instanceof TesseraError);
    assert.equal(e.code, 'cookies_not_stored');
    assert.match(e.message, /localhost and 127\.0\.0\.1 are different sites/);
    assert.match(e.message, /transport: 'body'/);
    return true;
  });
  assert.equal(client.signedIn, false, 'no session is kept that no call could use');

  // Kept: the check costs one request, and can be turned off.
  server.dropsCookies = false;
  const ok = tab(server, memoryStorage(), { transport: 'cookie' });
  await ok.login('a@b.c', 'password1');
  assert.equal(ok.signedIn, true);
  const unchecked = tab(server, memoryStorage(), { transport: 'cookie', checkCookies: false });
  server.requests.length = 0;
  await unchecked.login('a@b.c', 'password1');
  assert.deepEqual(server.requests.map((r) => r.path), ['/v1/auth/login']);
});

test('a cookie-mode expiry in one tab costs no /v1/auth/me probe', async () => {
  const server = fakeServer();
  const client = tab(server, memoryStorage(), { transport: 'cookie' });
  await client.login('a@b.c', 'password1');
  server.expired = true;
  server.requests.length = 0;
  assert.equal((await client.fetch('https://api.test/x')).status, 200);
  assert.deepEqual(server.requests.map((r) => `${r.method} ${r.path}`),
    ['GET /x', 'POST /v1/auth/refresh', 'GET /x'], 'one 401, the refresh, the retry');
});

test('an asynchronous store (AsyncStorage, a keychain) works like localStorage', async () => {
  const server = fakeServer();
  const items = new Map();
  const later = (value) => new Promise((r) => setTimeout(() => r(value), 2));
  const store = {
    getItem: (k) => later(items.get(k) ?? null),
    setItem: (k, v) => later(void items.set(k, v)),
    removeItem: (k) => later(void items.delete(k)),
  };
  const client = tab(server, store, { transport: 'body' });
  assert.equal(await client.isSignedIn(), false);
  await client.login('a@b.c', 'password1');
  assert.equal(client.signedIn, true);
  server.expired = true;
  const answers = await Promise.all([client.fetch('https://api.test/a'), client.fetch('https://api.test/b')]);
  assert.deepEqual(answers.map((r) => r.status), [200, 200]);
  assert.equal(server.refreshes, 1);
  // The app restarts: a new client on the same store finds the session.
  const restarted = tab(server, store, { transport: 'body' });
  assert.equal(restarted.signedIn, false, 'not read yet');
  assert.equal(await restarted.isSignedIn(), true);
  assert.equal(restarted.signedIn, true);
  assert.equal((await restarted.fetch('https://api.test/c')).status, 200);
  assert.equal(server.requests.at(-1).headers.get('authorization'), 'Bearer at2');
  await restarted.logout();
  assert.equal(await client.isSignedIn(), false);
  assert.equal(server.requests.at(-1).body.refresh_token, 'rt2');
});

test('a sign-in for an account with a second factor throws MfaRequiredError; verifyMfa finishes it', async () => {
  const storage = memoryStorage();
  const requests = [];
  const fetchImpl = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const body = init.body ? JSON.parse(init.body) : undefined;
    requests.push({ path: url.pathname, body });
    if (url.pathname === '/v1/auth/login') {
      return json(200, { mfa_required: true, challenge: 'ch-1', expires_in: 300, methods: ['totp', 'recovery_code'] });
    }
    if (url.pathname === '/v1/auth/mfa/verify') {
      if (body.code !== '123456') return problem(401, 'invalid_mfa_code');
      return json(200, {
        access_token: 'at1', refresh_token: 'rt1', token_type: 'Bearer', expires_in: 60, session_id: 'sid-1',
        user: { id: 'u1', email: 'a@b.c', created_at: '' },
      });
    }
    return problem(404, 'not_found');
  };
  const client = new TesseraClient({ baseUrl: 'http://tessera.test', transport: 'body', storage, fetch: fetchImpl });
  const err = await client.login('a@b.c', 'pw').catch((e) => e);
  assert.ok(err instanceof MfaRequiredError, String(err));
  assert.deepEqual([err.code, err.challenge, err.expiresIn, err.methods], ['mfa_required', 'ch-1', 300, ['totp', 'recovery_code']]);
  assert.equal(client.signedIn, false, 'nothing stored before the code');
  await assert.rejects(client.verifyMfa('ch-1', 'totp', '000000'), InvalidMfaCodeError);
  const result = await client.verifyMfa(err.challenge, 'totp', '123456');
  assert.equal(result.sessionId, 'sid-1');
  assert.equal(client.signedIn, true);
  assert.deepEqual(requests.at(-1).body, { challenge: 'ch-1', method: 'totp', code: '123456' });
});
