import { randomBytes, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { UpstreamError } from '../src/authority/errors.js';
import { CertificateAuthority } from '../src/authority/lifecycle.js';
import { lifetimePoint } from '../src/authority/auto-rotation.js';
import { UpstreamRenewer } from '../src/authority/upstream-renewal.js';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import type { AuthorityRecord } from '../src/store/types.js';
import { VaultSigner, type VaultAuth } from '../src/upstream/vault.js';
import { workloadCredentials } from './support/mtls.js';
import { ecCsr } from './support/offline-ca.js';
import { openssl } from './support/openssl.js';
import { removeDir, startTestServer, tempDir } from './support/server.js';
import { VaultSimulator } from './support/vault-api.js';

const MIN = 60_000;
const silent = pino({ level: 'silent' });
let dir: string;
let vault: VaultSimulator;

beforeAll(async () => {
  dir = tempDir('meshca-vault-');
  vault = await VaultSimulator.start(dir, { issuer: 'intermediate' });
});

afterAll(async () => {
  await vault?.stop();
  removeDir(dir);
});

const secretFile = (name: string, value: string) => {
  const path = join(dir, name);
  writeFileSync(path, value + '\n', { mode: 0o600 });
  return path;
};
const signer = (sim: VaultSimulator, auth: VaultAuth, now?: () => number) =>
  new VaultSigner({ addr: sim.url, pkiMount: sim.mount, caFile: sim.tlsCaPath, auth, requestTimeoutMs: 2000 }, silent, now);
const CSR = () => ecCsr(join(dir, 'k.pem'), '/CN=t', ['-addext', 'subjectAltName=URI:spiffe://cluster.local']);

describe('--upstream vault flags', () => {
  const config = (argv: string[]) => buildServerConfig(parseFlags(SERVE_FLAGS, ['--dev', ...argv], {}, 'serve').values).upstream;
  const vaultArgs = ['--upstream', 'vault', '--vault-addr', 'https://vault.example:8200'];

  it('builds the Vault config slice', () => {
    expect(config([])).toEqual({ kind: 'none' });
    expect(config([...vaultArgs, '--vault-token-file', '/t', '--vault-pki-mount', 'pki/int'])).toMatchObject({
      kind: 'vault',
      vault: { addr: 'https://vault.example:8200', pkiMount: 'pki/int', auth: { method: 'token', tokenFile: '/t' } },
      renewal: { retryInitialMs: 30_000, retryMaxMs: 600_000, checkIntervalMs: 60_000 },
    });
    expect(config([...vaultArgs, '--vault-auth', 'kubernetes', '--vault-role', 'meshca'])).toMatchObject({
      vault: { auth: { method: 'kubernetes', mount: 'kubernetes', role: 'meshca' } },
    });
  });

  it.each([
    [['--upstream', 'vault'], /--vault-addr is required with --upstream vault/],
    [['--upstream', 'vault', '--vault-addr', 'http://vault:8200', '--vault-token-file', '/t'], /must be https/],
    [[...vaultArgs], /--vault-token-file is required with --vault-auth token/],
    [[...vaultArgs, '--vault-auth', 'approle', '--vault-approle-role-id-file', '/r'], /--vault-approle-secret-id-file is required/],
    [[...vaultArgs, '--vault-token-file', '/t', '--vault-pki-mount', '../sys'], /not a Vault mount path/],
    [[...vaultArgs, '--vault-token-file', '/t', '--auto-rotate'], /drop --auto-rotate/],
    [['--upstream', 'acme'], /--upstream must be/],
  ])('refuses %j', (argv, message) => {
    expect(() => config(argv)).toThrow(message);
  });
});

describe('Vault client', () => {
  it.each<[string, () => VaultAuth, RegExp]>([
    [
      'token file, renewed with renew-self',
      () => ({ method: 'token', tokenFile: secretFile('token', vault.issueToken(600)) }),
      /^\/v1\/auth\/token\/renew-self$/,
    ],
    [
      'AppRole',
      () => ({
        method: 'approle',
        mount: 'approle',
        roleIdFile: secretFile('role-id', vault.approle.roleId),
        secretIdFile: secretFile('secret-id', vault.approle.secretId),
      }),
      /^\/v1\/auth\/approle\/login$/,
    ],
    [
      'Kubernetes auth',
      () => ({
        method: 'kubernetes',
        mount: 'kubernetes',
        role: vault.kubernetes.role,
        jwtFile: secretFile('sa-token', vault.kubernetes.jwt),
      }),
      /^\/v1\/auth\/kubernetes\/login$/,
    ],
  ])('signs through %s; a revoked token is replaced once', async (_name, auth, authPath) => {
    const client = signer(vault, auth());
    const before = vault.requests.length;
    const files = await client.signIntermediate({ id: 'pending-x', csrPem: CSR(), ttlMs: 90 * MIN });
    const seen = vault.requests.slice(before);
    expect(seen.map((r) => r.path)).toEqual([expect.stringMatching(authPath), `/v1/${vault.mount}/root/sign-intermediate`]);
    expect(seen[1]!.body).toMatchObject({ ttl: '5400s', use_csr_values: true, max_path_length: 0, format: 'pem' });
    const cert = new X509Certificate(files.certificate);
    expect(cert.ca).toBe(true);
    expect(files.chain).toContain(vault.rootPem.trim().split('\n')[1]);
    // Vault forgets the token: the next call is refused once, then the client authenticates again.
    vault.revoke(seen[1]!.token!);
    if (auth().method === 'token') writeFileSync(join(dir, 'token'), vault.issueToken(600));
    await client.signIntermediate({ id: 'pending-y', csrPem: CSR(), ttlMs: 90 * MIN });
    expect(vault.requests.slice(before + 2).map((r) => r.path)).toEqual([
      `/v1/${vault.mount}/root/sign-intermediate`,
      expect.stringMatching(authPath),
      `/v1/${vault.mount}/root/sign-intermediate`,
    ]);
  });

  it.each<[string, (sim: VaultSimulator) => Promise<VaultAuth>, string, RegExp]>([
    [
      'an unknown token',
      async () => ({ method: 'token', tokenFile: secretFile('bad-token', 'hvs.nope') }),
      'ERR_UPSTREAM_REFUSED',
      /Vault refused signing the intermediate .*HTTP 403: permission denied/,
    ],
    [
      'a wrong AppRole secret',
      async (sim) => ({
        method: 'approle',
        mount: 'approle',
        roleIdFile: secretFile('r', sim.approle.roleId),
        secretIdFile: secretFile('s', 'wrong'),
      }),
      'ERR_UPSTREAM_REFUSED',
      /approle login .*HTTP 400: invalid role or secret ID/,
    ],
    [
      'a missing token file',
      async () => ({ method: 'token', tokenFile: join(dir, 'no-such-file') }),
      'ERR_UPSTREAM_REFUSED',
      /cannot read the Vault token file/,
    ],
    [
      'a Vault server error',
      async (sim) => {
        sim.fault = { status: 500, errors: ['internal error'], match: /sign-intermediate/, times: 2 };
        return { method: 'token', tokenFile: secretFile('t5', sim.issueToken()) };
      },
      'ERR_UPSTREAM_UNAVAILABLE',
      /HTTP 500: internal error/,
    ],
    [
      'Vault being unreachable',
      async (sim) => {
        await sim.stop();
        return { method: 'token', tokenFile: secretFile('t6', sim.issueToken()) };
      },
      'ERR_UPSTREAM_UNAVAILABLE',
      /ECONNREFUSED/,
    ],
  ])('reports %s clearly', async (_name, setup, code, message) => {
    const sim = await VaultSimulator.start(tempDir('meshca-vault-err-'));
    try {
      const error = await signer(sim, await setup(sim))
        .signIntermediate({ id: 'p', csrPem: CSR(), ttlMs: 90 * MIN })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UpstreamError);
      expect(error).toMatchObject({ code, message: expect.stringMatching(message) });
    } finally {
      await sim.stop().catch(() => undefined);
      removeDir(sim.dir);
    }
  });
});

describe('meshca serve --upstream vault', () => {
  it('starts on an empty data dir with an intermediate Vault signed; leaves verify against the Vault root alone', async () => {
    const data = join(dir, 'serve');
    const t = await startTestServer(data, [
      '--dev',
      '--upstream',
      'vault',
      '--vault-addr',
      vault.url,
      '--vault-pki-mount',
      vault.mount,
      '--vault-ca-file',
      vault.tlsCaPath,
      '--vault-token-file',
      secretFile('serve-token', vault.issueToken()),
    ]);
    try {
      const authorities = t.server.ca.current().authorities;
      expect(authorities.map((a) => [a.kind, a.state, a.sealedKey !== null])).toEqual(
        expect.arrayContaining([
          ['root', 'active', false],
          ['intermediate', 'active', true],
        ]),
      );
      expect(authorities).toHaveLength(2);
      expect(t.server.ca.current().rootsPem).toBe(vault.rootPem);
      const issuer = await openDevTokenIssuer(data);
      const leaf = await workloadCredentials(
        t.client(),
        'spiffe://cluster.local/ns/v/sa/v',
        await issuer.sign({ namespace: 'v', serviceAccount: 'v', ttlSeconds: 600 }),
      );
      writeFileSync(join(dir, 'vault-leaf.pem'), leaf.cert);
      expect(
        openssl(['verify', '-CAfile', vault.rootPath, '-untrusted', join(dir, 'vault-leaf.pem'), join(dir, 'vault-leaf.pem')]),
      ).toContain('OK');
      expect(leaf.cert.match(/BEGIN CERTIFICATE/g)).toHaveLength(3); // leaf, meshca intermediate, Vault issuing CA
    } finally {
      await t.close();
    }
  });
});

/** An injected clock drives a real CertificateAuthority on a real SQLite store, and the Vault simulator signs on the same clock. */
describe('renewal from Vault (injected clock)', () => {
  const lines: string[] = [];
  let clock = Date.now();
  let store: SqliteStore;
  let sim: VaultSimulator;
  let renewer: UpstreamRenewer;
  let ca: CertificateAuthority;
  const attempts: [string, boolean][] = [];
  const active = async () => (await store.loadAuthorities()).find((a) => a.kind === 'intermediate' && a.state === 'active')!;
  const at = async (point: (a: AuthorityRecord) => number) => {
    clock = point(await active());
    return renewer.runOnce();
  };
  const fraction = (f: number) => (a: AuthorityRecord) => lifetimePoint(a, f) + 1;

  beforeAll(async () => {
    const d = tempDir('meshca-vault-renew-');
    sim = await VaultSimulator.start(d, { now: () => new Date(clock) });
    store = openSqliteStore({ path: join(d, 'meshca.db') });
    const vaultSigner = signer(sim, { method: 'token', tokenFile: secretFile('renew-token', sim.issueToken(24 * 3600)) }, () => clock);
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    ca = await CertificateAuthority.open({
      store,
      kek: randomBytes(32),
      logger,
      now: () => new Date(clock),
      bootstrapSigner: vaultSigner,
      minIntermediateLifetimeMs: 10 * MIN,
      trustDomain: 'cluster.local',
      keyType: 'ec-p256',
      rootTtlMs: 600 * MIN,
      intermediateTtlMs: 60 * MIN,
    });
    renewer = new UpstreamRenewer({
      ca,
      store,
      signer: vaultSigner,
      logger,
      intermediateTtlMs: 60 * MIN,
      checkIntervalMs: MIN,
      retry: { initialMs: 1000, maxMs: 8000 },
      now: () => new Date(clock),
      onAttempt: (result, overdue) => void attempts.push([result, overdue]),
    });
  });

  afterAll(async () => {
    await renewer?.stop();
    await store?.close();
    await sim?.stop().catch(() => undefined);
  });

  it('requests a new key at 2/3 (prepared, bundle unchanged) and activates it at 5/6', async () => {
    const first = await active();
    const sequence = ca.current().bundleSequence;
    expect((await at((a) => fraction(2 / 3)(a) - 2)).step.kind).toBe('wait');
    const renewed = await at(fraction(2 / 3));
    expect(renewed).toMatchObject({ step: { kind: 'renew' }, performed: true });
    const prepared = (await store.loadAuthorities()).find((a) => a.state === 'prepared' && a.kind === 'intermediate')!;
    expect(prepared.parentId).toBe(first.parentId);
    expect(new X509Certificate(prepared.certificateDer).publicKey.equals(new X509Certificate(first.certificateDer).publicKey)).toBe(false);
    expect(ca.current().bundleSequence).toBe(sequence);
    expect(await ca.pendingAuthorities()).toEqual([]);
    expect((await at((a) => fraction(5 / 6)(a) - 2)).step.kind).toBe('wait');
    expect(await at(fraction(5 / 6))).toMatchObject({ step: { kind: 'activate', id: prepared.id }, performed: true });
    expect((await active()).id).toBe(prepared.id);
    expect(attempts).toEqual([['ok', false]]);
  });

  it('keeps signing while Vault is unreachable, backs off, alerts once expiry nears, and recovers', async () => {
    const signing = await active();
    await sim.stop();
    attempts.length = 0;
    const failed = await at(fraction(2 / 3));
    expect(failed.error).toBeInstanceOf(UpstreamError);
    expect([renewer.nextDelay(failed), renewer.nextDelay(await renewer.runOnce()), renewer.nextDelay(await renewer.runOnce())]).toEqual([
      1000, 2000, 4000,
    ]);
    expect(renewer.nextDelay(await renewer.runOnce())).toBe(8000);
    expect(renewer.nextDelay(await renewer.runOnce())).toBe(8000);
    expect((await active()).id).toBe(signing.id);
    expect(ca.current().signer.id).toBe(signing.id);
    expect(await ca.pendingAuthorities()).toEqual([]);
    await at(fraction(5 / 6));
    expect(attempts.at(-1)).toEqual(['error', true]);
    expect(lines.some((l) => JSON.parse(l).level === 50 && /expires at .*: fix the upstream CA before then/.test(l))).toBe(true);

    await sim.resume();
    expect(await renewer.runOnce()).toMatchObject({ step: { kind: 'renew' }, performed: true });
    expect(renewer.consecutiveFailures).toBe(0);
    expect(attempts.at(-1)).toEqual(['ok', false]);
  });
});
