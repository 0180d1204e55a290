// Starts the real Tessera binary for tests: a fresh SQLite file, a free port, and the
// settings a test asks for. Shared by the middleware tests and the browser suite.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const TESSERA_BIN = process.env.TESSERA_BIN ?? join(repoRoot, 'target/debug/tessera');

/** `{ base, stop }` of a running Tessera; `env` adds TESSERA_* settings. */
export async function startTessera(env = {}) {
  if (!existsSync(TESSERA_BIN)) {
    throw new Error(`no Tessera binary at ${TESSERA_BIN}: run cargo build (or set TESSERA_BIN)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tessera-js-'));
  const child = spawn(TESSERA_BIN, ['serve'], {
    env: {
      ...process.env,
      TESSERA_LISTEN: '127.0.0.1:0',
      TESSERA_DATABASE_URL: `sqlite://${join(dir, 'tessera.db')}`,
      // Test clients all come from 127.0.0.1; the limits have tests of their own in Rust.
      TESSERA_LOGIN_RATE: '0',
      TESSERA_REFRESH_RATE: '0',
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // Listened for from the start: a process killed from outside (by a signal: exitCode stays
  // null) must not leave stop() waiting for an event that has already fired.
  const exited = new Promise((resolveExit) => child.once('exit', resolveExit));
  // A test file that dies must not leave its server running.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const base = await new Promise((resolveBase, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`Tessera did not start: ${seen}`)), 20_000);
    child.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolveBase(match[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Tessera exited with ${code}: ${seen}`));
    });
  });
  child.stdout.resume();
  return {
    base,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      process.off('exit', killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Registers `email` and signs in; returns Tessera's token response and, for the cookie
 * transport, the cookies it set (name → value). */
export async function signIn(base, email, { transport = 'body', password = 'correct horse battery' } = {}) {
  const post = (path, body) => fetch(base + path, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const registered = await post('/v1/auth/register', { email, password });
  if (registered.status !== 201 && registered.status !== 409) {
    throw new Error(`register: ${registered.status} ${await registered.text()}`);
  }
  const login = await post('/v1/auth/login', { email, password, transport });
  if (login.status !== 200) throw new Error(`login: ${login.status} ${await login.text()}`);
  const cookies = {};
  for (const line of login.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const eq = pair.indexOf('=');
    cookies[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return { ...(await login.json()), cookies };
}
