import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer, type DevTokenIssuer } from '../src/authn/index.js';
import { adminCall } from './support/admin.js';
import { workloadCredentials, type WorkloadCredentials } from './support/mtls.js';
import { openssl, opensslStatus } from './support/openssl.js';
import { CLI } from './support/process.js';
import {
  countCertificates,
  csrFor,
  removeDir,
  startTestServer,
  tempDir,
  type DevServer,
  startDevServer,
  type TestServer,
} from './support/server.js';

const id = (sa: string) => `spiffe://cluster.local/ns/rev/sa/${sa}`;
let dir: string;
let data: string;
let t: TestServer;
let devIssuer: DevTokenIssuer;

let dev: DevServer;
const call = (...args: Parameters<DevServer['call']>) => dev.call(...args);
const issue = async (sa: string) =>
  workloadCredentials(t.client(), id(sa), await devIssuer.sign({ namespace: 'rev', serviceAccount: sa, ttlSeconds: 600 }));
const serialOf = (w: WorkloadCredentials) =>
  new X509Certificate(w.cert.split(/(?=-----BEGIN)/)[0]!).serialNumber.toLowerCase().replace(/^0+/, '');
const auditCount = async () => (await call('GET', '/v1/audit?limit=1000')).json<{ items: unknown[] }>().items.length;

function files(w: WorkloadCredentials, crlPem: string) {
  const d = tempDir();
  const [leaf, ...intermediates] = w.cert.split(/(?=-----BEGIN)/);
  const paths = { leaf: join(d, 'leaf.pem'), chain: join(d, 'chain.pem'), roots: join(d, 'roots.pem'), crl: join(d, 'crl.pem'), dir: d };
  writeFileSync(paths.leaf, leaf!);
  writeFileSync(paths.chain, intermediates.join(''));
  writeFileSync(paths.roots, w.ca);
  writeFileSync(paths.crl, crlPem);
  return paths;
}

const crlNumber = (pem: string) => Number.parseInt(openssl(['crl', '-noout', '-crlnumber'], pem).split('=')[1]!.trim(), 16);

beforeAll(async () => {
  dev = await startDevServer();
  ({ t, dir, data, devIssuer } = dev);
});

afterAll(() => dev?.close());

describe('revocation by serial and CRLs', () => {
  it('a revoked leaf fails openssl -crl_check, a good one passes, and the CRL verifies against its issuer', async () => {
    const [bad, good] = [await issue('bad'), await issue('good')];
    const numberBefore = crlNumber((await call('GET', '/v1/crl?format=pem', undefined, null)).text);
    const revoked = await call('POST', `/v1/certificates/${serialOf(bad)}/revoke`, { reason: 'keyCompromise' });
    expect(revoked.status).toBe(200);
    expect(revoked.json()).toMatchObject({ status: 'revoked', revocationReason: 'keyCompromise' });
    const again = await call('POST', `/v1/certificates/${serialOf(bad).toUpperCase()}/revoke`, { reason: 'superseded' });
    expect(again.json()).toMatchObject({ revokedAt: revoked.json<{ revokedAt: string }>().revokedAt, revocationReason: 'keyCompromise' });

    const der = await call('GET', '/v1/crl', undefined, null);
    expect(der.headers['content-type']).toBe('application/pkix-crl');
    const pem = (await call('GET', '/v1/crl?format=pem', undefined, null)).text;
    expect(openssl(['crl', '-inform', 'DER', '-outform', 'PEM'], der.body).length).toBeGreaterThan(0);
    expect(crlNumber(pem)).toBeGreaterThan(numberBefore);
    for (const [w, ok] of [
      [bad, false],
      [good, true],
    ] as const) {
      const p = files(w, pem);
      expect(opensslStatus(['crl', '-in', p.crl, '-noout', '-verify', '-CAfile', p.chain]).output).toContain('verify OK');
      const result = opensslStatus(['verify', '-crl_check', '-CRLfile', p.crl, '-CAfile', p.roots, '-untrusted', p.chain, p.leaf]);
      expect(result.ok, result.output).toBe(ok);
      if (!ok) expect(result.output).toContain('certificate revoked');
      removeDir(p.dir);
    }
    expect(openssl(['crl', '-noout', '-text'], pem)).toMatch(/Key Compromise/);
    const perAuthority = await call('GET', `/v1/authorities/${t.server.ca.current().signer.id}/crl?format=pem`, undefined, null);
    expect(perAuthority.status).toBe(200);
    expect(crlNumber(perAuthority.text)).toBeGreaterThanOrEqual(crlNumber(pem));

    const listed = (await call('GET', '/v1/certificates?status=revoked'))
      .json<{ items: { serial: string }[] }>()
      .items.map((i) => i.serial);
    expect(listed).toContain(serialOf(bad));
    const authorities = (await call('GET', '/v1/authorities')).json<{ authorities: { id: string; revokedCount: number }[] }>().authorities;
    expect(authorities.find((a) => a.id === t.server.ca.current().signer.id)?.revokedCount).toBeGreaterThanOrEqual(1);
  });

  it('the CRL number strictly increases with each revocation', async () => {
    const numbers: number[] = [];
    for (const sa of ['n1', 'n2']) {
      await call('POST', `/v1/certificates/${serialOf(await issue(sa))}/revoke`, { reason: 'superseded' });
      numbers.push(crlNumber((await call('GET', '/v1/crl?format=pem', undefined, null)).text));
    }
    expect(numbers[1]).toBeGreaterThan(numbers[0]!);
  });

  it.each([
    ['POST', '/v1/certificates/abcdef/revoke', { reason: 'bogus' }, 400],
    ['POST', '/v1/certificates/zz-not-hex/revoke', { reason: 'keyCompromise' }, 400],
    ['POST', '/v1/certificates/abcdef/revoke', {}, 400],
    ['POST', '/v1/certificates/0abcdef0123/revoke', { reason: 'keyCompromise' }, 404],
    ['POST', '/v1/identities/revoke', { spiffeId: 'http://not-spiffe', reason: 'keyCompromise' }, 400],
    ['POST', '/v1/identities/revoke', { spiffeId: 'spiffe://cluster.local/ns/../sa/x', reason: 'keyCompromise' }, 400],
    ['POST', '/v1/identities/revoke', { spiffeId: id('x'), reason: 'nope' }, 400],
    ['DELETE', `/v1/identities/deny/${encodeURIComponent('spiffe://Bad Domain/x')}`, undefined, 400],
  ])('%s %s %j → %i, nothing written', async (method, path, body, code) => {
    const before = await auditCount();
    const res = await call(method, path, body);
    expect(res.status, res.text).toBe(code);
    expect(res.json<{ message: string }>().message.length).toBeGreaterThan(5);
    expect(await auditCount()).toBe(before);
  });
});

describe('revocation by identity and the deny-list', () => {
  it('denies new certificates until the identity is allowed again', async () => {
    await issue('evil');
    await issue('evil');
    const res = await call('POST', '/v1/identities/revoke', { spiffeId: id('evil'), reason: 'keyCompromise', deny: true });
    expect(res.json()).toMatchObject({ revoked: 2, denied: true });
    expect((await call('GET', '/v1/identities/deny')).json<{ items: { spiffeId: string }[] }>().items.map((i) => i.spiffeId)).toContain(
      id('evil'),
    );
    const before = await countCertificates(t.server);
    const error = await t
      .client()
      .createCertificate({
        csrPem: await csrFor(id('evil')),
        token: await devIssuer.sign({ namespace: 'rev', serviceAccount: 'evil', ttlSeconds: 600 }),
      })
      .catch((e: { code: status }) => e);
    expect((error as { code: status }).code).toBe(status.PERMISSION_DENIED);
    expect(await countCertificates(t.server)).toBe(before);
    expect((await call('DELETE', `/v1/identities/deny/${encodeURIComponent(id('evil'))}`)).status).toBe(200);
    expect((await call('DELETE', `/v1/identities/deny/${encodeURIComponent(id('evil'))}`)).status).toBe(404);
    expect((await issue('evil')).cert.length).toBeGreaterThan(0);
  });

  it('leaves no unrevoked certificate for an identity denied while its requests are in flight', async () => {
    // Four callers issue back to back; the deny lands while some of their requests are mid-way.
    let issued = 0;
    let denied: ReturnType<typeof call> | undefined;
    const caller = async () => {
      for (;;) {
        try {
          await issue('racer');
        } catch {
          return; // refused: the deny has committed
        }
        if (++issued === 12) denied = call('POST', '/v1/identities/revoke', { spiffeId: id('racer'), reason: 'keyCompromise', deny: true });
      }
    };
    await Promise.all(Array.from({ length: 4 }, caller));
    expect((await denied)?.status).toBe(200);
    const listed = await call('GET', `/v1/certificates?spiffeId=${encodeURIComponent(id('racer'))}&limit=100`);
    const statuses = listed.json<{ items: { status: string }[] }>().items.map((c) => c.status);
    expect(statuses.length).toBeGreaterThanOrEqual(12);
    expect(statuses.filter((s) => s !== 'revoked')).toEqual([]);
  });

  it('revocations and the deny-list survive a restart, and "meshca crl" writes the CRL for Istio', async () => {
    const w = await issue('persist');
    await call('POST', `/v1/certificates/${serialOf(w)}/revoke`, { reason: 'cessationOfOperation' });
    await call('POST', '/v1/identities/revoke', { spiffeId: id('gone'), reason: 'keyCompromise', deny: true });
    t = await dev.restart();
    expect((await call('GET', `/v1/certificates/${serialOf(w)}`)).json()).toMatchObject({
      status: 'revoked',
      revocationReason: 'cessationOfOperation',
    });
    expect((await call('GET', '/v1/identities/deny')).json<{ items: { spiffeId: string }[] }>().items.map((i) => i.spiffeId)).toContain(
      id('gone'),
    );
    const out = join(dir, 'ca-crl.pem');
    await promisify(execFile)(process.execPath, [CLI, 'crl', '--data-dir', data, '--out', out]);
    expect(openssl(['crl', '-in', out, '-noout', '-text']).toUpperCase()).toContain(serialOf(w).toUpperCase());
  });
});

describe('retention', () => {
  it('drops expired revoked entries from the CRL, prunes expired rows after --retention and audit events after --audit-retention', async () => {
    const d = tempDir();
    const s = await startTestServer(join(d, 'data'), ['--dev', '--crl-validity', '4s', '--retention', '1s', '--audit-retention', '2s']);
    try {
      const sign = await openDevTokenIssuer(join(d, 'data'));
      const chain = await s.client().createCertificate({
        csrPem: await csrFor(id('brief')),
        token: await sign.sign({ namespace: 'rev', serviceAccount: 'brief', ttlSeconds: 600 }),
        validitySeconds: 1,
      });
      const serial = new X509Certificate(chain[0]!).serialNumber.toLowerCase().replace(/^0+/, '');
      const target = {
        port: s.server.adminAddress.port,
        roots: s.server.ca.current().rootsPem,
        token: readFileSync(join(d, 'data', 'admin-token'), 'utf8').trim(),
      };
      await adminCall(target, 'POST', `/v1/certificates/${serial}/revoke`, { body: { reason: 'superseded' } });
      const listed = () =>
        adminCall(target, 'GET', '/v1/crl?format=pem').then((r) =>
          openssl(['crl', '-noout', '-text'], r.text).toLowerCase().includes(serial),
        );
      expect(await listed()).toBe(true);
      const revokeEvents = async () =>
        (await s.server.store.listAudit({ limit: 100 })).items.filter((e) => e.action === 'certificate.revoke').length;
      expect(await revokeEvents()).toBe(1);
      await new Promise((r) => setTimeout(r, 4500));
      expect(await listed()).toBe(false);
      expect(await s.server.store.getCertificate(serial, new Date())).toBeUndefined();
      expect(await revokeEvents()).toBe(0);
    } finally {
      await s.close();
      removeDir(d);
    }
  });
});
