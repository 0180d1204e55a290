#!/usr/bin/env bash
# README's "Quickstart with curl", run as it is written against a live server (on a free port
# instead of 8080): every command must succeed and say what README says it does. Needs curl
# and jq (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/live-server.sh

if ! command -v jq >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends jq
fi
cargo build --locked --quiet --bin tessera

# The block between "## Quickstart with curl" and the end of its code fence.
sed -n '/^## Quickstart with curl/,/^## /p' README.md | sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' >"$work/quickstart.sh"
grep -q 'v1/auth/login' "$work/quickstart.sh" || { echo "FAIL: no quickstart block in README.md" >&2; exit 1; }

port=$(free_port)
TESSERA_LISTEN="127.0.0.1:$port" TESSERA_DATABASE_URL="sqlite://$work/readme.db" start_tessera readme
sed -i "s#^B=http://127.0.0.1:8080;#B=http://127.0.0.1:$port;#" "$work/quickstart.sh"
# Every curl fails on an HTTP error, and the output is kept to be checked.
sed -i 's/curl -s /curl -sf /g' "$work/quickstart.sh"
bash -euo pipefail "$work/quickstart.sh" >"$work/out.txt"
grep -q '"email":"ada@example.com"' "$work/out.txt" || { echo "FAIL: register/me" >&2; cat "$work/out.txt" >&2; exit 1; }
grep -q '"sessions"' "$work/out.txt" || { echo "FAIL: sessions" >&2; cat "$work/out.txt" >&2; exit 1; }
stop_tessera readme
echo "README quickstart: ok"
