import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const ACCESS_COOKIE: 'tessera_at';
export const CSRF_COOKIE: 'tessera_csrf';
export const CSRF_HEADER: 'x-csrf-token';

export interface TesseraAuth {
  userId: string;
  sessionId: string;
  roles: string[];
  claims: JWTPayload;
}

export interface RequireAuthOptions {
  /** Tessera's `TESSERA_ISSUER`. */
  issuer: string;
  /** Tessera's `TESSERA_AUDIENCE`. */
  audience: string;
  /** e.g. `https://auth.example.com/.well-known/jwks.json`. */
  jwksUrl: string;
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
export function sendProblem(res: ServerResponse, status: number, code: string, detail: string): void;

declare global {
  namespace Express {
    interface Request {
      auth?: TesseraAuth;
    }
  }
}
