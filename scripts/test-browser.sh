#!/usr/bin/env bash
# The JavaScript side, as CI runs it: the browser client's unit tests, the Express
# middleware's tests against the real binary, the mobile-style client of
# examples/mobile-client against it, then the browser suite in Debian's headless
# Chromium (driven by playwright-core; nothing here downloads a browser). It installs what it
# needs itself: Chromium from Debian if /usr/bin/chromium is missing, npm packages exactly as
# the lock files say. The screenshots it keeps are in clients/e2e/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "== Chromium (Debian's)"
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi
/usr/bin/chromium --version 2>/dev/null || true

echo "== npm packages from the lock files"
# The packages first: the examples link to them (the middleware resolves jose from its own
# node_modules, the client is used from its dist/, which its npm ci builds).
for dir in clients/js clients/node examples/express-api examples/mobile-client clients/e2e; do
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

echo "== the server binary the JavaScript tests start"
cargo build --locked --bin tessera
export TESSERA_BIN="$PWD/target/debug/tessera"

echo "== browser client: unit tests"
(cd clients/js && npm test)

echo "== Express middleware: tests against a real Tessera"
(cd clients/node && npm test)

echo "== examples/mobile-client: an asynchronous store, body transport, against a real Tessera"
(cd examples/mobile-client && npm test)

echo "== browser suite: headless Chromium"
(cd clients/e2e && npm test)
echo "screenshots: $PWD/clients/e2e/artifacts/"
