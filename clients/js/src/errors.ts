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
