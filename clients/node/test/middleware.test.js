// requireAuth / requireRole against a real Tessera: what it accepts, what it refuses and
// with which problem code, and how often it fetches the JWKS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

import { requireAuth, requireMfa, requireRole, TesseraAuthError } from '../index.js';
import { signIn, startTessera } from './tessera-server.js';

const ACCESS_TTL_S = 3;
let tessera;
let jwksFetches = 0;
let jwksProxy;
let bearer;
let cookieLogin;

/** An HTTP server running `middlewares` then answering `req.auth` as JSON. */
async function listen(...middlewares) {
  const server = createServer((req, res) => {
    let i = 0;
    const next = (err) => {
      if (err) {
        res.statusCode = 500;
        return res.end(String(err));
      }
      const mw = middlewares[i++];
      if (mw) return mw(req, res, next);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.auth));
    };
    next();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** Serves Tessera's JWKS and counts how often it is fetched. */
async function countingJwks() {
  const server = createServer(async (_req, res) => {
    jwksFetches += 1;
    const upstream = await fetch(`${tessera.base}/.well-known/jwks.json`);
    res.setHeader('content-type', 'application/json');
    res.end(await upstream.text());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/jwks.json`, close: () => server.close() };
}

const options = () => ({ issuer: 'http://127.0.0.1:8080', audience: 'tessera', jwksUrl: jwksProxy.url });

async function call(app, { token, cookie, method = 'GET', csrf } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (cookie) headers.cookie = cookie;
  if (csrf) headers['x-csrf-token'] = csrf;
  const r = await fetch(`${app.url}/thing`, { method, headers });
  const body = await r.json();
  return { status: r.status, body, type: r.headers.get('content-type') };
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));
const headerOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url'));

before(async () => {
  tessera = await startTessera({ TESSERA_ACCESS_TTL: String(ACCESS_TTL_S) });
  jwksProxy = await countingJwks();
  bearer = await signIn(tessera.base, 'bearer@example.com');
  cookieLogin = await signIn(tessera.base, 'cookie@example.com', { transport: 'cookie' });
}, { timeout: 60_000 });

after(async () => {
  jwksProxy?.close();
  await tessera?.stop();
}, { timeout: 60_000 });

test('a valid bearer token passes, with the caller on req.auth', async () => {
  const app = await listen(requireAuth(options()));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const r = await call(app, { token });
  app.close();
  assert.equal(r.status, 200);
  assert.equal(r.body.userId, bearer.user.id);
  assert.equal(r.body.sessionId, claimsOf(token).sid);
  assert.deepEqual(r.body.roles, []);
});

test('the access cookie passes reads; unsafe requests also need the CSRF header', async () => {
  const app = await listen(requireAuth(options()));
  const { cookies } = await signIn(tessera.base, 'cookie@example.com', { transport: 'cookie' });
  const cookie = `tessera_at=${cookies.tessera_at}; tessera_csrf=${cookies.tessera_csrf}`;
  const read = await call(app, { cookie });
  const unguarded = await call(app, { cookie, method: 'POST' });
  const wrong = await call(app, { cookie, method: 'POST', csrf: 'not-the-token' });
  const guarded = await call(app, { cookie, method: 'POST', csrf: cookies.tessera_csrf });
  app.close();
  assert.equal(read.status, 200);
  assert.equal(read.body.userId, cookieLogin.user.id);
  assert.deepEqual([unguarded.status, unguarded.body.code], [403, 'csrf_failed']);
  assert.deepEqual([wrong.status, wrong.body.code], [403, 'csrf_failed']);
  assert.equal(unguarded.type, 'application/problem+json');
  assert.equal(guarded.status, 200);
});

test('no token, a malformed one, a wrong audience or issuer: 401 invalid_token', async () => {
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const apps = {
    right: await listen(requireAuth(options())),
    otherAudience: await listen(requireAuth({ ...options(), audience: 'another-api' })),
    otherIssuer: await listen(requireAuth({ ...options(), issuer: 'https://elsewhere.example' })),
  };
  const results = [
    await call(apps.right, {}),
    await call(apps.right, { token: 'not.a.jwt' }),
    await call(apps.right, { token: `${token}x` }),
    await call(apps.otherAudience, { token }),
    await call(apps.otherIssuer, { token }),
  ];
  Object.values(apps).forEach((a) => a.close());
  for (const r of results) {
    assert.deepEqual([r.status, r.body.code, r.type], [401, 'invalid_token', 'application/problem+json']);
  }
});

test('alg none and a key supplied in the header are refused', async () => {
  const app = await listen(requireAuth(options()));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const real = headerOf(token);
  const unsigned = `${b64({ ...real, alg: 'none' })}.${token.split('.')[1]}.`;
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
  // The attacker's own key, in the header, under Tessera's real kid.
  const withJwk = await new SignJWT(claimsOf(token))
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: real.kid, jwk: await exportJWK(publicKey) })
    .sign(privateKey);
  const results = [await call(app, { token: unsigned }), await call(app, { token: withJwk })];
  app.close();
  for (const r of results) assert.deepEqual([r.status, r.body.code], [401, 'invalid_token']);
});

test('unknown kids are refused without refetching the JWKS for each', async () => {
  const app = await listen(requireAuth(options()));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  assert.equal((await call(app, { token })).status, 200);
  const fetchesBefore = jwksFetches;
  const { privateKey } = await generateKeyPair('EdDSA');
  for (let i = 0; i < 5; i++) {
    const forged = await new SignJWT(claimsOf(token))
      .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: `not-tessera-${i}` })
      .sign(privateKey);
    const r = await call(app, { token: forged });
    assert.deepEqual([r.status, r.body.code], [401, 'invalid_token']);
  }
  app.close();
  assert.equal(jwksFetches - fetchesBefore, 0, 'within the cooldown an unknown kid fetches nothing');
});

test('an expired token is 401 token_expired (a refresh will help)', async () => {
  const app = await listen(requireAuth(options()));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  assert.equal((await call(app, { token })).status, 200);
  const waitMs = claimsOf(token).exp * 1000 - Date.now() + 1100;
  await new Promise((r) => setTimeout(r, Math.max(waitMs, 0)));
  const r = await call(app, { token });
  app.close();
  assert.deepEqual([r.status, r.body.code], [401, 'token_expired']);
});

test('requireRole answers 403 without the role, and passes with it', async () => {
  const app = await listen(requireAuth(options()), requireRole('admin'));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const r = await call(app, { token });
  app.close();
  assert.deepEqual([r.status, r.body.code], [403, 'forbidden']);

  let passed = false;
  const res = { setHeader() {}, end() { throw new Error('refused an admin'); } };
  requireRole('auditor', 'admin')({ auth: { roles: ['admin'] } }, res, () => { passed = true; });
  assert.ok(passed);
});

test('requireMfa answers 403 without a second factor or a recent sign-in', async () => {
  const app = await listen(requireAuth(options()), requireMfa());
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const r = await call(app, { token });
  app.close();
  assert.deepEqual([r.status, r.body.code], [403, 'mfa_required']);
  assert.deepEqual(claimsOf(token).amr, ['pwd']);

  const now = Math.floor(Date.now() / 1000);
  const outcome = (auth, options) => {
    let status = 'passed';
    const res = { statusCode: 0, setHeader() {}, end(body) { status = JSON.parse(body).code; } };
    requireMfa(options)({ auth }, res, () => {});
    return status;
  };
  assert.equal(outcome({ amr: ['pwd', 'otp', 'mfa'], authTime: now }), 'passed');
  assert.equal(outcome({ amr: ['pwd', 'otp', 'mfa'], authTime: now - 601 }, { maxAge: 600 }), 'reauthentication_required');
  assert.equal(outcome({ amr: ['pwd'], authTime: now }, { mfa: false, maxAge: 600 }), 'passed');
  assert.equal(outcome({ amr: ['pwd'] }, { mfa: false, maxAge: 600 }), 'reauthentication_required');
});

test('an unknown kid refetches the JWKS once the cooldown allows (a rotated-in key)', async () => {
  const app = await listen(requireAuth({ ...options(), jwksCooldown: 0 }));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  assert.equal((await call(app, { token })).status, 200);
  const fetchesBefore = jwksFetches;
  const { privateKey } = await generateKeyPair('EdDSA');
  const forged = await new SignJWT(claimsOf(token))
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'rotated-in-later' })
    .sign(privateKey);
  const r = await call(app, { token: forged });
  app.close();
  assert.deepEqual([r.status, r.body.code], [401, 'invalid_token']);
  assert.equal(jwksFetches - fetchesBefore, 1, 'the key set was fetched again for the unknown kid');
});

test('a revoked session: refused where checkSession is configured, until expiry elsewhere', async () => {
  const checked = await listen(requireAuth({ ...options(), checkSession: { url: tessera.base, cacheMs: 0 } }));
  const unchecked = await listen(requireAuth(options()));
  const login = await signIn(tessera.base, 'bearer@example.com');
  const token = login.access_token;
  assert.equal((await call(checked, { token })).status, 200);
  const logout = await fetch(`${tessera.base}/v1/auth/logout`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: login.refresh_token }),
  });
  assert.equal(logout.status, 204);
  const refused = await call(checked, { token });
  const passed = await call(unchecked, { token });
  checked.close();
  unchecked.close();
  assert.deepEqual([refused.status, refused.body.code], [401, 'session_revoked']);
  assert.equal(passed.status, 200, 'without the check the token stands until exp');
});

/** A port free just now, so Tessera can be told its own address as its issuer. */
async function freePort() {
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));
  return port;
}

test('why a token was refused: expected and actual iss or aud, with a hint, in onError and the debug log', async () => {
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  // Tessera's issuer here is http://127.0.0.1:8080 and its audience `tessera`.
  const cases = [
    { set: { audience: 'notes-api' }, claim: 'aud', expected: 'notes-api', got: 'tessera', hint: undefined },
    { set: { issuer: 'http://127.0.0.1:8080/' }, claim: 'iss', expected: 'http://127.0.0.1:8080/', got: 'http://127.0.0.1:8080', hint: /trailing slash/ },
    { set: { issuer: 'http://localhost:8080' }, claim: 'iss', expected: 'http://localhost:8080', got: 'http://127.0.0.1:8080', hint: /localhost and 127\.0\.0\.1 are the same machine/ },
  ];
  for (const { set, claim, expected, got, hint } of cases) {
    const seen = [];
    const lines = [];
    const app = await listen(requireAuth({
      ...options(), ...set, onError: (error, req) => seen.push({ error, url: req.url }), debug: (line) => lines.push(line),
    }));
    const r = await call(app, { token });
    app.close();
    assert.deepEqual([r.status, r.body.code, r.body.detail], [401, 'invalid_token', 'access token not valid'], 'the caller learns nothing more');
    assert.equal(seen.length, 1);
    const { error } = seen[0];
    assert.ok(error instanceof TesseraAuthError);
    assert.deepEqual([error.status, error.code, error.claim, error.expected, error.got], [401, 'invalid_token', claim, expected, got]);
    if (hint) assert.match(error.hint, hint);
    else assert.equal(error.hint, undefined);
    assert.equal(seen[0].url, '/thing');
    assert.equal(lines.length, 1);
    assert.ok(lines[0].includes(`"${claim}" is "${got}", expected "${expected}"`), lines[0]);
  }
});

test('onError may answer itself; without a token the reason names both places looked', async () => {
  const app = await listen(requireAuth({
    ...options(),
    debug: () => {},
    onError: (error, _req, res) => {
      res.statusCode = error.status;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ mine: error.reason }));
    },
  }));
  const r = await call(app, {});
  app.close();
  assert.equal(r.status, 401);
  assert.match(r.body.mine, /no Authorization: Bearer header and no tessera_at cookie/);
});

test('requireAuth with the issuer alone, or the discovery URL alone, learns the keys and the audience', async () => {
  const port = await freePort();
  const own = await startTessera({
    TESSERA_LISTEN: `127.0.0.1:${port}`, TESSERA_ISSUER: `http://127.0.0.1:${port}`, TESSERA_AUDIENCE: 'notes-api',
  });
  try {
    const mine = (await signIn(own.base, 'discovered@example.com')).access_token;
    const foreign = (await signIn(tessera.base, 'bearer@example.com')).access_token;
    const byIssuer = await listen(requireAuth({ issuer: own.base }));
    const byDiscovery = await listen(requireAuth({ discoveryUrl: `${own.base}/.well-known/openid-configuration` }));
    for (const app of [byIssuer, byDiscovery]) {
      const r = await call(app, { token: mine });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.claims.aud, 'notes-api');
      assert.deepEqual([(await call(app, { token: foreign })).status], [401], 'another Tessera’s token');
      app.close();
    }
  } finally {
    await own.stop();
  }
});

test('a discovery document that cannot be fetched: 503 discovery_unavailable, and the reason', async () => {
  const port = await freePort();
  const seen = [];
  const app = await listen(requireAuth({ issuer: `http://127.0.0.1:${port}`, onError: (e) => seen.push(e), debug: () => {} }));
  const token = (await signIn(tessera.base, 'bearer@example.com')).access_token;
  const r = await call(app, { token });
  app.close();
  assert.deepEqual([r.status, r.body.code], [503, 'discovery_unavailable']);
  assert.match(seen[0].reason, new RegExp(`GET http://127\\.0\\.0\\.1:${port}/\\.well-known/oauth-authorization-server`));
  assert.throws(() => requireAuth({ audience: 'x' }), /issuer/);
});
