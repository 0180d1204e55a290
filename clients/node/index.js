// Express/Connect middleware for resource servers that accept Tessera's access tokens.
// It verifies a token exactly as Tessera does (API.md, "Access tokens"): a key from Tessera's
// JWKS chosen by `kid`, the algorithm that key is for, `typ` `at+jwt`, the configured `iss`
// and a single-string `aud`, `exp` in the future; keys or URLs in token headers are never
// used. A failure is answered with the same problem+json codes Tessera uses, so the browser
// client reacts to `token_expired` from this API exactly as it does to Tessera's own.

import { timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, errors, jwtVerify } from 'jose';

export const ACCESS_COOKIE = 'tessera_at';
export const CSRF_COOKIE = 'tessera_csrf';
export const CSRF_HEADER = 'x-csrf-token';
/** The algorithms Tessera signs with; each key in its JWKS names one of them. */
const ALGORITHMS = ['EdDSA', 'ES256'];
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Tessera's own limit on verifier leeway. */
const MAX_CLOCK_TOLERANCE_S = 30;
/** Authorization headers longer than this are refused unread, as Tessera does. */
const MAX_AUTHORIZATION_BYTES = 8192;

const TITLES = { 401: 'Unauthorized', 403: 'Forbidden', 503: 'Service Unavailable' };

/** Sends an RFC 9457 problem document (works on Express and on bare `http` responses). */
export function sendProblem(res, status, code, detail) {
  const body = JSON.stringify({ type: 'about:blank', title: TITLES[status] ?? 'Error', status, code, detail });
  res.statusCode = status;
  res.setHeader('content-type', 'application/problem+json');
  res.setHeader('cache-control', 'no-store');
  if (status === 401) res.setHeader('www-authenticate', `Bearer error="invalid_token"`);
  res.end(body);
}

/** The named cookie of a request, or undefined. */
function cookie(req, name) {
  for (const part of String(req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      try {
        return decodeURIComponent(value) || undefined;
      } catch {
        return value || undefined;
      }
    }
  }
  return undefined;
}

function sameSecret(a, b) {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Where the token is: `{token, fromCookie}`, or `{error}` for an unusable header. */
function findToken(req) {
  const header = req.headers.authorization;
  if (header !== undefined) {
    if (header.length > MAX_AUTHORIZATION_BYTES) return { error: 'authorization header too long' };
    const match = /^bearer\s+(\S+)\s*$/i.exec(header);
    if (match) return { token: match[1], fromCookie: false };
    // Another scheme (Basic for some other layer, say): leave the cookie to speak.
    if (/^bearer(\s|$)/i.test(header)) return { error: 'malformed bearer token' };
  }
  const fromCookie = cookie(req, ACCESS_COOKIE);
  if (fromCookie) return { token: fromCookie, fromCookie: true };
  return { error: 'no access token' };
}

/** Remembered answers of Tessera about sessions, so that checking costs one call per
 * session every `cacheMs`, not one per request. */
const MAX_REMEMBERED_SESSIONS = 10_000;

function sessionChecker({ url, cacheMs = 5000 }) {
  const me = `${String(url).replace(/\/+$/, '')}/v1/auth/me`;
  const remembered = new Map();
  return async function check(token, claims) {
    const now = Date.now();
    const known = remembered.get(claims.sid);
    if (known && known.until > now) return known.code;
    let code;
    try {
      const r = await fetch(me, { headers: { authorization: `Bearer ${token}` } });
      if (r.ok) code = null;
      else if (r.status === 401) code = (await r.json().catch(() => ({}))).code ?? 'invalid_token';
      else code = 'session_check_unavailable';
    } catch {
      code = 'session_check_unavailable';
    }
    if (code !== 'session_check_unavailable') {
      // A revocation is final: remember it as long as the token lives.
      const until = code === 'session_revoked' ? claims.exp * 1000 : now + cacheMs;
      if (remembered.size >= MAX_REMEMBERED_SESSIONS) remembered.delete(remembered.keys().next().value);
      remembered.set(claims.sid, { code, until });
    }
    return code;
  };
}

/**
 * `requireAuth({ issuer, audience, jwksUrl })`: a middleware that lets through only requests
 * with a valid Tessera access token, and sets `req.auth = { userId, sessionId, roles, claims }`.
 * Options: `clockTolerance` (seconds, at most 30; default 0 as on Tessera), `jwksCooldown`
 * (ms between JWKS refetches triggered by an unknown `kid`; default 30 s), `jwksMaxAge` (ms;
 * default 10 min: Tessera's key rotation keeps old keys listed far longer than that),
 * `checkSession: { url, cacheMs }` (also ask Tessera at `url` whether the token's session is
 * still live, at most once per session every `cacheMs`, default 5 s; without it a revoked
 * session's tokens pass until they expire).
 */
export function requireAuth(options) {
  const { issuer, audience, jwksUrl } = options ?? {};
  if (!issuer || !audience || !jwksUrl) {
    throw new TypeError('requireAuth needs issuer, audience and jwksUrl');
  }
  const clockTolerance = Math.min(Math.max(Number(options.clockTolerance ?? 0), 0), MAX_CLOCK_TOLERANCE_S);
  const keys = options.keySet ?? createRemoteJWKSet(new URL(jwksUrl), {
    cooldownDuration: options.jwksCooldown ?? 30_000,
    cacheMaxAge: options.jwksMaxAge ?? 600_000,
  });
  const checkSession = options.checkSession ? sessionChecker(options.checkSession) : null;

  return async function tesseraAuth(req, res, next) {
    const found = findToken(req);
    if (found.error) return sendProblem(res, 401, 'invalid_token', found.error);
    if (found.fromCookie && !SAFE_METHODS.has(req.method)) {
      // Double submit: a page of another site can make the browser send our cookie, but it
      // cannot read the CSRF cookie to copy it into the header.
      const sent = req.headers[CSRF_HEADER];
      const expected = cookie(req, CSRF_COOKIE);
      if (typeof sent !== 'string' || !sent || !expected || !sameSecret(sent, expected)) {
        return sendProblem(res, 403, 'csrf_failed', 'X-CSRF-Token must equal the tessera_csrf cookie');
      }
    }
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(found.token, keys, {
        algorithms: ALGORITHMS,
        typ: 'at+jwt',
        issuer,
        audience,
        clockTolerance,
        requiredClaims: ['exp', 'sub', 'sid'],
      }));
    } catch (e) {
      if (e instanceof errors.JWTExpired) return sendProblem(res, 401, 'token_expired', 'access token expired');
      if (e instanceof errors.JOSEError && !(e instanceof errors.JWKSTimeout)) {
        return sendProblem(res, 401, 'invalid_token', 'access token not valid');
      }
      // Tessera's JWKS could not be fetched: not the client's fault, and it may pass.
      res.setHeader('retry-after', '1');
      return sendProblem(res, 503, 'jwks_unavailable', 'the signing keys could not be fetched');
    }
    // Tessera issues a single-string `aud`; jose would also accept an array containing it.
    if (typeof claims.aud !== 'string' || typeof claims.sub !== 'string' || typeof claims.sid !== 'string') {
      return sendProblem(res, 401, 'invalid_token', 'access token not valid');
    }
    if (checkSession) {
      const code = await checkSession(found.token, claims);
      if (code === 'session_check_unavailable') {
        res.setHeader('retry-after', '1');
        return sendProblem(res, 503, code, 'Tessera could not be asked about the session');
      }
      if (code === 'session_revoked') return sendProblem(res, 401, code, 'the session was revoked');
      if (code === 'token_expired') return sendProblem(res, 401, code, 'access token expired');
      if (code) return sendProblem(res, 401, 'invalid_token', 'access token not valid');
    }
    req.auth = {
      userId: claims.sub,
      sessionId: claims.sid,
      roles: Array.isArray(claims.roles) ? claims.roles.filter((r) => typeof r === 'string') : [],
      claims,
    };
    next();
  };
}

/** `requireRole('admin', ...)`: after requireAuth, lets through callers holding any of the roles. */
export function requireRole(...roles) {
  if (roles.length === 0) throw new TypeError('requireRole needs at least one role');
  return function tesseraRole(req, res, next) {
    if (!req.auth) return sendProblem(res, 401, 'invalid_token', 'no access token');
    if (!roles.some((role) => req.auth.roles.includes(role))) {
      return sendProblem(res, 403, 'forbidden', `requires one of the roles: ${roles.join(', ')}`);
    }
    next();
  };
}
