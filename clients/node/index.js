// Express/Connect middleware for resource servers that accept Tessera's access tokens.
// It verifies a token exactly as Tessera does (API.md, "Access tokens"): a key from Tessera's
// JWKS chosen by `kid`, the algorithm that key is for, `typ` `at+jwt`, the configured `iss`
// and a single-string `aud`, `exp` in the future; keys or URLs in token headers are never
// used. A failure is answered with the same problem+json codes Tessera uses, so the browser
// client reacts to `token_expired` from this API exactly as it does to Tessera's own. Why a
// token was refused (expected and actual `iss` or `aud`, with a hint for the usual slips) goes
// to the `onError` hook and the debug log (`NODE_DEBUG=tessera`), never to the caller.

import { timingSafeEqual } from 'node:crypto';
import { debuglog } from 'node:util';
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
/** Where a failed discovery is asked again, at most this often. */
const DISCOVERY_RETRY_MS = 5000;
const defaultDebug = debuglog('tessera');

/** Why `requireAuth` refused a request: what the caller got (`status`, `code`, `detail`) and
 * what it did not (`reason`; for a claim, `claim`, `expected`, `got` and a `hint`). */
export class TesseraAuthError extends Error {
  constructor({ status, code, detail, reason, claim, expected, got, hint, cause }) {
    super(reason ?? detail, cause === undefined ? undefined : { cause });
    this.name = 'TesseraAuthError';
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.reason = reason ?? detail;
    if (claim !== undefined) this.claim = claim;
    if (expected !== undefined) this.expected = expected;
    if (got !== undefined) this.got = got;
    if (hint !== undefined) this.hint = hint;
  }
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** The usual slip between an expected and an actual issuer or audience, in words. */
function mismatchHint(expected, got) {
  if (typeof expected !== 'string' || typeof got !== 'string') return undefined;
  if (expected.replace(/\/+$/, '') === got.replace(/\/+$/, '')) {
    return 'they differ only in a trailing slash: use the value exactly as Tessera has it (TESSERA_ISSUER)';
  }
  let a;
  let b;
  try {
    a = new URL(expected);
    b = new URL(got);
  } catch {
    return undefined;
  }
  if (a.hostname !== b.hostname && LOOPBACK.has(a.hostname) && LOOPBACK.has(b.hostname)
    && a.port === b.port && a.protocol === b.protocol && a.pathname === b.pathname) {
    return `${a.hostname} and ${b.hostname} are the same machine but different names: tokens carry the issuer Tessera is configured with (TESSERA_ISSUER), character for character`;
  }
  if (a.hostname === b.hostname && a.port !== b.port) {
    return 'the ports differ: is TESSERA_ISSUER the address Tessera really listens on?';
  }
  if (a.protocol !== b.protocol && a.host === b.host) return 'http and https differ';
  return undefined;
}

/** The reason jose gave, as the facts a developer can act on. */
function reasonOf(e, { issuer, audience, jwksUrl }) {
  if (e instanceof errors.JWTClaimValidationFailed) {
    const claim = e.claim;
    const got = e.payload?.[claim];
    const expected = claim === 'iss' ? issuer : claim === 'aud' ? audience : claim === 'typ' ? 'at+jwt' : undefined;
    if (e.reason === 'missing') return { reason: `the token has no "${claim}" claim`, claim };
    if (expected === undefined) return { reason: `claim "${claim}" refused: ${e.message}`, claim, got };
    return {
      reason: `"${claim}" is ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`,
      claim, expected, got, hint: mismatchHint(expected, got),
    };
  }
  if (e instanceof errors.JWKSNoMatchingKey) {
    return {
      reason: `no key of the JWKS at ${jwksUrl ?? '(keySet)'} matches the token's "kid"`,
      hint: 'the token comes from another Tessera (or another database) than the one whose JWKS is configured',
    };
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) {
    return { reason: 'the signature does not verify with the key its "kid" names' };
  }
  if (e instanceof errors.JOSEAlgNotAllowed) return { reason: `algorithm refused: ${e.message}` };
  if (e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) {
    return { reason: `not a well-formed access token: ${e.message}` };
  }
  return { reason: e?.message ?? String(e) };
}

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
  check.url = me;
  return check;
  async function check(token, claims) {
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
  }
}

/** The discovery document's URL for an issuer (RFC 8414: the issuer, then the well-known
 * path; Tessera serves the same document at /.well-known/openid-configuration). */
function discoveryUrlOf(issuer) {
  return `${String(issuer).replace(/\/+$/, '')}/.well-known/oauth-authorization-server`;
}

/** What a verifier needs, from the options, completed by Tessera's discovery document. */
function settingsFrom(options, log) {
  const given = { issuer: options.issuer, audience: options.audience, jwksUrl: options.jwksUrl };
  if (given.issuer && given.audience && (given.jwksUrl || options.keySet)) {
    return () => Promise.resolve(given);
  }
  if (!options.discoveryUrl && !given.issuer) {
    throw new TypeError('requireAuth needs the issuer (Tessera\'s TESSERA_ISSUER) or discoveryUrl');
  }
  const url = options.discoveryUrl ?? discoveryUrlOf(given.issuer);
  let pending = null;
  let failedAt = 0;
  const discover = async () => {
    let document;
    try {
      const response = await fetch(url, { headers: { accept: 'application/json' } });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      document = await response.json();
    } catch (e) {
      throw new TesseraAuthError({
        status: 503, code: 'discovery_unavailable', detail: 'Tessera\'s discovery document could not be fetched',
        reason: `GET ${url}: ${e?.cause?.message ?? e?.message ?? e}`, cause: e,
      });
    }
    const settings = {
      issuer: given.issuer ?? document?.issuer,
      audience: given.audience ?? document?.tessera_audience,
      jwksUrl: given.jwksUrl ?? document?.jwks_uri,
    };
    for (const [name, field] of [['issuer', 'issuer'], ['audience', 'tessera_audience'], ['jwksUrl', 'jwks_uri']]) {
      if (typeof settings[name] !== 'string' || !settings[name]) {
        throw new TesseraAuthError({
          status: 503, code: 'discovery_unavailable', detail: 'Tessera\'s discovery document is incomplete',
          reason: `the document at ${url} has no "${field}": pass ${name} to requireAuth`,
        });
      }
    }
    if (given.issuer && document?.issuer !== given.issuer) {
      // Tokens carry the document's issuer: every one of them is about to be refused.
      log(`requireAuth: the discovery document at ${url} names the issuer ${JSON.stringify(document?.issuer)}, `
        + `not the configured ${JSON.stringify(given.issuer)}; its tokens will be refused`
        + `${mismatchHint(given.issuer, document?.issuer) ? ` (${mismatchHint(given.issuer, document?.issuer)})` : ''}`);
    }
    log(`requireAuth: issuer ${settings.issuer}, audience ${settings.audience}, keys ${settings.jwksUrl} (from ${url})`);
    return settings;
  };
  return () => {
    if (pending && (failedAt === 0 || Date.now() - failedAt < DISCOVERY_RETRY_MS)) return pending;
    failedAt = 0;
    pending = discover().catch((e) => {
      failedAt = Date.now();
      throw e;
    });
    return pending;
  };
}

/**
 * `requireAuth({ issuer })` (or `{ discoveryUrl }`, or all of `{ issuer, audience, jwksUrl }`):
 * a middleware that lets through only requests with a valid Tessera access token, and sets
 * `req.auth = { userId, sessionId, roles, claims }`. What is not given is read from Tessera's
 * discovery document on the first request: the audience (`tessera_audience`) and the JWKS URL
 * (`jwks_uri`), and with `discoveryUrl` the issuer too. Options: `clockTolerance` (seconds, at
 * most 30; default 0 as on Tessera), `jwksCooldown` (ms between JWKS refetches triggered by an
 * unknown `kid`; default 30 s), `jwksMaxAge` (ms; default 10 min: Tessera's key rotation keeps
 * old keys listed far longer than that), `checkSession: { url, cacheMs }` (also ask Tessera at
 * `url` whether the token's session is still live, at most once per session every `cacheMs`,
 * default 5 s; without it a revoked session's tokens pass until they expire), `onError(error,
 * req, res)` (called with a `TesseraAuthError` saying why, before the problem is sent; it may
 * answer itself), `debug` (`true` for console.debug, or a function taking a line; default the
 * `NODE_DEBUG=tessera` log).
 */
export function requireAuth(options) {
  if (!options || typeof options !== 'object') {
    throw new TypeError('requireAuth needs options: { issuer } at least');
  }
  const log = typeof options.debug === 'function' ? options.debug
    : options.debug === true ? (line) => console.debug(`tessera: ${line}`) : defaultDebug;
  const settings = settingsFrom(options, log);
  const clockTolerance = Math.min(Math.max(Number(options.clockTolerance ?? 0), 0), MAX_CLOCK_TOLERANCE_S);
  let keys = options.keySet ?? null;
  const keysFor = (jwksUrl) => {
    keys ??= createRemoteJWKSet(new URL(jwksUrl), {
      cooldownDuration: options.jwksCooldown ?? 30_000,
      cacheMaxAge: options.jwksMaxAge ?? 600_000,
    });
    return keys;
  };
  const checkSession = options.checkSession ? sessionChecker(options.checkSession) : null;

  /** Refuses the request, saying why to the hook and the log (not to the caller). */
  function refuse(req, res, error) {
    log(`requireAuth: ${req.method} ${req.originalUrl ?? req.url}: ${error.status} ${error.code}: ${error.reason}`
      + `${error.hint ? ` (${error.hint})` : ''}`);
    if (options.onError) {
      try {
        options.onError(error, req, res);
      } catch (e) {
        log(`requireAuth: onError threw: ${e?.message ?? e}`);
      }
      if (res.headersSent || res.writableEnded) return undefined;
    }
    if (error.status === 503) res.setHeader('retry-after', '1');
    return sendProblem(res, error.status, error.code, error.detail);
  }
  const fail = (req, res, status, code, detail, why = {}) =>
    refuse(req, res, new TesseraAuthError({ status, code, detail, ...why }));

  return async function tesseraAuth(req, res, next) {
    const found = findToken(req);
    if (found.error) {
      return fail(req, res, 401, 'invalid_token', found.error, {
        reason: found.error === 'no access token'
          ? 'no Authorization: Bearer header and no tessera_at cookie (a browser sends the cookie only to the site it came from)'
          : found.error,
      });
    }
    if (found.fromCookie && !SAFE_METHODS.has(req.method)) {
      // Double submit: a page of another site can make the browser send our cookie, but it
      // cannot read the CSRF cookie to copy it into the header.
      const sent = req.headers[CSRF_HEADER];
      const expected = cookie(req, CSRF_COOKIE);
      if (typeof sent !== 'string' || !sent || !expected || !sameSecret(sent, expected)) {
        return fail(req, res, 403, 'csrf_failed', 'X-CSRF-Token must equal the tessera_csrf cookie', {
          reason: !expected ? 'no tessera_csrf cookie' : typeof sent !== 'string' || !sent
            ? 'no X-CSRF-Token header on a cookie-authenticated unsafe request' : 'X-CSRF-Token differs from the tessera_csrf cookie',
        });
      }
    }
    let config;
    try {
      config = await settings();
    } catch (e) {
      return refuse(req, res, e);
    }
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(found.token, keysFor(config.jwksUrl), {
        algorithms: ALGORITHMS,
        typ: 'at+jwt',
        issuer: config.issuer,
        audience: config.audience,
        clockTolerance,
        requiredClaims: ['exp', 'sub', 'sid'],
      }));
    } catch (e) {
      if (e instanceof errors.JWTExpired) {
        const exp = e.payload?.exp;
        return fail(req, res, 401, 'token_expired', 'access token expired', {
          reason: `the token expired${typeof exp === 'number' ? ` at ${new Date(exp * 1000).toISOString()}` : ''}`, cause: e,
        });
      }
      if (e instanceof errors.JOSEError && !(e instanceof errors.JWKSTimeout)) {
        return fail(req, res, 401, 'invalid_token', 'access token not valid', { ...reasonOf(e, config), cause: e });
      }
      // Tessera's JWKS could not be fetched: not the client's fault, and it may pass.
      return fail(req, res, 503, 'jwks_unavailable', 'the signing keys could not be fetched', {
        reason: `GET ${config.jwksUrl}: ${e?.cause?.message ?? e?.message ?? e}`, cause: e,
      });
    }
    // Tessera issues a single-string `aud`; jose would also accept an array containing it.
    if (typeof claims.aud !== 'string' || typeof claims.sub !== 'string' || typeof claims.sid !== 'string') {
      return fail(req, res, 401, 'invalid_token', 'access token not valid', {
        reason: typeof claims.aud !== 'string' ? '"aud" is not a single string' : '"sub" or "sid" is not a string',
      });
    }
    if (checkSession) {
      const code = await checkSession(found.token, claims);
      if (code === 'session_check_unavailable') {
        return fail(req, res, 503, code, 'Tessera could not be asked about the session', {
          reason: `GET ${checkSession.url} did not answer`,
        });
      }
      if (code === 'session_revoked') return fail(req, res, 401, code, 'the session was revoked');
      if (code === 'token_expired') return fail(req, res, 401, code, 'access token expired');
      if (code) {
        return fail(req, res, 401, 'invalid_token', 'access token not valid', {
          reason: `Tessera answered ${code} about the session`,
        });
      }
    }
    req.auth = {
      userId: claims.sub,
      sessionId: claims.sid,
      roles: Array.isArray(claims.roles) ? claims.roles.filter((r) => typeof r === 'string') : [],
      amr: Array.isArray(claims.amr) ? claims.amr.filter((a) => typeof a === 'string') : [],
      authTime: Number.isInteger(claims.auth_time) ? claims.auth_time : undefined,
      claims,
    };
    next();
  };
}

/**
 * `requireMfa()`: after requireAuth, lets through callers who signed in with a second factor
 * (`amr` has `mfa`), else `403 mfa_required`. With `{ maxAge: seconds }`, the sign-in (or the
 * last `POST /v1/auth/reauthenticate`) must also be that recent, else
 * `403 reauthentication_required`; `{ mfa: false, maxAge }` asks for a recent sign-in alone.
 */
export function requireMfa({ mfa = true, maxAge } = {}) {
  if (maxAge !== undefined && !(Number.isFinite(maxAge) && maxAge >= 0)) {
    throw new TypeError('requireMfa: maxAge must be a number of seconds');
  }
  return function tesseraMfa(req, res, next) {
    if (!req.auth) return sendProblem(res, 401, 'invalid_token', 'no access token');
    if (mfa && !req.auth.amr.includes('mfa')) {
      return sendProblem(res, 403, 'mfa_required', 'sign in with a second factor to do this');
    }
    if (maxAge !== undefined) {
      const now = Math.floor(Date.now() / 1000);
      if (req.auth.authTime === undefined || now - req.auth.authTime > maxAge) {
        return sendProblem(res, 403, 'reauthentication_required', 'sign in again to do this');
      }
    }
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
