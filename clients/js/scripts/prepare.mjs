// `prepare`: builds dist/ whenever npm installs this package from its folder or a git URL,
// packs it or publishes it. `npm install ./clients/js` runs it in this folder without
// installing the folder's devDependencies, so TypeScript is fetched first (exactly as the
// lock file says) when it is missing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** npm settings passed on to the nested install: where packages come from, nothing else. */
const KEEP = /^npm_config_(registry|cache|userconfig|globalconfig|(https?_)?proxy|noproxy|strict_ssl|cafile|offline|prefer_(offline|online)|fetch_[a-z_]+|@.+:registry)$/i;

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
// Settings of the install that runs this one (`-g`, `--omit=dev`, `--dry-run`...) are not
// meant for this folder's own devDependencies.
const env = { ...process.env };
for (const key of Object.keys(env)) {
  if (key.toLowerCase().startsWith('npm_config_') && !KEEP.test(key)) {
    delete env[key];
  }
}
const run = (file, args) => execFileSync(file, args, { cwd: root, stdio: 'inherit', env });

if (!existsSync(tsc)) {
  console.error('@tessera-auth/client: installing TypeScript to build dist/');
  run(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error']);
}
run(process.execPath, [tsc, '-p', 'tsconfig.json']);
