// Verifies Tessera's access tokens with jose, the way a Node resource server does: the JWKS
// found through the server's discovery document, `typ`, `iss` and `aud` checked, the
// algorithm pinned. Then the refusals: a wrong audience, a wrong issuer, and a token signed
// by a key the JWKS does not have.
//
// Usage: node verify.mjs BASE_URL ALG   (run by scripts/test-verifiers.sh against a live server)
// Exit 0 when jose behaves as the table in docs/KEYS.md says for ALG; 1 otherwise.

import { readFileSync } from 'node:fs';
import { createRemoteJWKSet, errors, generateKeyPair, jwtVerify, SignJWT } from 'jose';

// the table in docs/KEYS.md: the algorithms this jose version cannot verify. Checked both ways: a
// supported algorithm must verify, an unsupported one must be refused as unsupported.
const UNSUPPORTED = new Set([]);

const [base, alg] = process.argv.slice(2);
const version = JSON.parse(
  readFileSync(new URL('./node_modules/jose/package.json', import.meta.url), 'utf8'),
).version;
const label = `jose ${version}, ${alg}`;

function fail(message) {
  console.error(`FAIL ${label}: ${message}`);
  process.exit(1);
}

async function post(path, body) {
  const response = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/// Asserts that `promise` rejects with an error of class `kind`.
async function refused(what, promise, kind) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof kind) return;
    fail(`${what}: refused, but with ${e.name}: ${e.message}`);
  }
  fail(`${what}: accepted`);
}

const credentials = { email: `node-${alg.toLowerCase()}@example.com`, password: 'verifier password 1' };
if ((await post('/v1/auth/register', credentials)).status !== 201) fail('register');
const login = await post('/v1/auth/login', credentials);
if (login.status !== 200) fail(`login: ${JSON.stringify(login.body)}`);
const token = login.body.access_token;

const metadata = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
if (metadata.issuer !== base) fail(`issuer ${metadata.issuer} is not ${base}`);
const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri));
const options = { issuer: metadata.issuer, audience: 'tessera', typ: 'at+jwt', algorithms: [alg] };

if (UNSUPPORTED.has(alg)) {
  await refused('an algorithm jose does not support', jwtVerify(token, jwks, options), errors.JOSENotSupported);
  console.log(`ok ${label}: not supported, refused as such (docs/KEYS.md says so)`);
  process.exit(0);
}

let verified;
try {
  verified = await jwtVerify(token, jwks, options);
} catch (e) {
  fail(`a valid token was refused: ${e.name}: ${e.message}`);
}
const { payload, protectedHeader } = verified;
if (protectedHeader.alg !== alg) fail(`header alg ${protectedHeader.alg}`);
if (payload.sub !== login.body.user.id) fail(`sub ${payload.sub}`);
if (payload.sid !== login.body.session_id) fail(`sid ${payload.sid}`);

await refused('a wrong audience', jwtVerify(token, jwks, { ...options, audience: 'someone-else' }), errors.JWTClaimValidationFailed);
await refused('a wrong issuer', jwtVerify(token, jwks, { ...options, issuer: 'https://evil.example' }), errors.JWTClaimValidationFailed);
await refused('a wrong typ', jwtVerify(token, jwks, { ...options, typ: 'JWT' }), errors.JWTClaimValidationFailed);

// Same algorithm, same claims, a key of our own that the JWKS does not list.
const { privateKey } = await generateKeyPair(alg, { extractable: false });
const forged = await new SignJWT(payload)
  .setProtectedHeader({ alg, typ: 'at+jwt', kid: 'not-published' })
  .sign(privateKey);
await refused('a token from an unknown key', jwtVerify(forged, jwks, options), errors.JWKSNoMatchingKey);

console.log(`ok ${label}: verified (typ, iss, aud); wrong aud, wrong iss, wrong typ and an unknown key refused`);
