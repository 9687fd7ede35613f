import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer, type DevTokenIssuer } from '../src/authn/index.js';
import { AuthorityError } from '../src/authority/errors.js';
import { checkInvariants } from '../src/authority/invariants.js';
import { resealAuthorityKeys } from '../src/authority/kek-rotation.js';
import { trustedRootsPem } from '../src/authority/snapshot.js';
import { parseKek } from '../src/pki/keys.js';
import { CertificateAuthority } from '../src/authority/lifecycle.js';
import { databasePath } from '../src/app/data-dir.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { inspectSqliteStore } from '../src/store/sqlite.js';
import { adminCall, type AdminResponse, type AdminTarget } from './support/admin.js';
import { mutualTls, workloadCredentials, type WorkloadCredentials } from './support/mtls.js';
import { ecCsr, MESHCA_INTERMEDIATE_EXT, OpensslCa } from './support/offline-ca.js';
import { openssl } from './support/openssl.js';
import { CLI, spawnServer } from './support/process.js';
import { csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

interface Pending {
  id: string;
  csr: string;
  state: string;
  expiresAt: string;
}
interface Authority {
  id: string;
  kind: string;
  state: string;
  parentId: string | null;
  hasPrivateKey: boolean;
}

let dir: string;
let t: TestServer;
let devIssuer: DevTokenIssuer;
let token: string;
let offline: OpensslCa;

const target = (): AdminTarget => ({ port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token });
const call = (method: string, path: string, body?: unknown): Promise<AdminResponse> => adminCall(target(), method, path, { body });
const inventory = async () => (await call('GET', '/v1/authorities')).json<{ authorities: Authority[]; pending: Pending[] }>();
const requestCsr = async (body: Record<string, unknown> = {}) => {
  const res = await call('POST', '/v1/authorities/intermediate-csr', body);
  expect(res.status, res.text).toBe(201);
  return res.json<Pending>();
};
const attach = (id: string, certificate: string, chain: string) =>
  call('POST', `/v1/authorities/${id}/certificate`, { certificate, chain });
const credentials = async (sa: string) =>
  workloadCredentials(
    t.client(),
    `spiffe://cluster.local/ns/up/sa/${sa}`,
    await devIssuer.sign({ namespace: 'up', serviceAccount: sa, ttlSeconds: 600 }),
  );

/** openssl verify of a leaf against the upstream root alone, the rest of cert_chain as untrusted. */
function verifiesAgainst(rootPath: string, leaf: WorkloadCredentials, name: string): string {
  const leafPath = join(dir, `${name}-leaf.pem`);
  writeFileSync(leafPath, leaf.cert);
  return openssl(['verify', '-CAfile', rootPath, '-untrusted', leafPath, leafPath]);
}

beforeAll(async () => {
  dir = tempDir('meshca-upstream-');
  t = await startTestServer(join(dir, 'data'), ['--dev', '--admin-max-auth-failures', '1000']);
  devIssuer = await openDevTokenIssuer(join(dir, 'data'));
  token = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
  offline = OpensslCa.root(dir, 'offline-root');
});

afterAll(async () => {
  await t?.close();
  removeDir(dir);
});

describe('offline root: CSR out, certificate in', () => {
  it('returns a CSR for a pathLen-0 signing CA with the trust domain URI SAN, and records a pending authority', async () => {
    const pending = await requestCsr({ subject: 'CN=meshca cluster-1, O=Example' });
    expect(pending.id).toMatch(/^pending-[0-9a-f]{16}$/);
    const text = openssl(['req', '-noout', '-verify', '-text'], pending.csr);
    expect(text).toContain('CA:TRUE, pathlen:0');
    expect(text).toContain('Certificate Sign, CRL Sign');
    expect(text).toContain('URI:spiffe://cluster.local');
    expect(text).toMatch(/Subject: CN ?= ?meshca cluster-1, O ?= ?Example/);
    expect(text).not.toContain('PRIVATE KEY');
    const listed = (await inventory()).pending.find((p) => p.id === pending.id)!;
    expect(listed).toMatchObject({ state: 'pending', csr: pending.csr });
    expect(new Date(listed.expiresAt).getTime()).toBeGreaterThan(Date.now() + 6 * 86_400_000);
    expect((await call('POST', `/v1/authorities/${pending.id}/activate`)).json()).toMatchObject({ code: 'ERR_AUTHORITY_STATE' });
    expect((await call('POST', '/v1/authorities/intermediate-csr', { subject: 'not a name' })).json()).toMatchObject({
      code: 'ERR_CA_SPEC_INVALID',
    });
  });

  it('attaches the root-signed certificate: prepared, the upstream root joins the bundle, leaves verify against it alone over mTLS', async () => {
    const pending = await requestCsr();
    const before = t.server.ca.current().bundleSequence;
    const res = await attach(pending.id, offline.sign(pending.csr), offline.certPem);
    expect(res.status, res.text).toBe(200);
    const attached = res.json<{ authorities: Authority[] }>().authorities;
    const [root, intermediate] = ['root', 'intermediate'].map((kind) => attached.find((a) => a.kind === kind));
    expect(root).toMatchObject({ kind: 'root', state: 'prepared', hasPrivateKey: false });
    expect(intermediate).toMatchObject({ kind: 'intermediate', state: 'prepared', parentId: root!.id, hasPrivateKey: true });
    expect(t.server.ca.current().bundleSequence).toBe(before + 1);
    expect((await call('GET', '/v1/bundle')).text).toContain(offline.certPem.trim().split('\n')[1]);
    expect((await inventory()).pending.map((p) => p.id)).not.toContain(pending.id);
    expect((await attach(pending.id, offline.sign(pending.csr), offline.certPem)).status).toBe(404);

    expect((await call('POST', `/v1/authorities/${intermediate!.id}/activate`)).status).toBe(200);
    const [a, b] = [await credentials('a'), await credentials('b')];
    expect(verifiesAgainst(offline.certPath, a, 'direct')).toContain('OK');
    const upstreamOnly = { clientCa: offline.certPem, serverCa: offline.certPem };
    expect(await mutualTls(a, b, upstreamOnly)).toMatchObject({ ok: true, serverSawClient: 'URI:spiffe://cluster.local/ns/up/sa/a' });
  });

  it('carries an extra upstream intermediate in cert_chain: [leaf, meshca intermediate, upstream intermediate, roots]', async () => {
    const upstreamIntermediate = offline.child('offline-issuing');
    const pending = await requestCsr({ keyType: 'ec-p384' });
    const signed = upstreamIntermediate.sign(pending.csr, { ext: MESHCA_INTERMEDIATE_EXT });
    const res = await attach(pending.id, signed, upstreamIntermediate.certPem + offline.certPem);
    expect(res.status, res.text).toBe(200);
    const intermediate = res.json<{ authorities: Authority[] }>().authorities.find((a) => a.kind === 'intermediate')!;
    expect((await call('POST', `/v1/authorities/${intermediate.id}/activate`)).status).toBe(200);

    const chain = await t.client().createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/up/sa/c'),
      token: await devIssuer.sign({ namespace: 'up', serviceAccount: 'c', ttlSeconds: 600 }),
    });
    expect(chain).toHaveLength(4);
    expect(chain[2]).toBe(upstreamIntermediate.certPem.replace(/\r/g, ''));
    const [c, d] = [await credentials('c'), await credentials('d')];
    expect(verifiesAgainst(offline.certPath, c, 'extra')).toContain('OK');
    expect(await mutualTls(c, d, { clientCa: offline.certPem, serverCa: offline.certPem })).toMatchObject({ ok: true });
    // The store's invariants follow intermediates through their upstream chain; the leaves verify against their authority.
    const inspection = inspectSqliteStore(databasePath(join(dir, 'data')));
    try {
      const report = await checkInvariants(inspection, { skipIntegrity: true });
      expect(report.results.filter((r) => r.status === 'failed')).toEqual([]);
    } finally {
      inspection.close();
    }
  });

  it('refuses an unfit certificate with 400 and the precise reason, writing nothing', async () => {
    const pending = await requestCsr();
    const pathlenZero = offline.child('pathlen-zero', 'critical,CA:TRUE,pathlen:0');
    const otherRoot = OpensslCa.root(dir, 'other-root');
    const strangerCsr = ecCsr(join(dir, 'stranger-key.pem'), '/CN=stranger');
    const ext = (replace: [RegExp, string]) => MESHCA_INTERMEDIATE_EXT.replace(...replace);
    const cases: { name: string; certificate: () => string; chain: () => string; code: string; message: RegExp }[] = [
      {
        name: 'another key',
        certificate: () => offline.sign(strangerCsr, { ext: MESHCA_INTERMEDIATE_EXT }),
        chain: () => offline.certPem,
        code: 'ERR_KEY_MISMATCH',
        message: /another public key than this pending authority's/,
      },
      {
        name: 'not a CA',
        certificate: () => offline.sign(pending.csr, { ext: ext([/CA:TRUE,pathlen:0/, 'CA:FALSE']) }),
        chain: () => offline.certPem,
        code: 'ERR_UPSTREAM_NOT_CA',
        message: /not a CA certificate/,
      },
      {
        name: 'no keyCertSign',
        certificate: () => offline.sign(pending.csr, { ext: ext([/keyCertSign,cRLSign/, 'digitalSignature']) }),
        chain: () => offline.certPem,
        code: 'ERR_UPSTREAM_NOT_CA',
        message: /lacks KeyUsage keyCertSign/,
      },
      {
        name: 'pathLen of the issuer forbids leaves',
        certificate: () => pathlenZero.sign(pending.csr, { ext: MESHCA_INTERMEDIATE_EXT }),
        chain: () => pathlenZero.certPem + offline.certPem,
        code: 'ERR_UPSTREAM_PATHLEN',
        message: /pathLen 0 but 1 CA certificate\(s\) sit below it/,
      },
      {
        name: 'shorter than --max-ttl',
        certificate: () => offline.sign(pending.csr, { days: 10 }),
        chain: () => offline.certPem,
        code: 'ERR_UPSTREAM_LIFETIME',
        message: /shorter than the longest workload certificate \(--max-ttl, 720h\)/,
      },
      {
        name: 'chain to another root',
        certificate: () => offline.sign(pending.csr),
        chain: () => otherRoot.certPem,
        code: 'ERR_CHAIN_INVALID',
        message: /the chain does not verify to a root/,
      },
      {
        name: 'missing upstream intermediate',
        certificate: () => pathlenZero.sign(pending.csr, { ext: MESHCA_INTERMEDIATE_EXT }),
        chain: () => offline.certPem,
        code: 'ERR_CHAIN_INVALID',
        message: /nothing in it issued the certificate/,
      },
      {
        name: 'another trust domain',
        certificate: () => offline.sign(pending.csr, { ext: ext([/cluster\.local/, 'other.example']) }),
        chain: () => offline.certPem,
        code: 'ERR_UPSTREAM_TRUST_DOMAIN',
        message: /URI SAN spiffe:\/\/other\.example is not this meshca's trust domain/,
      },
    ];
    const before = { sequence: t.server.ca.current().bundleSequence, authorities: (await inventory()).authorities.length };
    for (const c of cases) {
      const res = await attach(pending.id, c.certificate(), c.chain());
      expect(res.status, c.name).toBe(400);
      expect(res.json<{ code: string; message: string }>(), c.name).toMatchObject({
        code: c.code,
        message: expect.stringMatching(c.message),
      });
    }
    const after = await inventory();
    expect({ sequence: t.server.ca.current().bundleSequence, authorities: after.authorities.length }).toEqual(before);
    expect(after.pending.map((p) => p.id)).toContain(pending.id);
    // Still attachable after all those refusals.
    expect((await attach(pending.id, offline.sign(pending.csr), offline.certPem)).status).toBe(200);
  });

  it('deletes a pending authority on request', async () => {
    const pending = await requestCsr();
    expect((await call('POST', `/v1/authorities/${pending.id}/remove`)).json()).toEqual({
      removed: [pending.id],
      unexpiredCertificates: 0,
    });
    expect((await inventory()).pending.map((p) => p.id)).not.toContain(pending.id);
    expect((await call('POST', `/v1/authorities/${pending.id}/remove`)).status).toBe(404);
    expect((await attach(pending.id, offline.sign(pending.csr), offline.certPem)).status).toBe(404);
  });
});

describe('pending authorities on a local store', () => {
  const openCa = async (d: string, kek: Buffer, now: () => Date) => {
    const store = openSqliteStore({ path: join(d, 'meshca.db') });
    const ca = await CertificateAuthority.open({
      store,
      kek,
      logger: pino({ level: 'silent' }),
      now,
      trustDomain: 'cluster.local',
      keyType: 'ec-p256',
      rootTtlMs: 10 * 365 * 86_400_000,
      intermediateTtlMs: 365 * 86_400_000,
      pendingTtlMs: 3_600_000,
    });
    return { store, ca };
  };

  it('KEK rotation re-seals a pending key: the certificate attaches under the new KEK', async () => {
    const d = tempDir('meshca-pending-kek-');
    const [oldKek, newKek] = [randomBytes(32), randomBytes(32)];
    let { store, ca } = await openCa(d, oldKek, () => new Date());
    try {
      const { pending, csrPem } = await ca.requestIntermediate({}, 'test');
      await resealAuthorityKeys(store, oldKek, newKek, 'test');
      await store.close();
      ({ store, ca } = await openCa(d, newKek, () => new Date()));
      const attached = await ca.attachCertificate(pending.id, { certificate: offline.sign(csrPem), chain: offline.certPem }, 'test');
      expect(attached.map((a) => a.kind)).toEqual(['root', 'intermediate']);
    } finally {
      await store.close();
      removeDir(d);
    }
  });

  it('refuses to attach after the pending lifetime and housekeeping deletes the CSR', async () => {
    const d = tempDir('meshca-pending-');
    let now = Date.now();
    const { store, ca } = await openCa(d, Buffer.alloc(32, 7), () => new Date(now));
    try {
      const { pending, csrPem } = await ca.requestIntermediate({}, 'test');
      const certificate = offline.sign(csrPem);
      now += 3_600_000;
      await expect(ca.attachCertificate(pending.id, { certificate, chain: offline.certPem }, 'test')).rejects.toThrow(AuthorityError);
      await expect(ca.attachCertificate(pending.id, { certificate, chain: offline.certPem }, 'test')).rejects.toThrow(
        /expired at .*; remove it and request a new CSR/,
      );
      expect(await ca.expirePending('housekeeping')).toEqual([pending.id]);
      expect(await ca.pendingAuthorities()).toEqual([]);
      const audit = (await store.listAudit({ limit: 10 })).items.map((e) => e.action);
      expect(audit).toContain('authority.pending-expired');
    } finally {
      await store.close();
      removeDir(d);
    }
  });
});

function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe('crash between CSR and attach', () => {
  it('kill -9 after "meshca authorities csr" keeps the sealed pending key; after restart "attach" completes it and the store verifies', {
    timeout: 180_000,
  }, async () => {
    const data = join(dir, 'crash');
    const cliAdmin = (port: number) => ['--admin-url', `https://localhost:${port}`, '--data-dir', data];
    let server = await spawnServer(data, ['--dev']);
    try {
      const csrPath = join(dir, 'crash.csr');
      const csr = await cli(['authorities', 'csr', '--out', csrPath, ...cliAdmin(server.adminPort)]);
      expect(csr.code, csr.stderr).toBe(0);
      const id = /pending authority (pending-[0-9a-f]{16})/.exec(csr.stdout)![1]!;
      server.child.kill('SIGKILL');
      await server.exited;

      server = await spawnServer(data, ['--dev']);
      const roots = trustedRootsPem(await storeAuthorities(data)).pem;
      const listed = await adminCall(
        { port: server.adminPort, roots, token: readFileSync(join(data, 'admin-token'), 'utf8').trim() },
        'GET',
        '/v1/authorities',
      );
      expect(listed.json<{ pending: Pending[] }>().pending.map((p) => p.id)).toEqual([id]);
      const certPath = join(dir, 'crash-int.pem');
      writeFileSync(certPath, offline.sign(readFileSync(csrPath, 'utf8')));
      const attached = await cli([
        'authorities',
        'attach',
        id,
        '--cert',
        certPath,
        '--chain',
        offline.certPath,
        ...cliAdmin(server.adminPort),
      ]);
      expect(attached.code, attached.stderr).toBe(0);
      expect(attached.stdout).toMatch(/int-[0-9a-f]{16}\s+intermediate\s+prepared/);
      server.child.kill('SIGKILL');
      await server.exited;

      const inspection = inspectSqliteStore(databasePath(data));
      try {
        const report = await checkInvariants(inspection, { kek: parseKek(readFileSync(join(data, 'kek'), 'utf8')) });
        expect(report.results.filter((r) => r.status === 'failed')).toEqual([]);
        expect(report.authorities).toBe(4);
      } finally {
        inspection.close();
      }
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});

/** The authorities straight from a data dir (the server may be running: WAL readers do not block it). */
async function storeAuthorities(data: string) {
  const store = openSqliteStore({ path: databasePath(data) });
  try {
    return await store.loadAuthorities();
  } finally {
    await store.close();
  }
}
