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

/** A TLS CA and a serverAuth certificate for 127.0.0.1/localhost, made with openssl (for the simulated upstream servers). */
export function tlsServerIdentity(dir: string, name: string): { caPem: string; key: string; cert: string } {
  const f = (n: string) => join(dir, `${name}-${n}`);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', `/CN=${name}-tls-ca`]);
  openssl(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${name}`]);
  writeFileSync(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl([
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-out',
    f('server.crt'),
    '-extfile',
    f('server.ext'),
  ]);
  return {
    caPem: openssl(['x509', '-in', f('ca.crt')]),
    key: openssl(['pkey', '-in', f('server.key')]),
    cert: openssl(['x509', '-in', f('server.crt')]),
  };
}
