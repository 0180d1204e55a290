#!/usr/bin/env bash
# The OpenAPI document against the live server: schemathesis (pinned, tests/openapi/
# requirements.txt) reads /openapi.json from a real `tessera serve` on SQLite and sends
# generated requests (valid and invalid) to every operation, checking that no answer is a 5xx,
# that every status, content type, header and body is the one the document describes.
#
# Three runs, because some operations end the session the others need:
#  1. bearer: every operation but those that end sessions, with an access token in
#     `Authorization`, so authenticated operations are explored past 401;
#  2. cookie: the same, authenticated with the cookie transport (cookies plus X-CSRF-Token),
#     so cookie-transport answers (Set-Cookie, csrf_failed, refresh from the cookie) are seen;
#  3. ending: logout, logout-all and DELETE /v1/auth/sessions/{id}, with a session of its own;
#  4. admin: the admin API (`/v1/admin/`) with a back-office credential of scope admin:write,
#     so its answers are explored past 401/403 (runs 1 and 2 meet its 403 as a non-admin).
#
# Installs its venv under target/openapi-venv; needs Python 3.9+. Builds the debug binary if
# need be (CI has built it already). Takes about 25 s once the venv exists, 40 s without.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/live-server.sh

VENV="$PWD/target/openapi-venv"
# Test cases per operation and run: enough to reach every documented status of every operation
# on this data, few enough for the whole script to stay around a minute on two shared cores.
MAX_EXAMPLES="${OPENAPI_MAX_EXAMPLES:-40}"

echo "== openapi: dependencies"
cargo build --locked --quiet --bin tessera
python_venv "$VENV" tests/openapi/requirements.txt

port=$(free_port)
base="http://127.0.0.1:$port"
# Rate limits far above what the runs send, so that the answers are the operations' own rather
# than all 429 (the limiter still runs; 429 stays documented where it can happen). Plain HTTP:
# cookies without `Secure`, as a development host. A long reuse grace, so that the cookie run's
# replays of its one refresh cookie keep answering with the successor instead of ending the
# session as reuse (which run 3's kind of operations are for).
#
# The revocation feed is on, and the runs present a user's token to it: they check its 401 and
# 422 answers against the document. Its 200 is not fuzzed: with a valid credential, a random
# `wait` of up to 30 s per request would make each example a long poll. Its shape is checked by
# tests/api/revocation_feed.rs.
admin_secret="openapi-admin-credential-$(date +%s%N)-0123456789"
TESSERA_LISTEN="127.0.0.1:$port" TESSERA_ISSUER="$base" \
    TESSERA_DATABASE_URL="sqlite://$work/tessera.db" \
    TESSERA_REVOCATION_FEED_CREDENTIALS="openapi-feed-credential-$(date +%s%N)-0123456789" \
    TESSERA_ADMIN_CREDENTIALS="openapi:admin:write:$admin_secret" \
    TESSERA_LOGIN_RATE=100000 TESSERA_REFRESH_RATE=100000 TESSERA_ADMIN_RATE=100000 \
    TESSERA_COOKIE_SECURE=false TESSERA_REUSE_GRACE=1d RUST_LOG=warn \
    TESSERA_WEBAUTHN_RP_ID=localhost TESSERA_WEBAUTHN_ORIGINS="http://localhost:$port" \
    start_tessera "openapi"

# One account, three sessions, all signed in before any run. The account lock stays on: the
# runs' password changes (which cannot know the current password, so answer 401) lock the
# account after ten, and the 429s that follow check `Retry-After` as documented; signing in
# first keeps the lock from shutting the runs out.
email="schemathesis@example.com"
password="openapi-password-1"
json() { curl -sS --fail-with-body -H 'content-type: application/json' "$@"; }
json -X POST "$base/v1/auth/register" -d "{\"email\":\"$email\",\"password\":\"$password\"}" >/dev/null
login() {
    json -X POST "$base/v1/auth/login" -d "{\"email\":\"$email\",\"password\":\"$password\"$1}" "${@:2}"
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
bearer_token=$(login "" | field access_token)
ending_token=$(login "" | field access_token)
login ',"transport":"cookie"' -c "$work/cookies" >/dev/null
cookie() { awk -v name="$1" '$6 == name { print $7 }' "$work/cookies"; }
csrf=$(cookie tessera_csrf)
cookies="tessera_at=$(cookie tessera_at); tessera_rt=$(cookie tessera_rt); tessera_csrf=$csrf"
if [ -z "$bearer_token" ] || [ -z "$ending_token" ] || [ -z "$csrf" ] || [ -z "$(cookie tessera_rt)" ]; then
    echo "FAIL: could not sign in for the authenticated runs" >&2
    exit 1
fi

# The checks of the document's truth. Not run: positive_data_acceptance and
# negative_data_rejection, which judge the API's leniency rather than the document, and which
# the contract contradicts where the schema cannot say it: `{}` is a valid refresh body with
# the refresh cookie and a 422 without it, and logout answers 204 to any token at all.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
ENDING=(--include-path /v1/auth/logout --include-path /v1/auth/logout-all
    --include-path-regex '^/v1/auth/sessions/')
NOT_ENDING=(--exclude-path /v1/auth/logout --exclude-path /v1/auth/logout-all
    --exclude-path-regex '^/v1/auth/sessions/')
ADMIN=(--include-path-regex '^/v1/admin/')
run() {
    echo "== openapi: schemathesis, $1"
    shift
    # No example database, and run in the scratch directory: every run starts from nothing, and
    # schemathesis's cache directory (it writes one anyway) does not land in the work tree.
    (cd "$work" && "$VENV/bin/schemathesis" run "$base/openapi.json" --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" --generation-database none --request-timeout 10 \
        --no-color "$@")
}

failed=0
run "bearer" "${NOT_ENDING[@]}" -H "Authorization: Bearer $bearer_token" || failed=1
run "cookie" "${NOT_ENDING[@]}" -H "Cookie: $cookies" -H "X-CSRF-Token: $csrf" || failed=1
run "ending" "${ENDING[@]}" -H "Authorization: Bearer $ending_token" || failed=1
# Last: it may disable, delete or change the password of accounts it creates.
run "admin" "${ADMIN[@]}" -H "Authorization: Bearer $admin_secret" || failed=1

stop_tessera "openapi" || failed=1
if grep -q 'panicked' "$work/stderr"; then
    echo "FAIL: tessera panicked" >&2
    grep -A5 'panicked' "$work/stderr" >&2
    failed=1
fi
exit "$failed"
