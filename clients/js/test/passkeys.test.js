// The passkey ceremonies of the browser client against a fake Tessera and a fake
// `navigator.credentials`: base64url both ways, the options the browser gets, the JSON
// Tessera gets, and the session kept as after a password login.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  TesseraClient, base64urlToBytes, bytesToBase64url, creationOptionsFromJSON, requestOptionsFromJSON,
} from '../dist/index.js';

const json = (status, body) =>
  new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
}

const bytes = (...b) => new Uint8Array(b).buffer;

test('base64url round-trips every byte, without padding', () => {
  const all = new Uint8Array(256).map((_, i) => i);
  const text = bytesToBase64url(all);
  assert.doesNotMatch(text, /[+/=]/);
  assert.deepEqual(base64urlToBytes(text), all);
  assert.equal(bytesToBase64url(new Uint8Array([0xfb, 0xff])), '-_8');
  assert.deepEqual([...base64urlToBytes('-_8')], [0xfb, 0xff]);
});

test('options become binary where WebAuthn wants it, and lose their nulls', () => {
  const creation = creationOptionsFromJSON({
    rp: { id: 'localhost', name: 'Tessera' },
    user: { id: 'AQI', name: 'a@b.c', displayName: 'a@b.c' },
    challenge: 'AAEC',
    pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
    excludeCredentials: [{ type: 'public-key', id: 'BQY' }],
    hints: null,
  });
  assert.deepEqual([...creation.user.id], [1, 2]);
  assert.deepEqual([...creation.challenge], [0, 1, 2]);
  assert.deepEqual([...creation.excludeCredentials[0].id], [5, 6]);
  assert.equal('hints' in creation, false);
  const request = requestOptionsFromJSON({ challenge: 'AAEC', rpId: 'localhost', allowCredentials: [] });
  assert.deepEqual([...request.challenge], [0, 1, 2]);
  assert.equal(request.rpId, 'localhost');
});

test('a passkey is added and signs in, the session kept as a login keeps it', async () => {
  const requests = [];
  const fetch = async (input, init = {}) => {
    const url = new URL(input);
    const body = init.body ? JSON.parse(init.body) : undefined;
    requests.push({ path: url.pathname, method: init.method, body, headers: new Headers(init.headers) });
    switch (url.pathname) {
      case '/v1/account/passkeys/register/options':
        return json(200, { publicKey: { challenge: 'AAEC', user: { id: 'AQI', name: 'a' }, rp: { id: 'localhost' } } });
      case '/v1/account/passkeys/register':
        return json(201, { id: 'p1', name: body.name, created_at: '2026-01-01T00:00:00Z', last_used_at: null });
      case '/v1/auth/passkey/options':
        return json(200, { ceremony: 'c1', expires_in: 300, publicKey: { challenge: 'AwQ', rpId: 'localhost' } });
      case '/v1/auth/passkey':
        return json(200, {
          access_token: 'at1', refresh_token: 'rt1', token_type: 'Bearer', expires_in: 900, session_id: 's1',
          user: { id: 'u1', email: 'a@b.c', created_at: '' },
        });
      default:
        return json(404, { code: 'not_found' });
    }
  };
  const seen = {};
  const credentials = {
    async create(options) {
      seen.create = options;
      return {
        id: 'Cgs', rawId: bytes(10, 11), type: 'public-key',
        response: { clientDataJSON: bytes(1), attestationObject: bytes(2), getTransports: () => ['internal'] },
        getClientExtensionResults: () => ({ credProps: { rk: true } }),
      };
    },
    async get(options) {
      seen.get = options;
      return {
        id: 'Cgs', rawId: bytes(10, 11), type: 'public-key',
        response: { clientDataJSON: bytes(1), authenticatorData: bytes(3), signature: bytes(4), userHandle: bytes(5) },
        getClientExtensionResults: () => ({}),
      };
    },
  };
  const client = new TesseraClient({
    baseUrl: 'https://auth.example.com', transport: 'body', storage: memoryStorage(), fetch, channel: null, locks: null,
  });
  const signedIn = await client.signInWithPasskey({ credentials });
  assert.equal(signedIn.sessionId, 's1');
  assert.deepEqual([...new Uint8Array(seen.get.publicKey.challenge)], [3, 4]);
  const answer = requests.find((r) => r.path === '/v1/auth/passkey').body;
  assert.equal(answer.ceremony, 'c1');
  assert.equal(answer.transport, 'body');
  assert.deepEqual(answer.credential.response, {
    clientDataJSON: 'AQ', authenticatorData: 'Aw', signature: 'BA', userHandle: 'BQ',
  });
  assert.equal(answer.credential.rawId, 'Cgs');

  const added = await client.addPasskey({ name: 'Laptop', credentials });
  assert.equal(added.name, 'Laptop');
  assert.deepEqual([...new Uint8Array(seen.create.publicKey.user.id)], [1, 2]);
  const registration = requests.find((r) => r.path === '/v1/account/passkeys/register');
  assert.equal(registration.headers.get('authorization'), 'Bearer at1');
  assert.deepEqual(registration.body.credential.response, {
    clientDataJSON: 'AQ', attestationObject: 'Ag', transports: ['internal'],
  });
  assert.deepEqual(registration.body.credential.clientExtensionResults, { credProps: { rk: true } });
});

test('reauthenticating with a passkey or a code renews the kept tokens', async () => {
  const requests = [];
  const fetch = async (input, init = {}) => {
    const url = new URL(input);
    const body = init.body ? JSON.parse(init.body) : undefined;
    requests.push({ path: url.pathname, body, headers: new Headers(init.headers) });
    const grant = (n) => json(200, {
      access_token: `at${n}`, refresh_token: `rt${n}`, token_type: 'Bearer', expires_in: 900, session_id: 's1',
      user: { id: 'u1', email: 'a@b.c', created_at: '' },
    });
    switch (url.pathname) {
      case '/v1/auth/login':
        return grant(1);
      case '/v1/auth/reauthenticate/passkey/options':
        return json(200, { publicKey: { challenge: 'BQY', rpId: 'localhost' } });
      case '/v1/auth/reauthenticate':
        return grant(requests.filter((r) => r.path === '/v1/auth/reauthenticate').length + 1);
      case '/v1/auth/me':
        return json(200, { id: 'u1', email: 'a@b.c' });
      default:
        return json(404, { code: 'not_found' });
    }
  };
  const credentials = {
    async get(options) {
      assert.deepEqual([...new Uint8Array(options.publicKey.challenge)], [5, 6]);
      return {
        id: 'Cgs', rawId: bytes(10, 11), type: 'public-key',
        response: { clientDataJSON: bytes(1), authenticatorData: bytes(3), signature: bytes(4), userHandle: null },
        getClientExtensionResults: () => ({}),
      };
    },
  };
  const client = new TesseraClient({
    baseUrl: 'https://auth.example.com', transport: 'body', storage: memoryStorage(), fetch, channel: null, locks: null,
  });
  await client.login('a@b.c', 'pw');
  await client.reauthenticateWithPasskey({ credentials });
  const options = requests.find((r) => r.path === '/v1/auth/reauthenticate/passkey/options');
  assert.equal(options.headers.get('authorization'), 'Bearer at1');
  const answer = requests.find((r) => r.path === '/v1/auth/reauthenticate').body;
  assert.equal(answer.method, 'passkey');
  assert.equal(answer.credential.response.signature, 'BA');

  await client.reauthenticate({ method: 'totp', code: '123456' });
  const second = requests.filter((r) => r.path === '/v1/auth/reauthenticate')[1];
  assert.deepEqual(second.body, { method: 'totp', code: '123456' });
  assert.equal(second.headers.get('authorization'), 'Bearer at2', 'the renewed token is the one kept');
  await client.fetch('https://auth.example.com/v1/auth/me');
  assert.equal(requests.at(-1).headers.get('authorization'), 'Bearer at3');
});
