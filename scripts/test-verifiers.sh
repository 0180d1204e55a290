#!/usr/bin/env bash
# Third-party verifiers: jose (Node) and PyJWT (Python), the libraries resource servers use,
# verify Tessera's access tokens through its discovery document and JWKS, for every signing
# algorithm, and refuse a wrong audience, a wrong issuer and a token from an unknown key.
# Where a library does not support an algorithm, its script says so and checks that it
# refuses the token (the table of libraries and algorithms in docs/KEYS.md says the same).
#
# Installs its own pinned dependencies: `npm ci` from the committed lock file, and a venv under
# target/verifiers-venv from tests/verifiers/python/requirements.txt. Needs Node 20+ and
# Python 3.9+. Builds the debug binary if need be (CI has built it already).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/live-server.sh

ALGS=(EdDSA Ed25519 ES256 RS256)
VENV=target/verifiers-venv

echo "== verifiers: dependencies"
cargo build --locked --quiet --bin tessera
(cd tests/verifiers/node && npm ci --no-audit --no-fund --loglevel=error)
python_venv "$VENV" tests/verifiers/python/requirements.txt

failed=0
for alg in "${ALGS[@]}"; do
    port=$(free_port)
    base="http://127.0.0.1:$port"
    rm -f "$work"/*
    TESSERA_LISTEN="127.0.0.1:$port" TESSERA_ISSUER="$base" TESSERA_SIGNING_ALG="$alg" \
        TESSERA_DATABASE_URL="sqlite://$work/tessera.db" TESSERA_LOGIN_RATE=0 RUST_LOG=warn \
        start_tessera "TESSERA_SIGNING_ALG=$alg"
    echo "== verifiers: $alg"
    node tests/verifiers/node/verify.mjs "$base" "$alg" || failed=1
    "$VENV/bin/python" tests/verifiers/python/verify.py "$base" "$alg" || failed=1
    stop_tessera "$alg" || failed=1
done
exit "$failed"
