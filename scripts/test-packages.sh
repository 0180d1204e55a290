#!/usr/bin/env bash
# The JavaScript packages as a newcomer installs them, outside this repository: each is
# packed (`npm pack`, which builds it), checked by `npm publish --dry-run`, installed from its
# tarball into a fresh project and imported there as an ES module, with `require()` from
# CommonJS and from TypeScript; then both are installed by path from a copy of a fresh
# checkout (no node_modules, no dist/) and imported again. Needs Node 20.19+ and npm with the
# registry or its cache (TypeScript for the build, jose for the middleware).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-packages.XXXXXX")"
trap 'rm -rf "$work"' EXIT
quiet=(--no-audit --no-fund --loglevel=error)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

echo "== a copy of the packages as a fresh checkout has them"
mkdir -p "$work/src"
for dir in clients/js clients/node; do
    git ls-files -z --cached --others --exclude-standard "$dir" |
        while IFS= read -r -d '' file; do
            [ -e "$file" ] || continue # deleted in the working tree
            mkdir -p "$work/src/$(dirname "$file")"
            cp "$file" "$work/src/$file"
        done
done
js="$work/src/clients/js"
node="$work/src/clients/node"
[ ! -e "$js/dist" ] && [ ! -e "$node/node_modules" ] || fail "the copy is not fresh"

echo "== npm pack (runs prepare: builds the browser client)"
mkdir -p "$work/tarballs"
for pkg in "$js" "$node"; do
    (cd "$pkg" && npm pack --pack-destination "$work/tarballs" "${quiet[@]}" >/dev/null)
done
client_tgz="$(ls "$work"/tarballs/tessera-auth-client-*.tgz)"
express_tgz="$(ls "$work"/tarballs/tessera-auth-express-*.tgz)"
listing() { tar -tzf "$1" | sed 's#^package/##' | sort; }
client_files="$(listing "$client_tgz")"
express_files="$(listing "$express_tgz")"
echo "client:  $(echo $client_files)"
echo "express: $(echo $express_files)"
for file in dist/index.js dist/index.d.ts dist/errors.js package.json README.md; do
    grep -qx "$file" <<<"$client_files" || fail "$file missing from $client_tgz"
done
for file in index.js index.d.ts package.json README.md; do
    grep -qx "$file" <<<"$express_files" || fail "$file missing from $express_tgz"
done
if grep -E '^(test|src|scripts|node_modules)/' <<<"$client_files"$'\n'"$express_files"; then
    fail "tests, sources or scripts packed"
fi

echo "== npm publish --dry-run: no warnings"
for pkg in "$js" "$node"; do
    out="$(cd "$pkg" && npm publish --dry-run --no-audit --no-fund 2>&1)" || {
        echo "$out"
        fail "npm publish --dry-run in $pkg"
    }
    if grep -i 'warn' <<<"$out" | grep -v 'This command requires you to be logged in'; then
        fail "npm publish --dry-run warned in $pkg"
    fi
done

echo "== install from the tarballs into a fresh project"
app="$work/app"
mkdir -p "$app"
(cd "$app" && npm init -y >/dev/null && npm install "${quiet[@]}" "$client_tgz" "$express_tgz")
[ ! -L "$app/node_modules/@tessera-auth/client" ] || fail "installed as a link"

cat >"$app/esm.mjs" <<'EOF'
import assert from 'node:assert/strict';
import { TesseraClient, TesseraError, CookiesNotStoredError } from '@tessera-auth/client';
import { requireAuth, requireRole } from '@tessera-auth/express';
assert.equal(typeof TesseraClient, 'function');
assert.ok(CookiesNotStoredError.prototype instanceof TesseraError);
assert.equal(typeof requireAuth, 'function');
assert.equal(typeof requireRole('admin'), 'function');
const client = new TesseraClient({ baseUrl: 'http://127.0.0.1:8080', transport: 'body' });
assert.equal(client.signedIn, false);
console.log('ESM import: ok');
EOF
cat >"$app/cjs.cjs" <<'EOF'
const assert = require('node:assert/strict');
const { TesseraClient } = require('@tessera-auth/client');
const { requireAuth } = require('@tessera-auth/express');
assert.equal(typeof TesseraClient, 'function');
assert.equal(typeof requireAuth, 'function');
console.log('CommonJS require: ok');
EOF
cat >"$app/types.mts" <<'EOF'
import { TesseraClient, type ClientOptions, type AsyncKeyValueStorage } from '@tessera-auth/client';
import { requireAuth, type RequireAuthOptions } from '@tessera-auth/express';
const store: AsyncKeyValueStorage = {
  getItem: async (key: string) => key,
  setItem: async () => {},
  removeItem: async () => {},
};
const options: ClientOptions = { baseUrl: 'https://auth.example.com', transport: 'body', storage: store };
const auth: RequireAuthOptions = { issuer: 'https://auth.example.com' };
export const made = [new TesseraClient(options), requireAuth(auth)];
EOF
(cd "$app" && node esm.mjs && node cjs.cjs)
# Types, as a TypeScript project with Node's resolution (the compiler the client builds with).
"$js/node_modules/.bin/tsc" --noEmit --strict --skipLibCheck --module nodenext \
    --moduleResolution nodenext --target es2022 --lib es2022,dom "$app/types.mts"
echo "TypeScript: ok"

echo "== install by path (npm install ./clients/js ./clients/node) from a fresh copy"
rm -rf "$js/node_modules" "$js/dist" "$node/node_modules"
bypath="$work/by-path"
mkdir -p "$bypath"
(cd "$bypath" && npm init -y >/dev/null && npm install "${quiet[@]}" "$js" "$node")
cp "$app/esm.mjs" "$app/cjs.cjs" "$bypath/"
(cd "$bypath" && node esm.mjs && node cjs.cjs)

echo "packages: ok"
