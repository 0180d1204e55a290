// The browser side of Tessera: sign up, sign in, sessions, sign out, and a `fetch` that
// keeps an app signed in: it attaches the bearer token or the CSRF header, and on
// `401 token_expired` refreshes once (for every concurrent call of the page, and for every
// tab, through the Web Locks API or a storage lease) and retries.
//
// Shared state (the session, the CSRF token, in bearer transport the tokens) lives in one
// storage entry that all tabs read afresh before every use, so a tab that slept for an hour
// never presents a refresh token another tab has since rotated out.

import {
  errorFromResponse,
  InvalidRefreshTokenError,
  NetworkError,
  SIGNED_OUT_CODES,
  TesseraError,
} from './errors.js';

export * from './errors.js';

export interface User {
  id: string;
  email: string;
  created_at: string;
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

/** `cookie`: tokens in HttpOnly cookies (Tessera must share the app's site, or list its
 * origin in `TESSERA_CORS_ORIGINS`); `bearer`: tokens kept in storage, sent as a header. */
export type Transport = 'cookie' | 'bearer';

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

export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  close(): void;
}

export interface ClientOptions {
  /** Tessera's origin, e.g. `https://auth.example.com` (no trailing path). */
  baseUrl: string;
  transport?: Transport;
  /** Shared between tabs; default `localStorage` when there is one, else memory. */
  storage?: KeyValueStorage;
  /** Default `navigator.locks` when there is one, else a lease in `storage`. */
  locks?: LockManagerLike | null;
  /** Tells other tabs about sign-outs; default a `BroadcastChannel` when there is one. */
  channel?: ChannelLike | null;
  fetch?: typeof fetch;
  /** Prefix of storage keys, lock and channel names (several Tessera apps on one origin). */
  namespace?: string;
  /** Origins of APIs, besides Tessera's and the page's own, to which `fetch` may send the
   * access token or the CSRF token. Requests to any other origin go out untouched. */
  apiOrigins?: string[];
}

interface SharedState {
  /** Bumped by every refresh; a caller that saw an older one knows a refresh happened. */
  epoch: number;
  sessionId?: string;
  csrfToken?: string;
  accessToken?: string;
  refreshToken?: string;
}

interface TokenResponse {
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

function readCookie(name: string): string | undefined {
  const doc = (globalThis as { document?: { cookie?: string } }).document;
  for (const part of (doc?.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return undefined;
}

export class TesseraClient {
  readonly baseUrl: string;
  readonly transport: Transport;
  private readonly storage: KeyValueStorage;
  private readonly locks: LockManagerLike | null;
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
    this.transport = options.transport ?? 'cookie';
    this.storage = options.storage ?? defaultStorage();
    const namespace = options.namespace ?? 'tessera';
    this.stateKey = `${namespace}:state`;
    this.lockName = `${namespace}:refresh`;
    const nav = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator;
    this.locks = options.locks !== undefined ? options.locks : (nav?.locks ?? null);
    const fetchImpl = options.fetch ?? globalThis.fetch;
    this.fetchImpl = (input, init) => fetchImpl(input, init);
    const Channel = (globalThis as { BroadcastChannel?: new (name: string) => ChannelLike })
      .BroadcastChannel;
    this.channel =
      options.channel !== undefined ? options.channel : Channel ? new Channel(namespace) : null;
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

  /** Whether a session is stored (it may still have been revoked meanwhile). */
  get signedIn(): boolean {
    return this.readState().sessionId !== undefined;
  }

  async register(email: string, password: string): Promise<User> {
    const body = await this.call<{ user: User }>('POST', '/v1/auth/register', { email, password });
    return body.user;
  }

  async login(email: string, password: string): Promise<LoginResult> {
    // A session this device already holds proves it to Tessera's per-account lock, so the
    // owner gets through a lock that others' guesses caused (cookie transport sends the
    // refresh cookie by itself).
    const held = this.transport === 'bearer' ? this.readState().refreshToken : undefined;
    const grant = await this.call<TokenResponse>('POST', '/v1/auth/login', {
      email,
      password,
      transport: this.transport === 'cookie' ? 'cookie' : 'body',
      ...(held ? { refresh_token: held } : {}),
    });
    this.writeState({ epoch: this.readState().epoch + 1, ...this.tokensOf(grant) });
    return { user: grant.user, sessionId: grant.session_id, expiresIn: grant.expires_in };
  }

  /** Ends this session (idempotent) and forgets it. */
  async logout(): Promise<void> {
    const state = this.readState();
    try {
      if (this.transport === 'bearer' && state.refreshToken) {
        await this.call('POST', '/v1/auth/logout', { refresh_token: state.refreshToken });
      } else if (this.transport === 'cookie') {
        await this.call('POST', '/v1/auth/logout', undefined, { csrf: true });
      }
    } catch (e) {
      // Already over on the server's side: the outcome is the one asked for.
      if (!(e instanceof TesseraError && SIGNED_OUT_CODES.has(e.code))) throw e;
    }
    this.signOutLocally({ code: 'logged_out' });
  }

  /** `scope: 'all'` (default) ends every session of the user, this one included;
   * `'others'` every one but this. */
  async logoutAll(options: { scope?: 'all' | 'others' } = {}): Promise<void> {
    const scope = options.scope ?? 'all';
    await this.authed('POST', '/v1/auth/logout-all', { scope });
    if (scope === 'all') this.signOutLocally({ code: 'logged_out' });
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

  /**
   * `fetch` for any API that accepts Tessera's tokens (Tessera itself, or a resource server
   * behind the Node middleware). Relative URLs are resolved by the platform, not against
   * `baseUrl`. On `401 token_expired` it refreshes (once for all callers) and retries once,
   * so request bodies must be re-sendable (strings, FormData, Blobs; not streams). A session
   * that is over (revoked, reused, expired) fires the signed-out event and the 401 is returned.
   */
  async fetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const seen = this.readState().epoch;
    // A Request's body can be read once: keep a copy for the retry.
    const again = input instanceof Request ? input.clone() : input;
    const first = await this.send(input, init);
    if (first.status !== 401) return first;
    const code = await codeOf(first);
    if (code !== 'token_expired') {
      if (code && SIGNED_OUT_CODES.has(code)) this.signOutLocally({ code });
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
      if (again && SIGNED_OUT_CODES.has(again)) this.signOutLocally({ code: again });
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
    const run = async () => {
      const state = this.readState();
      if (seenEpoch !== undefined && state.epoch !== seenEpoch) return;
      if (this.transport === 'bearer' && !state.refreshToken) {
        // Signed out meanwhile (here or in another tab): nothing to present.
        const error = new InvalidRefreshTokenError(401, 'invalid_refresh_token', {
          detail: 'no refresh token is stored: sign in again',
        });
        this.signOutLocally({ code: error.code, error });
        throw error;
      }
      // In a browser, localStorage reaches other tabs' processes a little later than the
      // lock does, so the epoch may miss a refresh another tab has just finished. The cookie
      // jar is current everywhere: if the access cookie works now, someone refreshed it.
      if (this.transport === 'cookie' && seenEpoch !== undefined && (await this.accessCookieWorks())) {
        return;
      }
      let grant: TokenResponse;
      try {
        grant =
          this.transport === 'bearer'
            ? await this.call<TokenResponse>('POST', '/v1/auth/refresh', {
                refresh_token: state.refreshToken ?? '',
              })
            : await this.call<TokenResponse>('POST', '/v1/auth/refresh', undefined, {
                csrf: true,
              });
      } catch (e) {
        if (e instanceof TesseraError && SIGNED_OUT_CODES.has(e.code)) {
          this.signOutLocally({ code: e.code, error: e });
        }
        throw e;
      }
      this.writeState({ ...state, epoch: state.epoch + 1, ...this.tokensOf(grant) });
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
    return this.transport === 'bearer'
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
      const csrf = this.csrfToken();
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
    const state = this.readState();
    if (!this.isTrusted(input)) {
      // Tokens never go to an origin nobody named (a CDN, an analytics endpoint).
      return this.fetchImpl(input, init);
    }
    if (this.transport === 'bearer') {
      if (state.accessToken && !headers.has('authorization')) {
        headers.set('authorization', `Bearer ${state.accessToken}`);
      }
    } else if (!SAFE_METHODS.has(method)) {
      const csrf = this.csrfToken();
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
  private csrfToken(): string | undefined {
    return this.readState().csrfToken ?? readCookie('tessera_csrf');
  }

  private readState(): SharedState {
    try {
      const raw = this.storage.getItem(this.stateKey);
      const parsed: unknown = raw ? JSON.parse(raw) : null;
      if (parsed && typeof parsed === 'object' && typeof (parsed as SharedState).epoch === 'number') {
        return parsed as SharedState;
      }
    } catch {
      // Unreadable or corrupt: as good as signed out.
    }
    return { epoch: 0 };
  }

  private writeState(state: SharedState): void {
    try {
      this.storage.setItem(this.stateKey, JSON.stringify(state));
    } catch {
      // Storage full or denied: the next read falls back to "signed out", never to stale tokens.
    }
  }

  private signOutLocally(event: SignedOutEvent): void {
    // The epoch survives, so a tab that read it before the sign-out does not mistake a later
    // sign-in's state for a refresh it missed.
    this.writeState({ epoch: this.readState().epoch + 1 });
    this.channel?.postMessage({ type: 'signed-out', code: event.code });
    this.emit(event);
  }

  private emit(event: SignedOutEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  /** Runs `task` while no other tab of this origin runs one under the same name. */
  private exclusive(task: () => Promise<void>): Promise<void> {
    if (this.locks) return this.locks.request(this.lockName, task);
    return this.withLease(task);
  }

  /** The fallback lock: a lease in shared storage, last writer wins. It cannot be perfect
   * (storage has no compare-and-swap); should two tabs ever refresh together anyway, the
   * server's reuse grace window answers both with the same successor, so no one is logged out. */
  private async withLease(task: () => Promise<void>): Promise<void> {
    const key = `${this.lockName}:lease`;
    const me = `${Date.now()}-${Math.random()}`;
    const deadline = Date.now() + LEASE_MS;
    const holder = () => {
      try {
        return JSON.parse(this.storage.getItem(key) ?? 'null') as { owner: string; until: number } | null;
      } catch {
        return null;
      }
    };
    while (Date.now() < deadline) {
      const held = holder();
      if (!held || held.until < Date.now()) {
        this.storage.setItem(key, JSON.stringify({ owner: me, until: Date.now() + LEASE_MS }));
        // Let a racing tab's write land; whoever wrote last owns the lease.
        await sleep(25);
        if (holder()?.owner === me) break;
      }
      await sleep(50);
    }
    try {
      await task();
    } finally {
      if (holder()?.owner === me) this.storage.removeItem(key);
    }
  }
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
