import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { DevTokenIssuer } from '../src/authn/index.js';
import { IssuanceService } from '../src/authority/issuance.js';
import { CertificateAuthority } from '../src/authority/lifecycle.js';
import { IssuancePolicy } from '../src/authority/policy.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { IssuedCertificateRecord } from '../src/store/types.js';
import { workloadCredentials } from './support/mtls.js';
import { openssl } from './support/openssl.js';
import { CLI } from './support/process.js';
import { crlBlocks, crlNumbersByIssuer, leafAndIssuer, serialOf, verifyWithCrlSet } from './support/revocation.js';
import { removeDir, tempDir, type DevServer, startDevServer, type TestServer } from './support/server.js';

interface AuthorityView {
  id: string;
  kind: string;
  parentId: string | null;
  state: string;
  subject: string;
  serialNumber: string;
  taintReason: string | null;
  taintedAt: string | null;
}
interface RevokeReply {
  authority: AuthorityView;
  replacement: AuthorityView | null;
  tainted: string[];
  unexpiredCertificates: number;
  certificates: string[];
  reissued: boolean;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** The intermediate the first test rotates out, and one of its leaves that is never revoked on its own. */
let retired: { id: string; sibling: Issued };
let dir: string;
let data: string;
let t: TestServer;
let devIssuer: DevTokenIssuer;
let token: string;

let dev: DevServer;
const call = (...args: Parameters<DevServer['call']>) => dev.call(...args);
const issue = async (sa: string) => {
  const w = await workloadCredentials(
    t.client(),
    `spiffe://cluster.local/ns/ir/sa/${sa}`,
    await devIssuer.sign({ namespace: 'ir', serviceAccount: sa, ttlSeconds: 600 }),
  );
  const [leaf, intermediate] = leafAndIssuer(w.cert);
  return { leaf, intermediate, serial: serialOf(leaf) };
};
type Issued = Awaited<ReturnType<typeof issue>>;
const crlSet = async () => (await call('GET', '/v1/crl?format=pem', undefined, null)).text;
const bundle = async () => (await call('GET', '/v1/bundle', undefined, null)).text;
const authorities = async () => (await call('GET', '/v1/authorities')).json<{ authorities: AuthorityView[] }>().authorities;
const signerId = () => t.server.ca.current().signer.id;
/** Each leaf's verdict under `openssl verify -crl_check_all` with the published set and bundle. */
const verdicts = async (leaves: Record<string, Issued>) => {
  const [set, roots] = [await crlSet(), await bundle()];
  return Object.fromEntries(Object.entries(leaves).map(([name, w]) => [name, verifyWithCrlSet(w.leaf, w.intermediate, roots, set).ok]));
};
const auditCount = async () => (await call('GET', '/v1/audit?limit=1000')).json<{ items: unknown[] }>().items.length;

/** The issuer CN of the certificate the admin listener presents now. */
function servingIssuerCn(): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port: t.server.adminAddress.port, servername: 'localhost', rejectUnauthorized: false },
      () => {
        resolve(String(socket.getPeerCertificate().issuer.CN));
        socket.end();
      },
    );
    socket.on('error', reject);
  });
}

beforeAll(async () => {
  dev = await startDevServer();
  ({ t, dir, data, devIssuer, adminToken: token } = dev);
});

afterAll(() => dev?.close());

describe('the complete CRL set', () => {
  it("publishes every live authority's CRL; a revoked leaf of a retired intermediate fails -crl_check_all", async () => {
    const old = await issue('old');
    const sibling = await issue('sibling');
    retired = { id: signerId(), sibling };
    expect((await call('POST', '/v1/authorities/rotate-intermediate')).status).toBe(201);
    const fresh = await issue('fresh');
    expect(openssl(['x509', '-noout', '-ocsp_uri'], fresh.leaf).trim()).toBe(''); // no AIA unless --ocsp-url
    expect(await verdicts({ old, sibling, fresh })).toEqual({ old: true, sibling: true, fresh: true });

    expect((await call('POST', `/v1/certificates/${old.serial}/revoke`, { reason: 'keyCompromise' })).status).toBe(200);
    const set = await crlSet();
    expect(crlBlocks(set)).toHaveLength(3); // two intermediates and the root
    expect(await verdicts({ old, sibling, fresh })).toEqual({ old: false, sibling: true, fresh: true });
    const roots = await bundle();
    expect(verifyWithCrlSet(old.leaf, old.intermediate, roots, set).output).toContain('certificate revoked');
    // GET /v1/crl (DER) stays the active intermediate's, and it leads the PEM set.
    const der = (await call('GET', '/v1/crl', undefined, null)).body;
    expect(openssl(['crl', '-inform', 'DER', '-noout', '-issuer'], der)).toContain(
      t.server.ca.current().signer.record.subject.split('CN=')[1]!,
    );
    expect(crlBlocks(set)[0]).toBe(openssl(['crl', '-inform', 'DER', '-outform', 'PEM'], der));
  });

  it('keeps CRL numbers strictly increasing per issuer across a restart; "meshca crl --all" writes the same set', async () => {
    const before = crlNumbersByIssuer(await crlSet());
    t = await dev.restart();
    await call('POST', `/v1/certificates/${(await issue('bump')).serial}/revoke`, { reason: 'superseded' });
    const after = crlNumbersByIssuer(await crlSet());
    for (const [issuer, number] of before) expect(after.get(issuer), issuer).toBeGreaterThan(number);
    const out = join(dir, 'crls.pem');
    await promisify(execFile)(process.execPath, [CLI, 'crl', '--all', '--data-dir', data, '--out', out]);
    const written = crlNumbersByIssuer(readFileSync(out, 'utf8'));
    expect([...written.keys()].sort()).toEqual([...after.keys()].sort());
    for (const [issuer, number] of after) expect(written.get(issuer)).toBeGreaterThan(number);
  });
});

describe('revoking an intermediate', () => {
  it('taints a retired one without touching the signer; its leaves fail -crl_check_all from then on', async () => {
    const signer = signerId();
    expect(verifyWithCrlSet(retired.sibling.leaf, retired.sibling.intermediate, await bundle(), await crlSet()).ok).toBe(true);
    const reply = (await call('POST', `/v1/authorities/${retired.id}/revoke`, { reason: 'superseded' })).json<RevokeReply>();
    expect(reply).toMatchObject({
      authority: { id: retired.id, state: 'tainted', taintReason: 'superseded' },
      replacement: null,
      tainted: [retired.id],
    });
    expect(reply.unexpiredCertificates).toBeGreaterThanOrEqual(2);
    expect(signerId()).toBe(signer);
    const verdict = verifyWithCrlSet(retired.sibling.leaf, retired.sibling.intermediate, await bundle(), await crlSet());
    expect(verdict.ok).toBe(false);
    expect(verdict.output).toMatch(/certificate revoked/);
  });

  it('taints the active one, activates a fresh intermediate under the same root in one step, and re-issues the serving certificate', async () => {
    const victim = await issue('victim');
    const tainted = signerId();
    const root = t.server.ca.current().signer.record.parentId;
    const sequence = t.server.ca.current().bundleSequence;
    const res = await call('POST', `/v1/authorities/${tainted}/revoke`, { reason: 'keyCompromise', reissue: true });
    expect(res.status, res.text).toBe(200);
    const reply = res.json<RevokeReply>();
    expect(reply.authority).toMatchObject({ id: tainted, state: 'tainted', taintReason: 'keyCompromise' });
    expect(reply.replacement).toMatchObject({ state: 'active', parentId: root, kind: 'intermediate' });
    expect(reply.tainted).toEqual([tainted]);
    expect(reply.unexpiredCertificates).toBeGreaterThanOrEqual(1);
    expect(reply.reissued).toBe(true);
    expect(signerId()).toBe(reply.replacement!.id);
    expect(t.server.ca.current().bundleSequence).toBe(sequence);
    expect(reply.replacement!.subject).toContain(await servingIssuerCn());

    const listed = (await call('GET', reply.certificates[0]!)).json<{ items: { serial: string }[] }>().items.map((i) => i.serial);
    expect(listed).toContain(victim.serial);
    const after = await issue('after');
    expect(after.intermediate).not.toBe(victim.intermediate);
    expect(await verdicts({ victim, after })).toEqual({ victim: false, after: true });
    const rootCrl = (await call('GET', `/v1/authorities/${root}/crl?format=pem`, undefined, null)).text;
    expect(openssl(['crl', '-noout', '-text'], rootCrl).toLowerCase()).toContain(reply.authority.serialNumber.slice(-8));
    const events = (await call('GET', '/v1/audit?limit=5')).json<{
      items: { action: string; target: string; details: Record<string, unknown> }[];
    }>().items;
    expect(events.find((e) => e.action === 'authority.revoke')).toMatchObject({
      target: tainted,
      details: { reason: 'keyCompromise', replacementId: reply.replacement!.id },
    });
  });

  it.each([
    ['an unknown authority', () => '/v1/authorities/int-0123456789abcdef/revoke', { reason: 'keyCompromise' }, token, 404],
    ['a bad reason', () => `/v1/authorities/${signerId()}/revoke`, { reason: 'oops' }, token, 400],
    ['no reason', () => `/v1/authorities/${signerId()}/revoke`, {}, token, 400],
    ['no admin token', () => `/v1/authorities/${signerId()}/revoke`, { reason: 'keyCompromise' }, null, 401],
    [
      'an already tainted one',
      async () => `/v1/authorities/${(await authorities()).find((a) => a.state === 'tainted')!.id}/revoke`,
      { reason: 'keyCompromise' },
      token,
      409,
    ],
    [
      'the only root',
      async () => `/v1/authorities/${t.server.ca.current().signer.record.parentId}/revoke`,
      { reason: 'cACompromise' },
      token,
      409,
    ],
  ] as const)('refuses %s with %i and changes nothing', async (_what, path, body, tok, code) => {
    const [states, audit] = [JSON.stringify(await authorities()), await auditCount()];
    const res = await call('POST', await path(), body, tok === null ? null : token);
    expect(res.status, res.text).toBe(code);
    expect(res.json<{ message: string }>().message.length).toBeGreaterThan(10);
    expect(JSON.stringify(await authorities())).toBe(states);
    // A failed authentication is audited (one aggregated row per source and minute), nothing else is.
    if (code === 401) expect(await auditCount()).toBeOneOf([audit, audit + 1]);
    else expect(await auditCount()).toBe(audit);
  });
});

describe('revoking a root', () => {
  it('needs a prepared successor, taints the root with its intermediates, and leaves the bundle on remove?force=true', async () => {
    const oldRoot = t.server.ca.current().signer.record.parentId!;
    const survivor = await issue('survivor');
    const prepared = (await call('POST', '/v1/authorities/prepare')).json<{ authorities: AuthorityView[] }>().authorities;
    const [newRoot, newIntermediate] = [prepared.find((a) => a.kind === 'root')!, prepared.find((a) => a.kind === 'intermediate')!];
    const sequence = t.server.ca.current().bundleSequence;

    const reply = (await call('POST', `/v1/authorities/${oldRoot}/revoke`, { reason: 'cACompromise' })).json<RevokeReply>();
    expect(reply.authority).toMatchObject({ id: oldRoot, state: 'tainted', taintReason: 'cACompromise' });
    expect(reply.replacement).toMatchObject({ id: newIntermediate.id, state: 'active' });
    const states = new Map((await authorities()).map((a) => [a.id, a]));
    expect(states.get(newRoot.id)!.state).toBe('active');
    const children = [...states.values()].filter((a) => a.parentId === oldRoot);
    expect(children.map((a) => a.state)).toEqual(children.map(() => 'tainted'));
    expect(children.every((a) => a.taintReason !== null)).toBe(true);
    expect((await bundle()).match(/BEGIN CERTIFICATE/g)).toHaveLength(2); // still trusted until removed
    const replaced = await issue('replaced');
    expect(verifyWithCrlSet(replaced.leaf, replaced.intermediate, await bundle(), await crlSet()).ok).toBe(true);

    expect((await call('POST', `/v1/authorities/${oldRoot}/remove`)).status).toBe(409); // its leaves are unexpired
    expect((await call('POST', `/v1/authorities/${oldRoot}/remove?force=true`)).status).toBe(200);
    expect(t.server.ca.current().bundleSequence).toBe(sequence + 1);
    const roots = await bundle();
    expect(roots.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    expect(verifyWithCrlSet(survivor.leaf, survivor.intermediate, roots, await crlSet()).ok).toBe(false);
    expect(crlBlocks(await crlSet())).toHaveLength(2); // the new root and its intermediate
  });
});

describe('an issuance racing the revocation of its signer', () => {
  it('is re-signed by the replacement, so nothing from the tainted intermediate is handed out after the revocation returned', async () => {
    const d = tempDir();
    const store = openSqliteStore({ path: join(d, 'meshca.db') });
    try {
      const ca = await CertificateAuthority.open({
        store,
        kek: randomBytes(32),
        logger: pino({ level: 'silent' }),
        trustDomain: 'cluster.local',
        keyType: 'ec-p256',
        rootTtlMs: 10 * DAY,
        intermediateTtlMs: DAY,
      });
      // The same store, except that recording an issued certificate waits for the gate: the
      // revocation happens after the certificate was signed and before the issuance returns.
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const gated = new Proxy(store, {
        get(target, key) {
          if (key === 'recordIssued') return async (record: IssuedCertificateRecord) => gate.then(() => target.recordIssued(record));
          const value = Reflect.get(target, key) as unknown;
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
      const issuance = new IssuanceService(ca, gated, new IssuancePolicy({ defaultTtlMs: HOUR, maxTtlMs: DAY, backdateMs: 60_000 }));
      const victim = ca.current().signer.id;
      const spkiDer = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
      const pending = issuance.issueProfile({
        spkiDer,
        uris: ['spiffe://cluster.local/ns/race/sa/w'],
        dnsNames: [],
        ttlMs: HOUR,
        callerId: 'test',
        rsaKey: false,
      });
      const outcome = await ca.revoke(victim, 'keyCompromise', 'test');
      open();
      const issued = await pending;
      expect(issued.authorityId).toBe(outcome.replacement!.id);
      expect(new X509Certificate(issued.chain[0]!).checkIssued(new X509Certificate(outcome.replacement!.certificateDer))).toBe(true);
      expect(await store.countUnexpired([victim], new Date())).toBe(1); // the stray one stays on record, under the tainted intermediate
    } finally {
      await store.close();
      removeDir(d);
    }
  });
});
