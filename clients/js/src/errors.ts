// Every problem+json answer of Tessera becomes an instance of one class per `code`, all
// subclasses of TesseraError, so apps can `instanceof` or switch on `code`.

/** A field named by a `validation_failed` problem. */
export interface FieldError {
  field: string;
  message: string;
}

/** The RFC 9457 problem document Tessera answers errors with. */
export interface ProblemDocument {
  type?: string;
  title?: string;
  status?: number;
  code?: string;
  detail?: string;
  errors?: FieldError[];
}

export class TesseraError extends Error {
  /** HTTP status (0 when the server was not reached). */
  readonly status: number;
  /** The contract's stable machine-readable code. */
  readonly code: string;
  readonly problem: ProblemDocument;

  constructor(status: number, code: string, problem: ProblemDocument = {}) {
    super(problem.detail || problem.title || code);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.problem = problem;
  }
}

export class ValidationFailedError extends TesseraError {
  /** The fields that failed, with a sentence each. */
  get errors(): FieldError[] {
    return this.problem.errors ?? [];
  }
}
export class MalformedRequestError extends TesseraError {}
export class PayloadTooLargeError extends TesseraError {}
export class EmailTakenError extends TesseraError {}
export class InvalidCredentialsError extends TesseraError {}
export class InvalidTokenError extends TesseraError {}
export class TokenExpiredError extends TesseraError {}
export class SessionRevokedError extends TesseraError {}
export class InvalidRefreshTokenError extends TesseraError {}
export class RefreshTokenExpiredError extends TesseraError {}
export class RefreshTokenReusedError extends TesseraError {}
export class CsrfFailedError extends TesseraError {}
export class SessionNotFoundError extends TesseraError {}
export class NotFoundError extends TesseraError {}
export class MethodNotAllowedError extends TesseraError {}
export class RateLimitedError extends TesseraError {
  /** Seconds to wait, from `Retry-After` (readable cross-origin: Tessera exposes it). */
  readonly retryAfter: number;
  constructor(status: number, code: string, problem: ProblemDocument = {}, retryAfter = 1) {
    super(status, code, problem);
    this.retryAfter = retryAfter;
  }
}
/** The server could not be reached, or answered something that is not a problem document. */
export class NetworkError extends TesseraError {}
/** Code `cookies_not_stored`: a cookie-transport `login()` succeeded, but the browser kept
 * none of Tessera's cookies (the page and Tessera are different sites, such as `localhost`
 * and `127.0.0.1`, or `Secure` cookies on plain HTTP). The message says what to change. No
 * session is stored on this side; `status` is 0 (no answer of Tessera was an error). */
export class CookiesNotStoredError extends TesseraError {}

/** Not a failure: the password (or sign-in link) was right, and the account has a second
 * factor. Nothing is signed in yet: ask the person for a code and call
 * `client.verifyMfa(error.challenge, 'totp' | 'recovery_code', code)` within `expiresIn`
 * seconds. `status` is 200 (what Tessera answered). */
export class MfaRequiredError extends TesseraError {
  /** The opaque, single-use challenge for `verifyMfa`. */
  readonly challenge: string;
  /** What the account can prove: `totp`, `passkey`, `recovery_code`. */
  readonly methods: string[];
  /** Seconds the challenge stays valid. */
  readonly expiresIn: number;
  constructor(body: { challenge: string; methods?: string[]; expires_in?: number }) {
    super(200, 'mfa_required', {
      title: 'A second factor is required',
      detail: 'The password was right; enter a code from your authenticator app (or a recovery code).',
    });
    this.challenge = body.challenge;
    this.methods = body.methods ?? [];
    this.expiresIn = body.expires_in ?? 0;
  }
}
export class InvalidMfaCodeError extends TesseraError {}
export class MfaCodeReplayedError extends TesseraError {}
export class MfaChallengeInvalidError extends TesseraError {}
export class MfaChallengeExpiredError extends TesseraError {}
export class MfaChallengeOtherBrowserError extends TesseraError {}
export class ReauthenticationRequiredError extends TesseraError {}

type ErrorClass = new (status: number, code: string, problem?: ProblemDocument) => TesseraError;

export const ERROR_CLASSES = {
  validation_failed: ValidationFailedError,
  malformed_request: MalformedRequestError,
  payload_too_large: PayloadTooLargeError,
  email_taken: EmailTakenError,
  invalid_credentials: InvalidCredentialsError,
  invalid_token: InvalidTokenError,
  token_expired: TokenExpiredError,
  session_revoked: SessionRevokedError,
  invalid_refresh_token: InvalidRefreshTokenError,
  refresh_token_expired: RefreshTokenExpiredError,
  refresh_token_reused: RefreshTokenReusedError,
  csrf_failed: CsrfFailedError,
  session_not_found: SessionNotFoundError,
  not_found: NotFoundError,
  method_not_allowed: MethodNotAllowedError,
  rate_limited: RateLimitedError,
  invalid_mfa_code: InvalidMfaCodeError,
  mfa_code_replayed: MfaCodeReplayedError,
  mfa_challenge_invalid: MfaChallengeInvalidError,
  mfa_challenge_expired: MfaChallengeExpiredError,
  mfa_challenge_other_browser: MfaChallengeOtherBrowserError,
  reauthentication_required: ReauthenticationRequiredError,
} satisfies Record<string, ErrorClass>;

export type ErrorCode = keyof typeof ERROR_CLASSES;

/** Codes after which the session is over: only signing in again helps. */
export const SIGNED_OUT_CODES: ReadonlySet<string> = new Set([
  'session_revoked',
  'invalid_refresh_token',
  'refresh_token_expired',
  'refresh_token_reused',
]);

/** The typed error for a non-2xx response (reads its body). */
export async function errorFromResponse(response: Response): Promise<TesseraError> {
  let problem: ProblemDocument = {};
  try {
    const body: unknown = await response.json();
    if (body && typeof body === 'object') problem = body as ProblemDocument;
  } catch {
    // Not JSON: a proxy's error page, say. The status still tells something.
  }
  const code = typeof problem.code === 'string' ? problem.code : `http_${response.status}`;
  if (code === 'rate_limited') {
    const seconds = Number(response.headers.get('retry-after'));
    return new RateLimitedError(response.status, code, problem, seconds > 0 ? seconds : 1);
  }
  const Class: ErrorClass = (ERROR_CLASSES as Record<string, ErrorClass>)[code] ?? TesseraError;
  return new Class(response.status, code, problem);
}
