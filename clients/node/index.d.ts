import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const ACCESS_COOKIE: 'tessera_at';
export const CSRF_COOKIE: 'tessera_csrf';
export const CSRF_HEADER: 'x-csrf-token';

export interface TesseraAuth {
  userId: string;
  sessionId: string;
  roles: string[];
  /** How the holder signed in (`amr`, RFC 8176): `['pwd']`, `['pwd', 'otp', 'mfa']`, ... */
  amr: string[];
  /** When the holder signed in or last reauthenticated (`auth_time`, seconds since the epoch). */
  authTime?: number;
  claims: JWTPayload;
}

/** Why `requireAuth` refused a request (given to `onError`; the caller gets only the problem
 * document's `code` and `detail`). */
export class TesseraAuthError extends Error {
  /** The status answered: 401, 403 or 503. */
  readonly status: number;
  /** The problem `code` answered: `invalid_token`, `token_expired`, `session_revoked`,
   * `csrf_failed`, `jwks_unavailable`, `discovery_unavailable`, `session_check_unavailable`. */
  readonly code: string;
  /** The problem `detail` answered. */
  readonly detail: string;
  /** What went wrong, for the developer: e.g. `"iss" is "http://127.0.0.1:8080", expected
   * "http://localhost:8080"`. */
  readonly reason: string;
  /** The claim that did not match (`iss`, `aud`, `typ`), with what was expected and got. */
  readonly claim?: string;
  readonly expected?: unknown;
  readonly got?: unknown;
  /** The usual slip behind the mismatch: a trailing slash, localhost for 127.0.0.1, a port. */
  readonly hint?: string;
}

export interface RequireAuthOptions {
  /** Tessera's `TESSERA_ISSUER`, exactly (no trailing slash unless Tessera has one). Alone, it
   * is enough: the audience and the JWKS URL come from its discovery document. */
  issuer?: string;
  /** Where Tessera's discovery document is, e.g.
   * `https://auth.example.com/.well-known/openid-configuration`; then `issuer` may be left out
   * too. Default: the issuer's `/.well-known/oauth-authorization-server`. */
  discoveryUrl?: string;
  /** Tessera's `TESSERA_AUDIENCE`; default the discovery document's `tessera_audience`. */
  audience?: string;
  /** e.g. `https://auth.example.com/.well-known/jwks.json`; default the discovery document's
   * `jwks_uri`. */
  jwksUrl?: string;
  /** Called with the reason before a refusal is sent (log it, count it); if it answers the
   * response itself, nothing more is sent. */
  onError?: (error: TesseraAuthError, req: IncomingMessage, res: ServerResponse) => void;
  /** `true`: a line per refusal (and the discovered settings) on `console.debug`; or a
   * function taking each line. Default: Node's debug log, shown with `NODE_DEBUG=tessera`. */
  debug?: boolean | ((line: string) => void);
  /** Seconds of leeway on `exp` (at most 30; default 0, as Tessera itself). */
  clockTolerance?: number;
  /** Milliseconds between refetches triggered by an unknown `kid` (default 30 000). */
  jwksCooldown?: number;
  /** Milliseconds the fetched key set is used before it is fetched again (default 600 000). */
  jwksMaxAge?: number;
  /** Also ask Tessera (its base URL) whether the token's session is still live, at most once
   * per session every `cacheMs` (default 5000). Without it, a revoked session's access tokens
   * pass until they expire. */
  checkSession?: { url: string; cacheMs?: number };
  /** A key resolver to use instead of fetching `jwksUrl` (tests, custom caches). */
  keySet?: JWTVerifyGetKey;
}

type Next = (err?: unknown) => void;
export type Middleware = (req: IncomingMessage & { auth?: TesseraAuth }, res: ServerResponse, next: Next) => void | Promise<void>;

export function requireAuth(options: RequireAuthOptions): Middleware;
export function requireRole(...roles: string[]): Middleware;
/** After requireAuth: a second factor (`amr` has `mfa`, else `403 mfa_required`) and, with
 * `maxAge` (seconds), a sign-in that recent (else `403 reauthentication_required`). */
export function requireMfa(options?: { mfa?: boolean; maxAge?: number }): Middleware;
export function sendProblem(res: ServerResponse, status: number, code: string, detail: string): void;

declare global {
  namespace Express {
    interface Request {
      auth?: TesseraAuth;
    }
  }
}
