"""Verifies Tessera's access tokens with PyJWT, the way a Python resource server does: the
JWKS found through the server's discovery document (PyJWKClient), `typ`, `iss` and `aud`
checked, the algorithm pinned. Then the refusals: a wrong audience, a wrong issuer, and a
token signed by a key the JWKS does not have.

Usage: python verify.py BASE_URL ALG   (run by scripts/test-verifiers.sh against a live server)
Exit 0 when PyJWT behaves as the table in docs/KEYS.md says for ALG; 1 otherwise.
"""

import json
import sys
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# the table in docs/KEYS.md: the algorithms this PyJWT version cannot verify. Checked both ways: a
# supported algorithm must verify, an unsupported one must be refused.
# PyJWT 2.15 has no `Ed25519` (RFC 9864): its JWK parser finds no usable key in a set whose
# only key says `"alg": "Ed25519"`.
UNSUPPORTED = {"Ed25519"}

base, alg = sys.argv[1], sys.argv[2]
label = f"PyJWT {jwt.__version__}, {alg}"


def fail(message):
    print(f"FAIL {label}: {message}", file=sys.stderr)
    sys.exit(1)


def request(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def refused(what, verify, kinds):
    """Asserts that `verify()` raises one of `kinds`."""
    try:
        verify()
    except kinds:
        return
    except Exception as e:  # noqa: BLE001 - any other refusal is the wrong reason
        fail(f"{what}: refused, but with {type(e).__name__}: {e}")
    fail(f"{what}: accepted")


credentials = {"email": f"python-{alg.lower()}@example.com", "password": "verifier password 1"}
if request("/v1/auth/register", credentials)[0] != 201:
    fail("register")
status, login = request("/v1/auth/login", credentials)
if status != 200:
    fail(f"login: {login}")
token = login["access_token"]

_, metadata = request("/.well-known/oauth-authorization-server")
if metadata["issuer"] != base:
    fail(f"issuer {metadata['issuer']} is not {base}")
jwks = jwt.PyJWKClient(metadata["jwks_uri"])


def verify(token, audience="tessera", issuer=metadata["issuer"], typ="at+jwt"):
    """What a resource server runs: key by kid from the JWKS, algorithm pinned, claims checked,
    then `typ` (PyJWT leaves the header to its caller)."""
    key = jwks.get_signing_key_from_jwt(token)
    decoded = jwt.decode_complete(
        token,
        key.key,
        algorithms=[alg],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    if decoded["header"].get("typ") != typ:
        raise jwt.InvalidTokenError(f"typ {decoded['header'].get('typ')!r}")
    return decoded


if alg in UNSUPPORTED:
    # The cause must be the algorithm itself, not any refusal (a wrong key would do too).
    if alg in jwt.algorithms.get_default_algorithms():
        fail("PyJWT now knows this algorithm: update the table in docs/KEYS.md and UNSUPPORTED")
    try:
        verify(token)
    except jwt.PyJWTError as e:
        print(f"ok {label}: not supported, refused as such (docs/KEYS.md says so): {type(e).__name__}: {e}")
        sys.exit(0)
    fail("docs/KEYS.md says PyJWT does not support this algorithm, but it verified: update the table")
    sys.exit(0)

try:
    decoded = verify(token)
except jwt.PyJWTError as e:
    fail(f"a valid token was refused: {type(e).__name__}: {e}")
claims = decoded["payload"]
if decoded["header"]["alg"] != alg:
    fail(f"header alg {decoded['header']['alg']}")
if claims["sub"] != login["user"]["id"] or claims["sid"] != login["session_id"]:
    fail(f"claims {claims}")

refused("a wrong audience", lambda: verify(token, audience="someone-else"), (jwt.InvalidAudienceError,))
refused("a wrong issuer", lambda: verify(token, issuer="https://evil.example"), (jwt.InvalidIssuerError,))
refused("a wrong typ", lambda: verify(token, typ="JWT"), (jwt.InvalidTokenError,))

# Same algorithm, same claims, a key of our own that the JWKS does not list.
private_key = {
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}[alg]()
forged = jwt.encode(claims, private_key, algorithm=alg, headers={"kid": "not-published", "typ": "at+jwt"})
refused("a token from an unknown key", lambda: verify(forged), (jwt.PyJWKClientError,))

print(f"ok {label}: verified (typ, iss, aud); wrong aud, wrong iss, wrong typ and an unknown key refused")
