// The app side of Tessera, for browsers and for mobile or native apps: sign up, sign in,
// sessions, sign out, and a `fetch` that keeps an app signed in: it attaches the bearer token
// or the CSRF header, and on `401 token_expired` refreshes once (for every concurrent call of
// the page, and for every tab, through the Web Locks API or a storage lease) and retries.
//
// Shared state (the session, the CSRF token, in body transport the tokens) lives in one
// storage entry that all tabs read afresh before every use, so a tab that slept for an hour
// never presents a refresh token another tab has since rotated out. The storage may be
// synchronous (localStorage) or asynchronous (React Native's AsyncStorage, a keychain).

import {
  CookiesNotStoredError,
  errorFromResponse,
  InvalidRefreshTokenError,
  MfaRequiredError,
  NetworkError,
  SIGNED_OUT_CODES,
  TesseraError,
} from './errors.js';

import {
  creationOptionsFromJSON,
  credentialToJSON,
  defaultCredentials,
  requestOptionsFromJSON,
  type CredentialsContainerLike,
  type Passkey,
} from './passkeys.js';

export * from './errors.js';
export * from './passkeys.js';

export interface User {
  id: string;
  email: string;
  created_at: string;
  /** The address was proved by a mailed link. */
  email_verified?: boolean;
}

export interface Session {
  id: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
  /** The session this client is signed in with. */
  current: boolean;
}

export interface Me {
  user: User;
  session_id: string;
}

/**
 * How tokens travel, named as on the wire (`"transport"` of `POST /v1/auth/login`):
 * - `cookie`: tokens in HttpOnly cookies that the script never sees. Browsers only; the page
 *   and Tessera must be one *site* (`app.example.com` and `auth.example.com`: yes;
 *   `localhost` and `127.0.0.1`: no), and a page of another origin must be listed in
 *   `TESSERA_CORS_ORIGINS`.
 * - `body`: tokens in the response body, kept in `storage` and sent as
 *   `Authorization: Bearer`. Mobile and native apps, and pages on another site than Tessera.
 */
export type Transport = 'cookie' | 'body';

/** `'bearer'`: this client's old name of the `body` transport, still accepted. */
export type TransportOption = Transport | 'bearer';

export interface LoginResult {
  user: User;
  sessionId: string;
  /** Seconds the access token lives. */
  expiresIn: number;
}

/** Why the client is signed out: a contract code, or `logged_out` after `logout()`. */
export interface SignedOutEvent {
  code: string;
  error?: TesseraError;
}

/** A synchronous store: `localStorage`, `sessionStorage`, or one of your own. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** An asynchronous store: React Native's `AsyncStorage` as it is, or an adapter over Expo
 * SecureStore or a keychain (see docs/CLIENTS.md, "Mobile and native apps"). */
export interface AsyncKeyValueStorage {
  getItem(key: string): Promise<string | null | undefined>;
  setItem(key: string, value: string): Promise<unknown>;
  removeItem(key: string): Promise<unknown>;
}

/** The part of the Web Locks API (`navigator.locks`) the client uses. With `ifAvailable`,
 * `callback` gets `null` at once when the lock is held elsewhere. */
export interface LockManagerLike {
  request<T>(
    name: string,
    options: { ifAvailable?: boolean },
    callback: (lock: unknown) => Promise<T>,
  ): Promise<T>;
}

export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  close(): void;
}

export interface ClientOptions {
  /** Tessera's base URL, e.g. `https://auth.example.com` (a trailing `/` is ignored). Use the
   * very host Tessera's cookies are for: `localhost` and `127.0.0.1` are different sites. */
  baseUrl: string;
  /** `cookie` (default) in browsers, `body` in mobile and native apps; see `Transport`.
   * `bearer` is accepted as the old name of `body`. */
  transport?: TransportOption;
  /** Where the session's state is kept (the session id, the CSRF token, and in `body`
   * transport the access and refresh tokens), shared by every tab. Default `localStorage`
   * when there is one, else memory (lost on restart). Synchronous or asynchronous: pass
   * AsyncStorage or a keychain adapter in React Native. */
  storage?: KeyValueStorage | AsyncKeyValueStorage;
  /** Lets one tab at a time refresh. Default `navigator.locks` when there is one, else, in
   * a browser, a lease kept in `storage`; outside browsers (one JavaScript context, no tabs)
   * nothing more than the client's own single flight. `null` forces the lease. */
  locks?: LockManagerLike | null;
  /** Tells other tabs about sign-outs. Default a `BroadcastChannel` when there is one;
   * `null` for none. */
  channel?: ChannelLike | null;
  /** The `fetch` to use; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Prefix of storage keys, lock and channel names (several Tessera apps on one origin);
   * default `tessera`. */
  namespace?: string;
  /** Origins of APIs, besides Tessera's and the page's own, to which `fetch` may send the
   * access token or the CSRF token. Requests to any other origin go out untouched. */
  apiOrigins?: string[];
  /** Cookie transport: check right after `login()` that the browser stored Tessera's
   * cookies, and throw `CookiesNotStoredError` if not (default `true`). The check reads the
   * CSRF cookie when the page can, else asks `GET /v1/auth/me` once. */
  checkCookies?: boolean;
}

interface SharedState {
  /** Bumped by every refresh; a caller that saw an older one knows a refresh happened. */
  epoch: number;
  sessionId?: string;
  csrfToken?: string;
  accessToken?: string;
  refreshToken?: string;
}

/** The `200` of a sign-in for an account with a second factor. */
interface MfaRequiredBody {
  mfa_required: true;
  challenge: string;
  expires_in: number;
  methods: string[];
}

interface TokenResponse {
  mfa_required?: undefined;
  access_token?: string;
  refresh_token?: string;
  csrf_token?: string;
  expires_in: number;
  session_id: string;
  user: User;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** How long a storage lease (the fallback lock) is held at most, should its tab die. */
const LEASE_MS = 10_000;

class MemoryStorage implements KeyValueStorage {
  private readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function defaultStorage(): KeyValueStorage {
  try {
    const storage = (globalThis as { localStorage?: KeyValueStorage }).localStorage;
    if (storage) return storage;
  } catch {
    // Access denied (sandboxed frame, blocked storage): this tab keeps its own state.
  }
  return new MemoryStorage();
}

/** Whether this is a browser-like platform with tabs sharing `localStorage`. */
function hasLocalStorage(): boolean {
  try {
    return Boolean((globalThis as { localStorage?: unknown }).localStorage);
  } catch {
    return true; // Present but denied: a browser.
  }
}

function readCookie(name: string): string | undefined {
  const doc = (globalThis as { document?: { cookie?: string } }).document;
  for (const part of (doc?.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return undefined;
}

function transportOf(option: TransportOption | undefined): Transport {
  if (option === undefined || option === 'cookie') return 'cookie';
  if (option === 'body' || option === 'bearer') return 'body';
  throw new TypeError(`transport must be 'cookie' or 'body' (or 'bearer', its old name), not ${String(option)}`);
}

export class TesseraClient {
  readonly baseUrl: string;
  /** `cookie` or `body`, whichever name it was given by. */
  readonly transport: Transport;
  private readonly storage: KeyValueStorage | AsyncKeyValueStorage;
  /** The state as this client last read or wrote it (what `signedIn` answers from). */
  private known: SharedState = { epoch: 0 };
  private readonly checkCookies: boolean;
  private readonly locks: LockManagerLike | null;
  /** No Web Locks: take turns with other tabs through a lease in storage. */
  private readonly lease: boolean;
  private readonly channel: ChannelLike | null;
  private readonly fetchImpl: typeof fetch;
  private readonly stateKey: string;
  private readonly lockName: string;
  private readonly listeners = new Set<(event: SignedOutEvent) => void>();
  private inflight: Promise<void> | null = null;
  private readonly trustedOrigins: Set<string>;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    const page = (globalThis as { location?: { origin?: string } }).location?.origin;
    this.trustedOrigins = new Set(
      [this.baseUrl, ...(options.apiOrigins ?? []), ...(page ? [page] : [])].map((o) => new URL(o).origin),
    );
    this.transport = transportOf(options.transport);
    this.checkCookies = options.checkCookies ?? true;
    this.storage = options.storage ?? defaultStorage();
    // A synchronous store answers at once: `signedIn` is right from the start.
    void this.readState();
    const namespace = options.namespace ?? 'tessera';
    this.stateKey = `${namespace}:state`;
    this.lockName = `${namespace}:refresh`;
    const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
    this.locks = options.locks !== undefined ? options.locks : (nav?.locks ?? null);
    this.lease = this.locks === null && (options.locks === null || hasLocalStorage());
    const fetchImpl = options.fetch ?? globalThis.fetch;
    this.fetchImpl = (input, init) => fetchImpl(input, init);
    const Channel = (globalThis as { BroadcastChannel?: new (name: string) => ChannelLike })
      .BroadcastChannel;
    this.channel =
      options.channel !== undefined ? options.channel : Channel ? new Channel(namespace) : null;
    // Node's BroadcastChannel would keep a script (a test, a CLI) from ever exiting.
    if (options.channel === undefined) (this.channel as { unref?: () => void } | null)?.unref?.();
    this.channel?.addEventListener('message', ({ data }) => {
      const message = data as { type?: string; code?: string } | null;
      if (message?.type === 'signed-out' && typeof message.code === 'string') {
        this.emit({ code: message.code });
      }
    });
  }

  /** Calls `listener` when this client (or another tab's) is signed out; returns an
   * unsubscribe function. */
  onSignedOut(listener: (event: SignedOutEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Whether a session is stored (it may still have been revoked meanwhile: the next call
   * tells). With a synchronous store (`localStorage`) it reads the store, so it also sees
   * other tabs' sign-ins and sign-outs. With an asynchronous one it answers from what this
   * client last read or wrote: `await client.isSignedIn()` when the app starts.
   */
  get signedIn(): boolean {
    const value = this.storageGet();
    if (!(value instanceof Promise)) this.known = parseState(value);
    return this.known.sessionId !== undefined;
  }

  /** Whether a session is stored, read from the store itself (any kind of store). */
  async isSignedIn(): Promise<boolean> {
    return (await this.readState()).sessionId !== undefined;
  }

  async register(email: string, password: string): Promise<User> {
    const body = await this.call<{ user: User }>('POST', '/v1/auth/register', { email, password });
    return body.user;
  }

  async login(email: string, password: string): Promise<LoginResult> {
    // A session this device already holds proves it to Tessera's per-account lock, so the
    // owner gets through a lock that others' guesses caused (cookie transport sends the
    // refresh cookie by itself).
    const held = this.transport === 'body' ? (await this.readState()).refreshToken : undefined;
    const grant = await this.call<TokenResponse | MfaRequiredBody>('POST', '/v1/auth/login', {
      email,
      password,
      transport: this.transport,
      ...(held ? { refresh_token: held } : {}),
    });
    return this.signedInWith(grant);
  }

  /**
   * The second step of a sign-in that threw {@link MfaRequiredError}: its `challenge` and a
   * code (`totp`: the authenticator app's, `recovery_code`: one of the recovery codes) open
   * the session, as `login` would have. In cookie transport only this browser can finish it.
   */
  async verifyMfa(challenge: string, method: 'totp' | 'recovery_code', code: string): Promise<LoginResult> {
    const grant = await this.call<TokenResponse>('POST', '/v1/auth/mfa/verify', { challenge, method, code });
    return this.signedInWith(grant);
  }

  /** Stores the session a sign-in answered, or throws `MfaRequiredError` for its challenge. */
  private async signedInWith(grant: TokenResponse | MfaRequiredBody): Promise<LoginResult> {
    if (grant.mfa_required) throw new MfaRequiredError(grant);
    if (this.transport === 'cookie' && this.checkCookies) await this.cookiesStored(grant);
    await this.writeState({ epoch: (await this.readState()).epoch + 1, ...this.tokensOf(grant) });
    return { user: grant.user, sessionId: grant.session_id, expiresIn: grant.expires_in };
  }

  /**
   * After a cookie login: did the browser keep the cookies? It silently drops them when the
   * page and Tessera are different sites (SameSite), or when they are `Secure` and the page
   * is plain HTTP on a host other than localhost; every later call would then fail with "no
   * access token". The readable CSRF cookie answers when the page shares Tessera's host;
   * otherwise one `GET /v1/auth/me` does.
   */
  private async cookiesStored(grant: TokenResponse): Promise<void> {
    if (grant.csrf_token && readCookie('tessera_csrf') === grant.csrf_token) return;
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}/v1/auth/me`, { credentials: 'include' });
    } catch {
      return; // Unreachable just now: the next call will say so.
    }
    if (response.status !== 401) return;
    const page = (globalThis as { location?: { origin?: string } }).location?.origin;
    throw new CookiesNotStoredError(0, 'cookies_not_stored', {
      title: 'Signed in, but the browser kept no cookie',
      detail:
        `Tessera at ${this.baseUrl} accepted the password, but ${page ? `this page (${page})` : 'this client'} ` +
        'did not store its cookies, so every call would fail with "no access token". Browsers keep ' +
        "another site's cookies only when the page and Tessera are one site: serve them from " +
        'one domain (app.example.com and auth.example.com), and in development use the same host ' +
        'name for both (localhost and 127.0.0.1 are different sites). Plain-HTTP development ' +
        'also needs TESSERA_COOKIE_SECURE=false. Outside browsers, or across sites, use ' +
        "transport: 'body'.",
    });
  }

  /** Ends this session (idempotent) and forgets it. */
  async logout(): Promise<void> {
    const state = await this.readState();
    try {
      if (this.transport === 'body' && state.refreshToken) {
        await this.call('POST', '/v1/auth/logout', { refresh_token: state.refreshToken });
      } else if (this.transport === 'cookie') {
        await this.call('POST', '/v1/auth/logout', undefined, { csrf: true });
      }
    } catch (e) {
      // Already over on the server's side: the outcome is the one asked for.
      if (!(e instanceof TesseraError && SIGNED_OUT_CODES.has(e.code))) throw e;
    }
    await this.signOutLocally({ code: 'logged_out' });
  }

  /** `scope: 'all'` (default) ends every session of the user, this one included;
   * `'others'` every one but this. */
  async logoutAll(options: { scope?: 'all' | 'others' } = {}): Promise<void> {
    const scope = options.scope ?? 'all';
    await this.authed('POST', '/v1/auth/logout-all', { scope });
    if (scope === 'all') await this.signOutLocally({ code: 'logged_out' });
  }

  async sessions(): Promise<Session[]> {
    const body = await this.authed<{ sessions: Session[] }>('GET', '/v1/auth/sessions');
    return body.sessions;
  }

  async revokeSession(id: string): Promise<void> {
    await this.authed('DELETE', `/v1/auth/sessions/${encodeURIComponent(id)}`);
  }

  async me(): Promise<Me> {
    return this.authed<Me>('GET', '/v1/auth/me');
  }

  // ---- the account by email: the tokens come from the mailed links' fragments
  // (`/verify#token=`, `/reset#token=`, `/verify#change=`, `/login#link=`) ----

  /** Verifies the address with the token of a verification mail. */
  async verifyEmail(token: string): Promise<User> {
    return (await this.call<{ user: User }>('POST', '/v1/auth/email/verify', { token })).user;
  }

  /** Mails the signed-in user a new verification link (older ones stop working). */
  async resendVerification(): Promise<void> {
    await this.authed('POST', '/v1/auth/email/verify/resend');
  }

  /** Mails a reset link if the address has an account; the answer is the same either way. */
  async forgotPassword(email: string): Promise<void> {
    await this.call('POST', '/v1/auth/password/forgot', { email });
  }

  /** Sets a new password with a reset link's token; every session of the account ends. */
  async resetPassword(token: string, newPassword: string): Promise<void> {
    await this.call('POST', '/v1/auth/password/reset', { token, new_password: newPassword });
  }

  /** Asks to move the signed-in account to `newEmail`; the link mailed there confirms it. */
  async changeEmail(newEmail: string, currentPassword: string): Promise<void> {
    await this.authed('POST', '/v1/auth/email/change', {
      new_email: newEmail,
      current_password: currentPassword,
    });
  }

  /** Confirms an address change with the token mailed to the new address. */
  async confirmEmailChange(token: string): Promise<User> {
    return (await this.call<{ user: User }>('POST', '/v1/auth/email/change/confirm', { token })).user;
  }

  /**
   * Mails a sign-in link if the address has an account (`TESSERA_EMAIL_LINK_SIGNIN`). In cookie
   * transport the link then signs in only in this browser (it keeps a `tessera_link` cookie).
   */
  async sendSignInLink(email: string): Promise<void> {
    await this.call('POST', '/v1/auth/email-link', { email, transport: this.transport });
  }

  /** Signs in with a sign-in link's token, as `login` does with a password. */
  async signInWithLink(token: string): Promise<LoginResult> {
    const grant = await this.call<TokenResponse | MfaRequiredBody>('POST', '/v1/auth/email-link/verify', {
      token,
      transport: this.transport,
    });
    return this.signedInWith(grant);
  }

  // ---- passkeys (WebAuthn): the browser's ceremonies with Tessera's options and checks ----

  /**
   * Registers a passkey for the signed-in account: Tessera's options, the browser's
   * `navigator.credentials.create` (fingerprint, face or screen lock), Tessera's check.
   * `name` defaults to "Passkey N".
   */
  async addPasskey(options: { name?: string; credentials?: CredentialsContainerLike } = {}): Promise<Passkey> {
    const container = options.credentials ?? defaultCredentials();
    const creation = await this.authed<{ publicKey: Record<string, unknown> }>(
      'POST',
      '/v1/account/passkeys/register/options',
    );
    const credential = await container.create({ publicKey: creationOptionsFromJSON(creation.publicKey) });
    if (!credential) throw new Error('No passkey was created.');
    return this.authed<Passkey>('POST', '/v1/account/passkeys/register', {
      ...(options.name ? { name: options.name } : {}),
      credential: credentialToJSON(credential),
    });
  }

  /** The signed-in account's passkeys, oldest first. */
  async passkeys(): Promise<Passkey[]> {
    return (await this.authed<{ passkeys: Passkey[] }>('GET', '/v1/account/passkeys')).passkeys;
  }

  async renamePasskey(id: string, name: string): Promise<Passkey> {
    return this.authed<Passkey>('PATCH', `/v1/account/passkeys/${encodeURIComponent(id)}`, { name });
  }

  /** Removes one of the account's passkeys: it signs in no more. */
  async removePasskey(id: string): Promise<void> {
    await this.authed('DELETE', `/v1/account/passkeys/${encodeURIComponent(id)}`);
  }

  /**
   * Signs in with a passkey alone (no address typed: the authenticator offers the passkeys it
   * holds for this site), as `login` does with a password. `mediation: 'conditional'` for
   * passkeys offered in the address field's autofill.
   */
  async signInWithPasskey(
    options: { credentials?: CredentialsContainerLike; mediation?: CredentialMediationRequirement } = {},
  ): Promise<LoginResult> {
    const container = options.credentials ?? defaultCredentials();
    const request = await this.call<{ ceremony: string; publicKey: Record<string, unknown> }>(
      'POST',
      '/v1/auth/passkey/options',
    );
    const credential = await container.get({
      publicKey: requestOptionsFromJSON(request.publicKey),
      ...(options.mediation ? { mediation: options.mediation } : {}),
    });
    if (!credential) throw new Error('No passkey was chosen.');
    const grant = await this.call<TokenResponse>('POST', '/v1/auth/passkey', {
      ceremony: request.ceremony,
      credential: credentialToJSON(credential),
      transport: this.transport,
    });
    if (this.transport === 'cookie' && this.checkCookies) await this.cookiesStored(grant);
    await this.writeState({ epoch: (await this.readState()).epoch + 1, ...this.tokensOf(grant) });
    return { user: grant.user, sessionId: grant.session_id, expiresIn: grant.expires_in };
  }

  /**
   * Proves again that it is the holder (the password, or a TOTP or recovery code), for the
   * changes that need a recent sign-in (`reauthentication_required`): the session's tokens
   * are renewed with a new `auth_time`, as `POST /v1/auth/reauthenticate` answers.
   */
  async reauthenticate(
    proof: { password: string } | { method: 'totp' | 'recovery_code'; code: string },
  ): Promise<void> {
    const grant = await this.authed<TokenResponse>('POST', '/v1/auth/reauthenticate', proof);
    const state = await this.readState();
    await this.writeState({ ...state, epoch: state.epoch + 1, ...this.tokensOf(grant) });
  }

  /** `reauthenticate` with one of the account's passkeys: the browser's ceremony. */
  async reauthenticateWithPasskey(options: { credentials?: CredentialsContainerLike } = {}): Promise<void> {
    const container = options.credentials ?? defaultCredentials();
    const request = await this.authed<{ publicKey: Record<string, unknown> }>(
      'POST',
      '/v1/auth/reauthenticate/passkey/options',
    );
    const credential = await container.get({ publicKey: requestOptionsFromJSON(request.publicKey) });
    if (!credential) throw new Error('No passkey was chosen.');
    const grant = await this.authed<TokenResponse>('POST', '/v1/auth/reauthenticate', {
      method: 'passkey',
      credential: credentialToJSON(credential),
    });
    const state = await this.readState();
    await this.writeState({ ...state, epoch: state.epoch + 1, ...this.tokensOf(grant) });
  }

  /**
   * `fetch` for any API that accepts Tessera's tokens (Tessera itself, or a resource server
   * behind the Node middleware). Relative URLs are resolved by the platform, not against
   * `baseUrl`. On `401 token_expired` it refreshes (once for all callers) and retries once,
   * so request bodies must be re-sendable (strings, FormData, Blobs; not streams). A session
   * that is over (revoked, reused, expired) fires the signed-out event and the 401 is returned.
   */
  async fetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const seen = (await this.readState()).epoch;
    // A Request's body can be read once: keep a copy for the retry.
    const again = input instanceof Request ? input.clone() : input;
    const first = await this.send(input, init);
    if (first.status !== 401) return first;
    const code = await codeOf(first);
    if (code !== 'token_expired') {
      if (code && SIGNED_OUT_CODES.has(code)) await this.signOutLocally({ code });
      return first;
    }
    try {
      await this.refresh(seen);
    } catch (e) {
      if (e instanceof TesseraError && SIGNED_OUT_CODES.has(e.code)) return first;
      throw e;
    }
    const second = await this.send(again, init);
    if (second.status === 401) {
      const again = await codeOf(second);
      if (again && SIGNED_OUT_CODES.has(again)) await this.signOutLocally({ code: again });
    }
    return second;
  }

  /**
   * Rotates the refresh token, unless a refresh newer than `seenEpoch` (the epoch a caller
   * read before its request failed) already happened here or in another tab. Concurrent
   * calls share one refresh; tabs take turns under one lock.
   */
  refresh(seenEpoch?: number): Promise<void> {
    if (this.inflight) return this.inflight;
    const run = async (waited: boolean) => {
      const state = await this.readState();
      if (seenEpoch !== undefined && state.epoch !== seenEpoch) return;
      if (this.transport === 'body' && !state.refreshToken) {
        // Signed out meanwhile (here or in another tab): nothing to present.
        const error = new InvalidRefreshTokenError(401, 'invalid_refresh_token', {
          detail: 'no refresh token is stored: sign in again',
        });
        await this.signOutLocally({ code: error.code, error });
        throw error;
      }
      // In a browser, localStorage reaches other tabs' processes a little later than the
      // lock does, so the epoch may miss a refresh another tab has just finished. The cookie
      // jar is current everywhere: if the access cookie works now, someone refreshed it.
      // Asked only when this tab had to wait for the lock, i.e. another tab was refreshing:
      // otherwise the answer is a foreseeable 401 (one more red line in the console per
      // expiry). Should another tab have finished just before this one asked for the lock,
      // this refresh presents the refresh cookie that tab left in the jar: one more
      // rotation, never a reuse.
      if (this.transport === 'cookie' && seenEpoch !== undefined && waited && (await this.accessCookieWorks())) {
        return;
      }
      let grant: TokenResponse;
      try {
        grant =
          this.transport === 'body'
            ? await this.call<TokenResponse>('POST', '/v1/auth/refresh', {
                refresh_token: state.refreshToken ?? '',
              })
            : await this.call<TokenResponse>('POST', '/v1/auth/refresh', undefined, {
                csrf: true,
              });
      } catch (e) {
        if (e instanceof TesseraError && SIGNED_OUT_CODES.has(e.code)) {
          await this.signOutLocally({ code: e.code, error: e });
        }
        throw e;
      }
      await this.writeState({ ...state, epoch: state.epoch + 1, ...this.tokensOf(grant) });
    };
    this.inflight = this.exclusive(run).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async accessCookieWorks(): Promise<boolean> {
    try {
      const response = await this.fetchImpl(`${this.baseUrl}/v1/auth/me`, { credentials: 'include' });
      return response.ok;
    } catch {
      return false;
    }
  }

  private tokensOf(grant: TokenResponse): Partial<SharedState> {
    return this.transport === 'body'
      ? {
          sessionId: grant.session_id,
          accessToken: grant.access_token,
          refreshToken: grant.refresh_token,
        }
      : { sessionId: grant.session_id, csrfToken: grant.csrf_token };
  }

  private async authed<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'content-type': 'application/json' };
    }
    const response = await this.fetch(this.baseUrl + path, init);
    if (!response.ok) throw await errorFromResponse(response);
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  /** An unauthenticated call to Tessera (register, login, refresh, logout). */
  private async call<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { csrf?: boolean } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (options.csrf) {
      const csrf = await this.csrfToken();
      if (csrf) headers['x-csrf-token'] = csrf;
    }
    let response: Response;
    try {
      response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        credentials: this.transport === 'cookie' ? 'include' : 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new NetworkError(0, 'network_error', { detail: String(e) });
    }
    if (!response.ok) throw await errorFromResponse(response);
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  private async send(input: string | URL | Request, init: RequestInit): Promise<Response> {
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    const state = await this.readState();
    if (!this.isTrusted(input)) {
      // Tokens never go to an origin nobody named (a CDN, an analytics endpoint).
      return this.fetchImpl(input, init);
    }
    if (this.transport === 'body') {
      if (state.accessToken && !headers.has('authorization')) {
        headers.set('authorization', `Bearer ${state.accessToken}`);
      }
    } else if (!SAFE_METHODS.has(method)) {
      const csrf = state.csrfToken ?? readCookie('tessera_csrf');
      if (csrf) headers.set('x-csrf-token', csrf);
    }
    try {
      return await this.fetchImpl(input, {
        ...init,
        headers,
        credentials: this.transport === 'cookie' ? 'include' : init.credentials,
      });
    } catch (e) {
      throw new NetworkError(0, 'network_error', { detail: String(e) });
    }
  }

  private isTrusted(input: string | URL | Request): boolean {
    const base = (globalThis as { location?: { href?: string } }).location?.href ?? this.baseUrl;
    try {
      const url = new URL(input instanceof Request ? input.url : String(input), base);
      return this.trustedOrigins.has(url.origin);
    } catch {
      return false;
    }
  }

  /** The CSRF token: from the login/refresh answer, or the cookie when the app shares
   * Tessera's host (a token stored by an older version of the page, say). */
  private async csrfToken(): Promise<string | undefined> {
    return (await this.readState()).csrfToken ?? readCookie('tessera_csrf');
  }

  /** The store's raw entry: a string at once from a synchronous store, a promise otherwise. */
  private storageGet(): string | null | undefined | Promise<string | null | undefined> {
    try {
      return this.storage.getItem(this.stateKey);
    } catch {
      return null; // Denied: as good as signed out.
    }
  }

  private async readState(): Promise<SharedState> {
    let raw: string | null | undefined;
    try {
      raw = await this.storageGet();
    } catch {
      raw = null; // An asynchronous store that failed: as good as signed out.
    }
    this.known = parseState(raw);
    return this.known;
  }

  private async writeState(state: SharedState): Promise<void> {
    this.known = state;
    try {
      await this.storage.setItem(this.stateKey, JSON.stringify(state));
    } catch {
      // Storage full or denied: the next read falls back to "signed out", never to stale tokens.
    }
  }

  private async signOutLocally(event: SignedOutEvent): Promise<void> {
    // The epoch survives, so a tab that read it before the sign-out does not mistake a later
    // sign-in's state for a refresh it missed.
    await this.writeState({ epoch: (await this.readState()).epoch + 1 });
    this.channel?.postMessage({ type: 'signed-out', code: event.code });
    this.emit(event);
  }

  private emit(event: SignedOutEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  /** Runs `task` while no other tab of this origin runs one under the same name; `task`
   * learns whether it had to wait for another tab. */
  private async exclusive(task: (waited: boolean) => Promise<void>): Promise<void> {
    const locks = this.locks;
    if (!locks) return this.lease ? this.withLease(task) : task(false);
    const taken = await locks.request(this.lockName, { ifAvailable: true }, async (lock) => {
      if (lock === null) return false;
      await task(false);
      return true;
    });
    if (!taken) await locks.request(this.lockName, {}, () => task(true));
  }

  /** The fallback lock: a lease in shared storage, last writer wins. It cannot be perfect
   * (storage has no compare-and-swap); should two tabs ever refresh together anyway, the
   * server's reuse grace window answers both with the same successor, so no one is logged out. */
  private async withLease(task: (waited: boolean) => Promise<void>): Promise<void> {
    const key = `${this.lockName}:lease`;
    const me = `${Date.now()}-${Math.random()}`;
    const deadline = Date.now() + LEASE_MS;
    const holder = async () => {
      try {
        return JSON.parse((await this.storage.getItem(key)) ?? 'null') as { owner: string; until: number } | null;
      } catch {
        return null;
      }
    };
    let waited = false;
    while (Date.now() < deadline) {
      const held = await holder();
      if (!held || held.until < Date.now()) {
        await this.storage.setItem(key, JSON.stringify({ owner: me, until: Date.now() + LEASE_MS }));
        // Let a racing tab's write land; whoever wrote last owns the lease.
        await sleep(25);
        if ((await holder())?.owner === me) break;
      }
      waited = true;
      await sleep(50);
    }
    try {
      await task(waited);
    } finally {
      if ((await holder())?.owner === me) await this.storage.removeItem(key);
    }
  }
}

function parseState(raw: string | null | undefined): SharedState {
  try {
    const parsed: unknown = raw ? JSON.parse(raw) : null;
    if (parsed && typeof parsed === 'object' && typeof (parsed as SharedState).epoch === 'number') {
      return parsed as SharedState;
    }
  } catch {
    // Corrupt: as good as signed out.
  }
  return { epoch: 0 };
}

/** The problem `code` of a response, read from a copy so the caller still has the body. */
async function codeOf(response: Response): Promise<string | undefined> {
  try {
    const body: unknown = await response.clone().json();
    const code = (body as { code?: unknown } | null)?.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}
