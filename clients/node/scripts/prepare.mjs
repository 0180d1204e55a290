// `prepare`: `npm install ./clients/node` links this folder without installing its
// dependencies, and Node resolves `jose` from the link's target, this folder. So when they are
// missing here, they are installed here (exactly as the lock file says). Installs from a
// tarball or a registry never need this: npm installs `jose` beside the package.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** npm settings passed on to the nested install: where packages come from, nothing else. */
const KEEP = /^npm_config_(registry|cache|userconfig|globalconfig|(https?_)?proxy|noproxy|strict_ssl|cafile|offline|prefer_(offline|online)|fetch_[a-z_]+|@.+:registry)$/i;

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'node_modules', 'jose', 'package.json'))) {
  console.error('@tessera-auth/express: installing its dependencies in', root);
  // Settings of the install that runs this one (`-g`, `--dry-run`...) are not for this folder.
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.toLowerCase().startsWith('npm_config_') && !KEEP.test(key)) {
      delete env[key];
    }
  }
  execFileSync(process.platform === 'win32' ? 'npm.cmd' : 'npm',
    ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
    { cwd: root, stdio: 'inherit', env });
}
