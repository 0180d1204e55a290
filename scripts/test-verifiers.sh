#!/usr/bin/env bash
# Third-party verifiers: jose (Node) and PyJWT (Python), the libraries resource servers use,
# verify Tessera's access tokens through its discovery document and JWKS, for every signing
# algorithm, and refuse a wrong audience, a wrong issuer and a token from an unknown key.
# Where a library does not support an algorithm, its script says so and checks that it
# refuses the token (README's table of libraries and algorithms says the same).
#
# Installs its own pinned dependencies: `npm ci` from the committed lock file, and a venv under
# target/verifiers-venv from tests/verifiers/python/requirements.txt. Needs Node 20+ and
# Python 3.9+. Builds the debug binary if need be (CI has built it already).
set -euo pipefail
cd "$(dirname "$0")/.."

ALGS=(EdDSA Ed25519 ES256 RS256)
BIN=target/debug/tessera
VENV=target/verifiers-venv

echo "== verifiers: dependencies"
cargo build --locked --quiet --bin tessera
(cd tests/verifiers/node && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/verifiers/python/requirements.txt

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A free port, so that the issuer (and with it the discovery document's URLs) can name it
# before the server starts.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

failed=0
for alg in "${ALGS[@]}"; do
    port=$(free_port)
    base="http://127.0.0.1:$port"
    rm -f "$work"/*
    TESSERA_LISTEN="127.0.0.1:$port" TESSERA_ISSUER="$base" TESSERA_SIGNING_ALG="$alg" \
        TESSERA_DATABASE_URL="sqlite://$work/tessera.db" TESSERA_LOGIN_RATE=0 RUST_LOG=warn \
        "$BIN" serve >"$work/stdout" 2>"$work/stderr" &
    server=$!
    for _ in $(seq 1 300); do
        grep -q '^listening on' "$work/stdout" 2>/dev/null && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^listening on' "$work/stdout"; then
        echo "FAIL: tessera did not start with TESSERA_SIGNING_ALG=$alg" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
    echo "== verifiers: $alg"
    node tests/verifiers/node/verify.mjs "$base" "$alg" || failed=1
    "$VENV/bin/python" tests/verifiers/python/verify.py "$base" "$alg" || failed=1
    kill "$server"
    wait "$server" || { echo "FAIL: tessera ($alg) did not exit cleanly" >&2; failed=1; }
    server=""
done
exit "$failed"
