import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Runs the openssl CLI, the independent verifier; returns stdout. Throws with stderr on failure. */
export function openssl(args: readonly string[], input?: string | Buffer): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** openssl's exit status and combined output, for checks that are expected to fail. */
export function opensslStatus(args: readonly string[]): { ok: boolean; output: string } {
  const result = spawnSync('openssl', args, { encoding: 'utf8' });
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}

/** Writes the issued chain as files openssl can verify: leaf, intermediates, roots. */
export function writeChain(dir: string, chain: readonly string[]): { leaf: string; untrusted: string; roots: string } {
  const paths = { leaf: join(dir, 'leaf.pem'), untrusted: join(dir, 'untrusted.pem'), roots: join(dir, 'roots.pem') };
  writeFileSync(paths.leaf, chain[0]!);
  writeFileSync(paths.untrusted, chain.slice(1, -1).join(''));
  writeFileSync(paths.roots, chain[chain.length - 1]!);
  return paths;
}
