// Drives Tessera's built-in /login and /account pages through the public API with the cookie
// transport: the tokens stay in HttpOnly cookies, and every unsafe request echoes the
// readable CSRF cookie in X-CSRF-Token. No inline script anywhere (the pages' CSP forbids it).

const CSRF_COOKIE = 'tessera_csrf';
// Bumped in localStorage after every refresh, so a tab that waited for another tab's refresh
// sees it happened and does not rotate the token a second time.
const REFRESH_EPOCH_KEY = 'tessera.refresh-epoch';
const REFRESH_LOCK = 'tessera-refresh';
// Answers after which only signing in again helps.
const SIGNED_OUT = new Set([
  'invalid_token', 'session_revoked', 'invalid_refresh_token', 'refresh_token_expired',
  'refresh_token_reused', 'csrf_failed',
]);

class Problem extends Error {
  constructor(status, code, detail, retryAfter, errors) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.errors = errors || [];
  }
}

function csrfToken() {
  for (const part of document.cookie.split(';')) {
    const [name, ...rest] = part.trim().split('=');
    if (name === CSRF_COOKIE) return decodeURIComponent(rest.join('='));
  }
  return '';
}

async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') {
    const token = csrfToken();
    if (token) headers['x-csrf-token'] = token;
  }
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Problem(0, 'network_error', 'The server could not be reached.');
  }
  if (response.ok) return response.status === 204 ? null : response.json();
  let problem = {};
  try { problem = await response.json(); } catch { /* not a problem document */ }
  const retryAfter = Number(response.headers.get('retry-after')) || undefined;
  throw new Problem(response.status, problem.code || `http_${response.status}`, problem.detail,
    retryAfter, problem.errors);
}

function refreshEpoch() {
  try { return localStorage.getItem(REFRESH_EPOCH_KEY) || ''; } catch { return ''; }
}

async function accessCookieWorks() {
  try {
    return (await fetch('/v1/auth/me', { credentials: 'same-origin' })).ok;
  } catch {
    return false;
  }
}

let refreshing = null;

// One refresh for every call of this page that saw its token expire, and, through the Web
// Locks API, one for every tab: a tab that got the lock after another tab refreshed finds the
// epoch moved and just retries with the new cookie.
function refreshOnce(seenEpoch) {
  if (!refreshing) {
    const run = async () => {
      if (refreshEpoch() !== seenEpoch) return;
      // localStorage reaches other tabs' processes a little later, so the epoch may not show
      // a refresh another tab finished just before we got the lock; the cookie jar is
      // current everywhere: if the access cookie works now, someone already refreshed it.
      if (await accessCookieWorks()) return;
      await call('POST', '/v1/auth/refresh');
      try { localStorage.setItem(REFRESH_EPOCH_KEY, `${Date.now()}-${Math.random()}`); } catch { /* private mode */ }
    };
    const locked = navigator.locks ? navigator.locks.request(REFRESH_LOCK, run) : run();
    refreshing = locked.finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function authed(method, path, body) {
  const seen = refreshEpoch();
  try {
    return await call(method, path, body);
  } catch (e) {
    if (e.code !== 'token_expired') throw e;
    await refreshOnce(seen);
    return call(method, path, body);
  }
}

function message(e) {
  switch (e.code) {
    case 'invalid_credentials': return 'That email and password don’t match. Check both and try again.';
    case 'email_taken': return 'An account with this email already exists. Sign in instead.';
    case 'email_not_verified': return 'Confirm your email address first: follow the link we mailed you.';
    case 'invalid_email_token': return 'This link is no longer valid: it was used already or replaced by a newer one. Ask for a new one.';
    case 'email_token_expired': return 'This link has expired. Ask for a new one.';
    case 'invalid_mfa_code': return 'That code is not right. Check it and try again.';
    case 'mfa_code_replayed': return 'That code was used already. Wait for the next one in your app.';
    case 'mfa_challenge_expired':
    case 'mfa_challenge_invalid':
    case 'mfa_challenge_other_browser': return 'This sign-in has expired. Enter your email and password again.';
    case 'rate_limited': {
      const s = e.retryAfter || 60;
      return `Too many attempts. Please wait ${s} second${s === 1 ? '' : 's'} and try again.`;
    }
    case 'validation_failed':
      // The server names the field and says what is wrong with it ("must be ...").
      return e.errors.length
        ? e.errors.map((f) => `${FIELD_LABELS[f.field] || f.field} ${f.message}.`).join(' ')
        : 'Please check the form.';
    case 'network_error': return 'Can’t reach the server. Check your connection and try again.';
    default: return e.message || 'Something went wrong. Please try again.';
  }
}

const FIELD_LABELS = {
  email: 'Email', password: 'Password', current_password: 'Current password', new_password: 'New password',
};

const REASONS = {
  // No session cookie at all: never signed in here, or the cookies ran out with the session.
  invalid_token: 'Please sign in to see your account.',
  signed_out: 'You have signed out.',
  session_revoked: 'You were signed out: this session was ended, perhaps from another device.',
  refresh_token_expired: 'Your session has expired. Please sign in again.',
  refresh_token_reused: 'For your safety you were signed out: this session was used from somewhere else.',
};

function show(id, text) {
  const el = document.getElementById(id);
  el.textContent = text || '';
  el.hidden = !text;
}

// ---- branding, and where to go after signing in ----

// What the server configured for its pages (TESSERA_PRODUCT_NAME, TESSERA_LOGO_URL,
// TESSERA_RETURN_TO_ORIGINS); without it, the defaults.
const pageConfig = fetch('/pages/config.json', { credentials: 'same-origin' })
  .then((r) => (r.ok ? r.json() : {}))
  .catch(() => ({}));
let productName = 'Tessera';

async function applyBranding() {
  const config = await pageConfig;
  productName = config.product_name || 'Tessera';
  for (const brand of document.querySelectorAll('.brand')) {
    const mark = brand.querySelector('.mark');
    brand.replaceChildren();
    if (config.logo_url) {
      const logo = document.createElement('img');
      logo.className = 'logo';
      logo.src = config.logo_url;
      logo.alt = '';
      brand.append(logo);
    } else if (mark) {
      brand.append(mark);
    }
    brand.append(productName);
  }
  document.title = document.title.replace(/Tessera$/, productName);
}

// `?return_to=` as a place this page may send the browser: a path of this server, or a URL of
// an origin the server lists. Anything else (another site, `javascript:`, `//host`) is
// ignored: the page must not be an open redirect.
async function returnTarget() {
  const raw = new URLSearchParams(location.search).get('return_to');
  if (!raw) return null;
  let url;
  try {
    url = new URL(raw, location.origin);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return null;
  if (url.origin === location.origin) return url.pathname + url.search + url.hash;
  const { return_to_origins: allowed = [] } = await pageConfig;
  return allowed.includes(url.origin) ? url.href : null;
}

async function afterSignIn(navigate) {
  navigate((await returnTarget()) || '/account');
}

function signedOut(code) {
  // The admin page sends its visitor back to itself once signed in again.
  const back = location.pathname === '/admin' ? '&return_to=%2Fadmin' : '';
  location.replace(`/login?reason=${encodeURIComponent(code)}${back}`);
}

// ---- /login ----

function loginPage() {
  const form = document.getElementById('auth-form');
  const submit = document.getElementById('submit');
  const title = document.getElementById('title');
  const password = document.getElementById('password');
  let mode = 'signin';
  // A mailed sign-in link: /login#link=TOKEN (the fragment never reaches a server log).
  const link = fragmentParam('link');
  if (link) {
    history.replaceState(null, '', location.pathname + location.search);
    call('POST', '/v1/auth/email-link/verify', { token: link, transport: 'cookie' })
      .then((answer) => signedInOrCode(answer, (to) => location.replace(to)), (e) => show('error', message(e)));
  }

  // The second step: an account with a second factor answers a challenge, not a session.
  const mfaForm = document.getElementById('mfa-form');
  const mfaCode = document.getElementById('mfa-code');
  let challenge = null;
  let method = 'totp';
  async function signedInOrCode(answer, navigate) {
    if (!answer || !answer.mfa_required) return afterSignIn(navigate);
    challenge = answer.challenge;
    form.hidden = true;
    document.getElementById('forgot-line').hidden = true;
    mfaForm.hidden = false;
    title.textContent = 'Two-step verification';
    mfaCode.focus();
    // The passkey part of the page offers a passkey when the account has one.
    document.dispatchEvent(new CustomEvent('tessera:second-step', { detail: answer }));
  }
  document.getElementById('mfa-switch').addEventListener('click', () => {
    method = method === 'totp' ? 'recovery_code' : 'totp';
    const totp = method === 'totp';
    document.getElementById('mfa-label').textContent = totp ? 'Verification code' : 'Recovery code';
    document.getElementById('mfa-hint').textContent = totp
      ? 'Enter the 6-digit code from your authenticator app.'
      : 'Enter one of the recovery codes you saved (each works once).';
    document.getElementById('mfa-switch').textContent = totp ? 'Use a recovery code instead' : 'Use your authenticator app instead';
    mfaCode.inputMode = totp ? 'numeric' : 'text';
    mfaCode.value = '';
    mfaCode.focus();
  });
  mfaForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const code = mfaCode.value.trim();
    if (!code) {
      show('error', 'Enter the code.');
      return;
    }
    const button = document.getElementById('mfa-submit');
    button.disabled = true;
    show('error', '');
    try {
      await call('POST', '/v1/auth/mfa/verify', { challenge, method, code });
      await afterSignIn((to) => location.assign(to));
    } catch (e) {
      show('error', message(e));
      button.disabled = false;
      if (e.code && e.code.startsWith('mfa_challenge')) {
        mfaForm.hidden = true;
        form.hidden = false;
        document.getElementById('forgot-line').hidden = false;
        setMode('signin');
        show('error', message(e));
        password.value = '';
        password.focus();
      } else {
        mfaCode.select();
      }
    }
  });
  const reason = new URLSearchParams(location.search).get('reason');
  if (reason && REASONS[reason]) show('notice', REASONS[reason]);
  // Someone already signed in (a cookie session exists) has nothing to do here.
  if (!reason && csrfToken()) {
    authed('GET', '/v1/auth/me').then(() => afterSignIn((to) => location.replace(to)), () => {});
  }

  function setMode(next) {
    mode = next;
    const signin = mode === 'signin';
    title.textContent = signin ? 'Sign in' : 'Create your account';
    submit.textContent = signin ? 'Sign in' : 'Create account';
    document.title = `${signin ? 'Sign in' : 'Create account'} · ${productName}`;
    document.getElementById('switch-text').textContent = signin ? 'New here?' : 'Already have an account?';
    document.getElementById('switch-mode').textContent = signin ? 'Create an account' : 'Sign in instead';
    password.autocomplete = signin ? 'current-password' : 'new-password';
    document.getElementById('password-hint').hidden = signin;
    show('error', '');
  }
  document.getElementById('switch-mode').addEventListener('click', () => {
    setMode(mode === 'signin' ? 'register' : 'signin');
    document.getElementById('email').focus();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = document.getElementById('email').value.trim();
    if (!email || !password.value) {
      show('error', 'Enter your email and password.');
      return;
    }
    submit.disabled = true;
    show('error', '');
    show('notice', '');
    try {
      if (mode === 'register') {
        const created = await call('POST', '/v1/auth/register', { email, password: password.value });
        // With required verification the account waits for its address to be confirmed.
        if (created && created.status === 'verification_sent') {
          show('notice', `We mailed a link to ${email}. Follow it to confirm your address, then sign in.`);
          setMode('signin');
          submit.disabled = false;
          return;
        }
      }
      const answer = await call('POST', '/v1/auth/login', { email, password: password.value, transport: 'cookie' });
      await signedInOrCode(answer, (to) => location.assign(to));
      submit.disabled = false;
    } catch (e) {
      if (e.code === 'email_taken') setMode('signin');
      show('error', message(e));
      submit.disabled = false;
      const wrong = new Set((e.errors || []).map((f) => f.field));
      for (const input of form.querySelectorAll('input')) {
        if (wrong.has(input.name)) input.setAttribute('aria-invalid', 'true');
        else input.removeAttribute('aria-invalid');
      }
      (form.querySelector('[aria-invalid="true"]') || password).focus();
    }
  });
}

// ---- the mailed links: /forgot, /reset#token=, /verify#token= (or #change=) ----

function fragmentParam(name) {
  return new URLSearchParams(location.hash.slice(1)).get(name);
}

function forgotPage() {
  const form = document.getElementById('forgot-form');
  const submit = document.getElementById('submit');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = document.getElementById('email').value.trim();
    if (!email) {
      show('error', 'Enter your email.');
      return;
    }
    submit.disabled = true;
    show('error', '');
    try {
      await call('POST', '/v1/auth/password/forgot', { email });
      // The same answer whether or not the address has an account.
      show('notice', `If ${email} has an account, a link to reset its password is on its way. Check your mail.`);
      form.hidden = true;
    } catch (e) {
      show('error', message(e));
      submit.disabled = false;
    }
  });
}

function resetPage() {
  const token = fragmentParam('token');
  const form = document.getElementById('reset-form');
  const submit = document.getElementById('submit');
  // Out of the address bar (and the history) once read.
  history.replaceState(null, '', location.pathname);
  if (!token) {
    show('error', 'This page needs the link from your reset mail. Ask for a new one on the sign-in page.');
    form.hidden = true;
    return;
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const password = document.getElementById('new-password');
    if (!password.value) {
      show('error', 'Enter a new password.');
      return;
    }
    submit.disabled = true;
    show('error', '');
    try {
      await call('POST', '/v1/auth/password/reset', { token, new_password: password.value });
      form.hidden = true;
      show('notice', 'Your password is set, and every device was signed out. Sign in with the new password.');
    } catch (e) {
      show('error', message(e));
      submit.disabled = false;
    }
  });
}

async function verifyPage() {
  const token = fragmentParam('token');
  const change = fragmentParam('change');
  history.replaceState(null, '', location.pathname);
  const title = document.getElementById('title');
  if (!token && !change) {
    title.textContent = 'Confirm your address';
    show('error', 'This page needs the link from your mail.');
    return;
  }
  try {
    const done = token
      ? await call('POST', '/v1/auth/email/verify', { token })
      : await call('POST', '/v1/auth/email/change/confirm', { token: change });
    title.textContent = 'Address confirmed';
    show('notice', change
      ? `Your account’s address is now ${done.user.email}.`
      : `Thank you: ${done.user.email} is confirmed.`);
  } catch (e) {
    title.textContent = 'Address not confirmed';
    show('error', message(e));
  }
}

// ---- /account ----

function describeAgent(ua) {
  if (!ua) return { name: 'Unknown device', mobile: false };
  const browser = [
    [/Edg(e|A|iOS)?\//, 'Edge'], [/OPR\/|Opera/, 'Opera'], [/Firefox\/|FxiOS/, 'Firefox'],
    [/HeadlessChrome/, 'Headless Chrome'], [/Chrome\/|CriOS/, 'Chrome'],
    [/Version\/.*Safari/, 'Safari'], [/^curl\//, 'curl'], [/^node|undici/i, 'Node.js'],
  ].find(([re]) => re.test(ua));
  const os = [
    [/iPhone/, 'iPhone'], [/iPad/, 'iPad'], [/Android/, 'Android'], [/CrOS/, 'ChromeOS'],
    [/Windows/, 'Windows'], [/Mac OS X|Macintosh/, 'macOS'], [/Linux/, 'Linux'],
  ].find(([re]) => re.test(ua));
  const name = browser ? browser[1] : ua.split(/[/\s]/)[0].slice(0, 40) || 'Unknown browser';
  return {
    name: os ? `${name} on ${os[1]}` : name,
    mobile: /Mobi|iPhone|Android/.test(ua),
  };
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
function ago(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (Math.abs(seconds) < 60) return 'just now';
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const day = (iso) => dateFormat.format(new Date(iso));

function icon(mobile) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', '1.8');
  svg.setAttribute('stroke-linecap', 'round');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', mobile
    ? 'M8 2.5h8a1.5 1.5 0 0 1 1.5 1.5v16a1.5 1.5 0 0 1-1.5 1.5H8A1.5 1.5 0 0 1 6.5 20V4A1.5 1.5 0 0 1 8 2.5zM11 18.5h2'
    : 'M5 5.5h14a1 1 0 0 1 1 1V16H4V6.5a1 1 0 0 1 1-1zM2 18.5h20');
  svg.append(path);
  return svg;
}

function describeActivity(s) {
  const activity = s.current ? 'Active now' : `Last active ${ago(s.last_used_at)}`;
  return `${s.ip || 'Unknown IP'} · ${activity} · Signed in ${day(s.created_at)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function accountPage() {
  const main = document.querySelector('main');
  const list = document.getElementById('sessions');
  const others = document.getElementById('sign-out-others');
  let sessions = [];

  function fail(e) {
    if (SIGNED_OUT.has(e.code)) return signedOut(e.code);
    show('error', message(e));
  }

  function render() {
    list.replaceChildren(...sessions.map((s) => {
      const agent = describeAgent(s.user_agent);
      const item = el('li', 'session');
      item.dataset.sessionId = s.id;
      if (s.current) item.dataset.current = 'true';
      const device = el('div', 'device');
      device.append(icon(agent.mobile));
      const text = el('div', 'session-text');
      const name = el('p', 'session-name', agent.name);
      if (s.current) name.append(el('span', 'badge', 'This device'));
      const meta = el('p', 'session-meta', describeActivity(s));
      meta.dataset.lastUsedAt = s.last_used_at;
      text.append(name, meta);
      item.append(device, text);
      if (!s.current) {
        const button = el('button', 'danger', 'Sign out');
        button.type = 'button';
        button.setAttribute('aria-label', `Sign out ${agent.name} (${s.ip || 'unknown IP'})`);
        button.addEventListener('click', () => revoke(s, agent.name, button));
        item.append(button);
      }
      return item;
    }));
    others.hidden = !sessions.some((s) => !s.current);
  }

  async function load() {
    try {
      const [me, listed] = await Promise.all([
        authed('GET', '/v1/auth/me'),
        authed('GET', '/v1/auth/sessions'),
      ]);
      document.getElementById('who-email').textContent = me.user.email;
      document.getElementById('who-since').textContent = day(me.user.created_at);
      document.getElementById('who-verified').textContent = me.user.email_verified ? 'Confirmed' : 'Not confirmed yet';
      document.getElementById('resend-verification').hidden = Boolean(me.user.email_verified);
      // This device first, then the others as the server orders them (most recent use first).
      sessions = [...listed.sessions].sort((a, b) => Number(b.current) - Number(a.current));
      render();
      main.setAttribute('aria-busy', 'false');
    } catch (e) {
      fail(e);
    }
  }

  async function revoke(session, name, button) {
    button.disabled = true;
    try {
      await authed('DELETE', `/v1/auth/sessions/${encodeURIComponent(session.id)}`);
      sessions = sessions.filter((s) => s.id !== session.id);
      render();
      show('notice', `Signed out ${name}.`);
      // The button that had focus is gone: keep keyboard users in the list, not at the top.
      document.getElementById('sessions-title').focus();
    } catch (e) {
      // Already gone elsewhere: the list was stale, not the request wrong.
      if (e.code === 'session_not_found') return load();
      button.disabled = false;
      fail(e);
    }
  }

  others.addEventListener('click', async () => {
    others.disabled = true;
    try {
      await authed('POST', '/v1/auth/logout-all', { scope: 'others' });
      show('notice', 'Signed out everywhere else.');
      await load();
    } catch (e) {
      fail(e);
    } finally {
      others.disabled = false;
    }
  });

  const passwordForm = document.getElementById('password-form');
  passwordForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const current = document.getElementById('current-password');
    const next = document.getElementById('new-password');
    const button = document.getElementById('change-password');
    if (!current.value || !next.value) {
      show('error', 'Enter your current password and a new one.');
      return;
    }
    button.disabled = true;
    show('error', '');
    show('notice', '');
    try {
      // Fresh cookies for this device come back; every other session has ended.
      const change = { current_password: current.value, new_password: next.value };
      try {
        await authed('POST', '/v1/auth/password', change);
      } catch (e) {
        if (e.code !== 'reauthentication_required') throw e;
        // An old sign-in: the current password just typed proves it is still you.
        await authed('POST', '/v1/auth/reauthenticate', { password: current.value });
        await authed('POST', '/v1/auth/password', change);
      }
      passwordForm.reset();
      show('notice', 'Password changed. Every other device was signed out.');
      await load();
    } catch (e) {
      if (e.code === 'invalid_credentials') {
        show('error', 'Your current password is not right.');
        current.focus();
      } else {
        fail(e);
      }
    } finally {
      button.disabled = false;
    }
  });

  const resend = document.getElementById('resend-verification');
  resend.addEventListener('click', async () => {
    resend.disabled = true;
    try {
      await authed('POST', '/v1/auth/email/verify/resend');
      show('notice', 'A new confirmation link is on its way. Check your mail.');
    } catch (e) {
      fail(e);
    } finally {
      resend.disabled = false;
    }
  });

  document.getElementById('sign-out').addEventListener('click', async () => {
    try {
      await authed('POST', '/v1/auth/logout');
    } catch (e) {
      if (!SIGNED_OUT.has(e.code)) return fail(e);
    }
    signedOut('signed_out');
  });

  // Come back to a tab: show what changed meanwhile (a device signed in or out elsewhere).
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') load();
  });
  // Keep "5 minutes ago" true without rebuilding the list (which would lose keyboard focus).
  setInterval(() => {
    for (const meta of list.querySelectorAll('.session-meta')) {
      const session = sessions.find((s) => s.last_used_at === meta.dataset.lastUsedAt);
      if (session) meta.textContent = describeActivity(session);
    }
  }, 30_000);
  load();
  twoStep(fail);
}

// ---- /admin ----

// The two-step verification section of /account: turn TOTP on (QR code, a first code, the
// recovery codes shown once), replace the recovery codes (with the password; the old set
// stops working) or turn it off (with the password).
function twoStep(fail) {
  const status = document.getElementById('mfa-status');
  const start = document.getElementById('mfa-start');
  const enrol = document.getElementById('mfa-enrol');
  const off = document.getElementById('mfa-off');
  const codes = document.getElementById('mfa-codes');
  const regenerate = document.getElementById('mfa-regenerate');

  function showCodes(recoveryCodes) {
    const list = document.getElementById('mfa-code-list');
    list.replaceChildren(...recoveryCodes.map((c) => el('li', 'code', c)));
    codes.hidden = false;
  }

  async function refresh() {
    try {
      const factors = await authed('GET', '/v1/account/mfa');
      const on = Boolean(factors.totp && factors.totp.enabled);
      status.textContent = on
        ? `On: a code from your authenticator app is asked for after your password. ${factors.recovery_codes_left} recovery codes left.`
        : 'Off: your password alone signs you in.';
      start.hidden = on || !enrol.hidden;
      off.hidden = !on;
      regenerate.hidden = !on;
    } catch (e) {
      fail(e);
    }
  }

  start.addEventListener('click', async () => {
    start.disabled = true;
    try {
      const e = await authed('POST', '/v1/account/mfa/totp');
      // Our server's SVG (shapes only), parsed as SVG, never as HTML; the page's policy runs
      // no inline script either way.
      const svg = new DOMParser().parseFromString(e.qr_svg, 'image/svg+xml').documentElement;
      document.getElementById('mfa-qr').replaceChildren(document.importNode(svg, true));
      document.getElementById('mfa-secret').textContent = e.secret;
      enrol.hidden = false;
      start.hidden = true;
      codes.hidden = true;
      document.getElementById('mfa-confirm-code').focus();
    } catch (e) {
      fail(e);
    } finally {
      start.disabled = false;
    }
  });

  enrol.addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = document.getElementById('mfa-confirm-code');
    const button = document.getElementById('mfa-confirm');
    button.disabled = true;
    show('error', '');
    try {
      const answer = await authed('POST', '/v1/account/mfa/totp/confirm', { code: input.value.trim() });
      enrol.reset();
      enrol.hidden = true;
      showCodes(answer.recovery_codes);
      show('notice', 'Two-step verification is on.');
      await refresh();
    } catch (e) {
      fail(e);
      input.select();
    } finally {
      button.disabled = false;
    }
  });

  // The section's changes proved with the password (new recovery codes, TOTP off): `change`
  // makes the change with it; a wrong password gets its own message.
  function withPassword(form, change) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      show('error', '');
      try {
        await change(form.elements.password.value);
        form.reset();
        await refresh();
      } catch (e) {
        if (e.code === 'invalid_credentials') show('error', 'Your password is not right.');
        else fail(e);
      } finally {
        button.disabled = false;
      }
    });
  }

  withPassword(regenerate, async (password) => {
    const answer = await authed('POST', '/v1/account/mfa/recovery-codes', { password });
    showCodes(answer.recovery_codes);
    show('notice', 'New recovery codes: the old ones no longer work.');
  });

  withPassword(off, async (password) => {
    await authed('DELETE', '/v1/account/mfa/totp', { password });
    codes.hidden = true;
    show('notice', 'Two-step verification is off.');
  });

  refresh();
}

function adminPage() {
  const main = document.querySelector('main');
  const results = document.getElementById('users');
  const panel = document.getElementById('user');
  const sessionList = document.getElementById('user-sessions');
  const events = document.getElementById('user-events');
  const toggle = document.getElementById('toggle-disabled');
  const revokeAll = document.getElementById('revoke-all');
  let current = null;

  function fail(e) {
    if (SIGNED_OUT.has(e.code)) return signedOut(e.code);
    if (e.code === 'forbidden') {
      main.setAttribute('aria-busy', 'false');
      return show('error', 'This account is not an administrator.');
    }
    show('error', message(e));
  }

  async function search(prefix) {
    const query = new URLSearchParams({ limit: '50' });
    if (prefix) query.set('email', prefix);
    const page = await authed('GET', `/v1/admin/users?${query}`);
    results.replaceChildren(...page.users.map((u) => {
      const item = el('li', 'session user-row');
      item.dataset.userId = u.id;
      const text = el('div', 'session-text');
      const open = el('button', 'link session-name', u.email);
      open.type = 'button';
      open.addEventListener('click', () => select(u.id).catch(fail));
      const state = u.disabled_at ? 'Disabled' : 'Active';
      const roles = u.roles.length ? u.roles.join(', ') : 'no roles';
      text.append(open, el('p', 'session-meta', `${state} · ${roles} · since ${day(u.created_at)}`));
      item.append(text);
      return item;
    }));
    if (!page.users.length) results.replaceChildren(el('li', 'session-meta', 'No users match.'));
  }

  function renderSessions(sessions) {
    sessionList.replaceChildren(...sessions.map((s) => {
      const agent = describeAgent(s.user_agent);
      const item = el('li', 'session');
      item.dataset.sessionId = s.id;
      const text = el('div', 'session-text');
      text.append(el('p', 'session-name', agent.name),
        el('p', 'session-meta', `${s.ip || 'Unknown IP'} · Last active ${ago(s.last_used_at)}`));
      const button = el('button', 'danger', 'Revoke');
      button.type = 'button';
      button.setAttribute('aria-label', `Revoke ${agent.name} (${s.ip || 'unknown IP'})`);
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          await authed('DELETE', `/v1/admin/sessions/${encodeURIComponent(s.id)}`);
          show('notice', `Revoked ${agent.name}.`);
        } catch (e) {
          if (e.code !== 'session_not_found') fail(e);
        }
        await select(current.id).catch(fail);
      });
      item.append(device(agent), text, button);
      return item;
    }));
    if (!sessions.length) sessionList.replaceChildren(el('li', 'session-meta', 'No live sessions.'));
    revokeAll.hidden = !sessions.length;
  }

  function device(agent) {
    const box = el('div', 'device');
    box.append(icon(agent.mobile));
    return box;
  }

  async function select(id) {
    const [detail, audit] = await Promise.all([
      authed('GET', `/v1/admin/users/${encodeURIComponent(id)}`),
      authed('GET', `/v1/admin/audit?${new URLSearchParams({ user_id: id, limit: '20' })}`),
    ]);
    current = detail.user;
    panel.hidden = false;
    panel.dataset.userId = current.id;
    document.getElementById('user-title').textContent = current.email;
    document.getElementById('user-status').textContent = current.disabled_at
      ? `Disabled ${day(current.disabled_at)}` : 'Active';
    document.getElementById('user-created').textContent = day(current.created_at);
    document.getElementById('user-last-login').textContent = detail.last_login_at
      ? ago(detail.last_login_at) : 'Never';
    document.getElementById('roles').value = current.roles.join(', ');
    toggle.textContent = current.disabled_at ? 'Enable' : 'Disable';
    toggle.className = current.disabled_at ? 'secondary' : 'danger';
    renderSessions(detail.sessions);
    events.replaceChildren(...audit.events.map((e) => el('li', '',
      `${new Date(e.at).toLocaleString()} · ${e.event}${e.ip ? ` · ${e.ip}` : ''}`)));
  }

  document.getElementById('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    show('error', '');
    search(document.getElementById('search').value.trim().toLowerCase()).catch(fail);
  });

  document.getElementById('roles-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const roles = document.getElementById('roles').value.split(',').map((r) => r.trim()).filter(Boolean);
    try {
      await authed('PATCH', `/v1/admin/users/${encodeURIComponent(current.id)}`, { roles });
      show('notice', `Roles of ${current.email} saved.`);
      await select(current.id);
    } catch (e) {
      fail(e);
    }
  });

  toggle.addEventListener('click', async () => {
    toggle.disabled = true;
    const action = current.disabled_at ? 'enable' : 'disable';
    try {
      await authed('POST', `/v1/admin/users/${encodeURIComponent(current.id)}/${action}`);
      show('notice', `${current.email} ${action}d.`);
      await select(current.id);
      await search(document.getElementById('search').value.trim().toLowerCase());
    } catch (e) {
      fail(e);
    } finally {
      toggle.disabled = false;
    }
  });

  revokeAll.addEventListener('click', async () => {
    try {
      const r = await authed('DELETE', `/v1/admin/users/${encodeURIComponent(current.id)}/sessions`);
      show('notice', `Revoked ${r.sessions_revoked} session${r.sessions_revoked === 1 ? '' : 's'}.`);
      await select(current.id);
    } catch (e) {
      fail(e);
    }
  });

  document.getElementById('sign-out').addEventListener('click', async () => {
    try {
      await authed('POST', '/v1/auth/logout');
    } catch (e) {
      if (!SIGNED_OUT.has(e.code)) return fail(e);
    }
    signedOut('signed_out');
  });

  search('').then(() => main.setAttribute('aria-busy', 'false'), fail);
}

// ---- passkeys (WebAuthn): /login's "Sign in with a passkey", /account's Passkeys ----

const passkeysSupported = () => typeof window.PublicKeyCredential === 'function' && Boolean(navigator.credentials);

function fromBase64url(text) {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function toBase64url(buffer) {
  let binary = '';
  for (const b of new Uint8Array(buffer)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// WebIDL dictionaries take a missing member, not null.
function withoutNulls(value) {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v != null).map(([k, v]) => [k, withoutNulls(v)]));
  }
  return value;
}

function descriptors(list) {
  return list ? list.map((d) => ({ ...d, id: fromBase64url(d.id) })) : undefined;
}

function credentialJSON(c) {
  const r = c.response;
  const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toBase64url(r.attestationObject);
    if (r.getTransports) response.transports = r.getTransports();
  } else {
    response.authenticatorData = toBase64url(r.authenticatorData);
    response.signature = toBase64url(r.signature);
    response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
  }
  return { id: c.id, rawId: toBase64url(c.rawId), type: c.type, response,
    clientExtensionResults: c.getClientExtensionResults ? c.getClientExtensionResults() : {} };
}

function passkeyMessage(e) {
  // The browser's own refusals: the person closed the prompt, or has no passkey here.
  if (e.name === 'NotAllowedError' || e.name === 'AbortError') return 'No passkey was used. Try again, or sign in with your password.';
  if (e.name === 'InvalidStateError') return 'This passkey is already registered to your account.';
  switch (e.code) {
    case 'passkeys_disabled': return 'Passkeys are not available on this server.';
    case 'passkey_unknown': return 'This passkey isn’t registered to any account (it may have been removed). Sign in with your password.';
    case 'passkey_already_registered': return 'This passkey is already registered.';
    case 'passkey_ceremony_expired': return 'That took too long. Please try again.';
    case 'passkey_counter_regressed': return 'This passkey was refused for your safety (it may have been copied). Sign in another way.';
    case 'passkey_invalid': case 'passkey_wrong_origin': case 'passkey_ceremony_invalid':
      return 'The passkey could not be verified. Please try again.';
    default: return message(e);
  }
}

async function passkeysLogin() {
  const line = document.getElementById('passkey-line');
  const button = document.getElementById('passkey-sign-in');
  if (!passkeysSupported() || !(await pageConfig).passkeys) return;
  line.hidden = false;
  // A passkey as the second step after a password.
  const second = document.getElementById('mfa-passkey');
  let challenge = null;
  document.addEventListener('tessera:second-step', ({ detail }) => {
    challenge = detail.challenge;
    line.hidden = true;
    second.hidden = !(detail.methods || []).includes('passkey');
  });
  second.addEventListener('click', async () => {
    second.disabled = true;
    show('error', '');
    try {
      const { publicKey } = await call('POST', '/v1/auth/mfa/passkey/options', { challenge });
      const options = withoutNulls(publicKey);
      const credential = await navigator.credentials.get({
        publicKey: { ...options, challenge: fromBase64url(options.challenge), allowCredentials: descriptors(options.allowCredentials) },
      });
      await call('POST', '/v1/auth/mfa/verify', { challenge, method: 'passkey', credential: credentialJSON(credential) });
      await afterSignIn((to) => location.assign(to));
    } catch (e) {
      show('error', e.code && e.code.startsWith('mfa_') ? message(e) : passkeyMessage(e));
      second.disabled = false;
    }
  });
  button.addEventListener('click', async () => {
    button.disabled = true;
    show('error', '');
    show('notice', '');
    try {
      const { ceremony, publicKey } = await call('POST', '/v1/auth/passkey/options');
      const options = withoutNulls(publicKey);
      const credential = await navigator.credentials.get({
        publicKey: { ...options, challenge: fromBase64url(options.challenge), allowCredentials: descriptors(options.allowCredentials) },
      });
      await call('POST', '/v1/auth/passkey', { ceremony, credential: credentialJSON(credential), transport: 'cookie' });
      await afterSignIn((to) => location.assign(to));
    } catch (e) {
      show('error', passkeyMessage(e));
      button.disabled = false;
    }
  });
}

async function passkeysAccount() {
  const card = document.getElementById('passkeys-card');
  const list = document.getElementById('passkeys');
  const add = document.getElementById('add-passkey');
  if (!passkeysSupported() || !(await pageConfig).passkeys) return;
  let passkeys = [];

  function fail(e) {
    if (SIGNED_OUT.has(e.code)) return signedOut(e.code);
    show('error', passkeyMessage(e));
  }

  function describe(p) {
    const used = p.last_used_at ? `last used ${ago(p.last_used_at)}` : 'never used to sign in';
    return `Added ${day(p.created_at)} · ${used}`;
  }

  function render() {
    list.replaceChildren(...passkeys.map((p) => {
      const item = el('li', 'session');
      item.dataset.passkeyId = p.id;
      const text = el('div', 'session-text');
      text.append(el('p', 'session-name', p.name), el('p', 'session-meta', describe(p)));
      const rename = el('button', 'secondary', 'Rename');
      rename.type = 'button';
      rename.setAttribute('aria-label', `Rename ${p.name}`);
      rename.addEventListener('click', () => startRename(p, item, text));
      const remove = el('button', 'danger', 'Remove');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Remove ${p.name}`);
      remove.addEventListener('click', () => removePasskey(p, remove));
      item.append(text, rename, remove);
      return item;
    }));
    if (!passkeys.length) list.append(el('li', 'session-meta', 'No passkeys yet.'));
  }

  function startRename(p, item, text) {
    const form = el('form', 'rename');
    const input = el('input');
    input.value = p.name;
    input.maxLength = 64;
    input.setAttribute('aria-label', `New name for ${p.name}`);
    const save = el('button', 'secondary', 'Save');
    save.type = 'submit';
    form.append(input, save);
    text.replaceWith(form);
    input.focus();
    input.select();
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        const renamed = await authed('PATCH', `/v1/account/passkeys/${encodeURIComponent(p.id)}`, { name: input.value });
        passkeys = passkeys.map((q) => (q.id === p.id ? renamed : q));
        render();
        show('notice', `Renamed to ${renamed.name}.`);
      } catch (e) {
        save.disabled = false;
        fail(e);
      }
    });
  }

  async function removePasskey(p, button) {
    button.disabled = true;
    try {
      await authed('DELETE', `/v1/account/passkeys/${encodeURIComponent(p.id)}`);
      passkeys = passkeys.filter((q) => q.id !== p.id);
      render();
      show('notice', `Removed ${p.name}. It no longer signs you in.`);
      document.getElementById('passkeys-title').focus();
    } catch (e) {
      if (e.code === 'passkey_not_found') return load();
      button.disabled = false;
      fail(e);
    }
  }

  async function load() {
    try {
      passkeys = (await authed('GET', '/v1/account/passkeys')).passkeys;
      card.hidden = false;
      render();
    } catch (e) {
      if (e.code !== 'passkeys_disabled') fail(e);
    }
  }

  add.addEventListener('click', async () => {
    add.disabled = true;
    show('error', '');
    show('notice', '');
    try {
      const { publicKey } = await authed('POST', '/v1/account/passkeys/register/options');
      const options = withoutNulls(publicKey);
      const credential = await navigator.credentials.create({
        publicKey: {
          ...options,
          challenge: fromBase64url(options.challenge),
          user: { ...options.user, id: fromBase64url(options.user.id) },
          excludeCredentials: descriptors(options.excludeCredentials),
        },
      });
      const added = await authed('POST', '/v1/account/passkeys/register', { credential: credentialJSON(credential) });
      passkeys = [...passkeys, added];
      render();
      show('notice', `Added ${added.name}. You can now sign in with it.`);
    } catch (e) {
      fail(e);
    } finally {
      add.disabled = false;
    }
  });
  load();
}

applyBranding();
if (document.body.dataset.page === 'login') passkeysLogin();
if (document.body.dataset.page === 'account') passkeysAccount();
if (document.body.dataset.page === 'login') loginPage();
if (document.body.dataset.page === 'account') accountPage();
if (document.body.dataset.page === 'admin') adminPage();
if (document.body.dataset.page === 'forgot') forgotPage();
if (document.body.dataset.page === 'reset') resetPage();
if (document.body.dataset.page === 'verify') verifyPage();
