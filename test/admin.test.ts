import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer, type DevTokenIssuer } from '../src/authn/index.js';
import { adminCall, type AdminResponse, type AdminTarget } from './support/admin.js';
import { mutualTls, workloadCredentials } from './support/mtls.js';
import { openssl } from './support/openssl.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

const id = (sa: string) => `spiffe://cluster.local/ns/rot/sa/${sa}`;
let dir: string;
let t: TestServer;
let devIssuer: DevTokenIssuer;
let token: string;

const target = (): AdminTarget => ({ port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token });
const call = (method: string, path: string, options: Parameters<typeof adminCall>[3] = {}): Promise<AdminResponse> =>
  adminCall(target(), method, path, options);
const credentials = async (sa: string) =>
  workloadCredentials(t.client(), id(sa), await devIssuer.sign({ namespace: 'rot', serviceAccount: sa, ttlSeconds: 600 }));
/** Bundle sequence and the audit events of state changes (authentication failures are audited too, so they are left out). */
const state = async () => ({
  sequence: t.server.ca.current().bundleSequence,
  audit: (await call('GET', '/v1/audit?limit=1000'))
    .json<{ items: { action: string }[] }>()
    .items.filter((e) => e.action !== 'admin.authenticate').length,
});
const authorities = async () =>
  (await call('GET', '/v1/authorities')).json<{
    authorities: { id: string; kind: string; state: string; parentId: string | null; unexpiredIssuedCount: number }[];
  }>().authorities;
const active = async () => (await authorities()).find((a) => a.kind === 'intermediate' && a.state === 'active')!;

beforeAll(async () => {
  dir = tempDir();
  t = await startTestServer(join(dir, 'data'), ['--dev', '--admin-max-auth-failures', '1000']);
  devIssuer = await openDevTokenIssuer(join(dir, 'data'));
  token = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
});

afterAll(async () => {
  await t?.close();
  removeDir(dir);
});

const PROTECTED: [string, string, unknown?][] = [
  ['GET', '/v1/authorities'],
  ['POST', '/v1/authorities/prepare', {}],
  ['POST', '/v1/authorities/root-0000000000000000/activate'],
  ['POST', '/v1/authorities/root-0000000000000000/remove'],
  ['POST', '/v1/authorities/rotate-intermediate'],
  ['POST', '/v1/authorities/import', { caCert: 'x', caKey: 'x', certChain: 'x', rootCert: 'x' }],
  ['POST', '/v1/authorities/intermediate-csr', {}],
  ['POST', '/v1/authorities/pending-0000000000000000/certificate', { certificate: 'x', chain: 'x' }],
  ['GET', '/v1/certificates'],
  ['GET', '/v1/certificates/abc'],
  ['GET', '/v1/audit'],
  ['GET', '/v1/openapi.json'],
];

describe('admin authentication', () => {
  it.each(
    PROTECTED.flatMap(([m, p, b]) => [
      { m, p, b, tok: null as string | null, why: 'no token' },
      { m, p, b, tok: 'wrong', why: 'wrong token' },
    ]),
  )('$m $p with $why → 401, nothing changes', async ({ m, p, b, tok }) => {
    const before = await state();
    const res = await call(m, p, { body: b, token: tok });
    expect(res.status).toBe(401);
    expect(res.json()).toMatchObject({ code: 'ERR_ADMIN_UNAUTHENTICATED' });
    expect(await state()).toEqual(before);
  });

  it('serves public trust data without a token', async () => {
    const pem = await call('GET', '/v1/bundle', { token: null });
    expect(pem.status).toBe(200);
    expect(pem.headers['content-type']).toContain('application/x-pem-file');
    expect(pem.text).toBe(t.server.ca.current().rootsPem);
    const again = await call('GET', '/v1/bundle', { token: null, headers: { 'if-none-match': String(pem.headers.etag) } });
    expect(again.status).toBe(304);
    expect((await call('GET', '/healthz', { token: null })).status).toBe(200);
  });

  it('publishes an OpenAPI document covering the routes', async () => {
    const doc = (await call('GET', '/v1/openapi.json')).json<{ openapi: string; paths: Record<string, unknown> }>();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/bundle', '/v1/authorities', '/v1/authorities/prepare', '/v1/certificates']),
    );
  });
});

describe('admin input validation', () => {
  it.each([
    ['POST', '/v1/authorities/prepare', { keyType: 'rsa-1024' }],
    ['POST', '/v1/authorities/prepare', { rootTtl: 'forever' }],
    ['POST', '/v1/authorities/prepare', { rootTtl: '0s' }],
    ['POST', '/v1/authorities/prepare', { intermediateTtl: '99999999999999999999999y' }],
    ['POST', '/v1/authorities/prepare', { surprise: true }],
    ['POST', '/v1/authorities/import', { caCert: 'x' }],
    ['POST', '/v1/authorities/import', { caCert: 'not pem', caKey: 'not pem', certChain: 'not pem', rootCert: 'not pem' }],
    ['POST', '/v1/authorities/..%2f..%2fetc/activate', undefined],
    ['GET', '/v1/certificates?status=bogus', undefined],
    ['GET', '/v1/certificates?limit=0', undefined],
    ['GET', '/v1/certificates?cursor=!!', undefined],
    ['GET', '/v1/certificates/xyz', undefined],
  ])('%s %s %j → 400 with a message, nothing written', async (m, p, body) => {
    const before = await state();
    const res = await call(m, p, { body });
    expect(res.status).toBe(400);
    expect(res.json<{ message: string }>().message.length).toBeGreaterThan(5);
    expect(await state()).toEqual(before);
  });
});

describe('zero-downtime root rotation', () => {
  it('keeps mTLS working through prepare → activate → reissue → remove', async () => {
    const seq0 = t.server.ca.current().bundleSequence;
    const oldActive = await active();
    const a = await credentials('a');
    expect((await mutualTls(a, await credentials('b0'))).ok).toBe(true);

    // prepare: the bundle holds both roots, signing is unchanged
    const prepared = await call('POST', '/v1/authorities/prepare', { body: {} });
    expect(prepared.status).toBe(201);
    const [newRoot, newInt] = prepared
      .json<{ authorities: { id: string; kind: string; state: string }[] }>()
      .authorities.sort((x) => (x.kind === 'root' ? -1 : 1));
    expect(newRoot).toMatchObject({ kind: 'root', state: 'prepared' });
    expect(newInt).toMatchObject({ kind: 'intermediate', state: 'prepared' });
    expect(t.server.ca.current().bundleSequence).toBe(seq0 + 1);
    expect(t.server.ca.current().roots).toHaveLength(2);
    const bPrepared = await credentials('b1');
    expect(bPrepared.ca).toBe(t.server.ca.current().rootsPem);
    const dual = { clientCa: t.server.ca.current().rootsPem, serverCa: t.server.ca.current().rootsPem };
    expect((await mutualTls(a, bPrepared, dual)).ok).toBe(true);

    // activate: new leaves chain to the new root; old leaves still verify with the dual-root bundle
    expect((await call('POST', `/v1/authorities/${newRoot!.id}/activate`)).status).toBe(200);
    expect((await active()).id).toBe(newInt!.id);
    expect((await authorities()).find((x) => x.id === oldActive.id)?.state).toBe('retired');
    expect(t.server.ca.current().bundleSequence).toBe(seq0 + 1);
    const b = await credentials('b');
    const bIssuer = new X509Certificate(b.cert.split(/(?=-----BEGIN)/)[1]!);
    expect(bIssuer.fingerprint256.replace(/:/g, '').toLowerCase().startsWith(newInt!.id.slice(4))).toBe(true);
    // cert_chain's last element: the root that signs the intermediate first, then the others (signing order)
    const rootsOf = (pem: string) => pem.split(/(?=-----BEGIN)/).map((block) => new X509Certificate(block));
    const served = rootsOf(b.ca);
    expect(bIssuer.checkIssued(served[0]!)).toBe(true);
    expect(served.map((r) => r.fingerprint256).sort()).toEqual(
      rootsOf(t.server.ca.current().rootsPem)
        .map((r) => r.fingerprint256)
        .sort(),
    );
    expect((await mutualTls(a, b, dual)).ok).toBe(true);
    expect((await mutualTls(b, a, dual)).ok).toBe(true);

    // removal is refused while a's old leaf is unexpired, and refused for the active authority
    const oldRoot = oldActive.parentId!;
    const refused = await call('POST', `/v1/authorities/${oldRoot}/remove`);
    expect(refused.status).toBe(409);
    expect(refused.json<{ details: { unexpiredCertificates: number } }>().details.unexpiredCertificates).toBeGreaterThan(0);
    expect((await call('POST', `/v1/authorities/${newRoot!.id}/remove`)).status).toBe(409);

    // reissue a, then remove the old root: a's old certificate is rejected, the new one accepted
    const aNew = await credentials('a');
    const removed = await call('POST', `/v1/authorities/${oldRoot}/remove?force=true`);
    expect(removed.status).toBe(200);
    expect(t.server.ca.current().bundleSequence).toBe(seq0 + 2);
    expect(t.server.ca.current().roots).toHaveLength(1);
    const newBundle = t.server.ca.current().rootsPem;
    expect((await mutualTls(a, b, { serverCa: newBundle, clientCa: newBundle })).ok).toBe(false);
    expect((await mutualTls(aNew, b, { serverCa: newBundle, clientCa: newBundle })).ok).toBe(true);

    // the admin API's own certificate now chains to the new root only
    expect((await adminCall({ ...target(), roots: newBundle }, 'GET', '/v1/authorities')).status).toBe(200);
    const actions = (await call('GET', '/v1/audit')).json<{ items: { action: string }[] }>().items.map((e) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['authority.prepare', 'authority.activate', 'authority.remove']));
  });

  it('rotate-intermediate switches the signer without changing the bundle', async () => {
    const before = t.server.ca.current();
    const res = await call('POST', '/v1/authorities/rotate-intermediate');
    expect(res.status).toBe(201);
    const after = t.server.ca.current();
    expect(after.bundleSequence).toBe(before.bundleSequence);
    expect(after.rootsPem).toBe(before.rootsPem);
    expect(after.signer.id).not.toBe(before.signer.id);
    expect((await mutualTls(await credentials('c'), await credentials('d'))).ok).toBe(true);
  });

  it('refuses illegal transitions with 409 and writes nothing', async () => {
    const current = await active();
    const before = await state();
    expect((await call('POST', `/v1/authorities/${current.id}/activate`)).status).toBe(409);
    expect((await call('POST', `/v1/authorities/${current.id}/remove?force=true`)).status).toBe(409);
    expect((await call('POST', '/v1/authorities/root-0123456789abcdef/activate')).status).toBe(404);
    expect(await state()).toEqual(before);
  });

  it('serves the SPIFFE bundle with one x5c per root whose key matches', async () => {
    await call('POST', '/v1/authorities/prepare', { body: { keyType: 'ec-p384' } });
    const res = await call('GET', '/v1/bundle?format=spiffe', { token: null });
    expect(res.status, res.text).toBe(200);
    const bundle = res.json<{ keys: Record<string, unknown>[]; spiffe_sequence: number; spiffe_refresh_hint: number }>();
    expect(bundle.spiffe_sequence).toBe(t.server.ca.current().bundleSequence);
    expect(bundle.spiffe_refresh_hint).toBeGreaterThan(0);
    const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
    expect(x509).toHaveLength(t.server.ca.current().roots.length);
    expect(bundle.keys.filter((k) => k.use !== 'x509-svid').every((k) => k.use === 'jwt-svid')).toBe(true); // test/jwt-svid.test.ts checks those
    for (const key of x509) {
      expect(key).not.toHaveProperty('kid');
      expect(key.x5c).toHaveLength(1);
      const cert = new X509Certificate(Buffer.from((key.x5c as string[])[0]!, 'base64'));
      const { x5c: _x5c, use: _use, ...jwk } = key;
      const fromJwk = createPublicKey({ key: jwk as never, format: 'jwk' }).export({ format: 'der', type: 'spki' });
      expect(fromJwk.equals(cert.publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    }
  });
});

describe('inventory and plug-in CA import', () => {
  it('lists certificates with filters and pagination, and shows one with its PEM', async () => {
    for (const sa of ['inv', 'inv', 'inv']) await credentials(sa);
    const page1 = (await call('GET', `/v1/certificates?spiffeId=${encodeURIComponent(id('inv'))}&limit=2`)).json<{
      items: { serial: string; spiffeId: string; status: string }[];
      nextCursor: string | null;
    }>();
    expect(page1.items).toHaveLength(2);
    const page2 = (
      await call('GET', `/v1/certificates?spiffeId=${encodeURIComponent(id('inv'))}&limit=2&cursor=${page1.nextCursor}`)
    ).json<{ items: { serial: string }[] }>();
    expect(page2.items).toHaveLength(1);
    expect(new Set([...page1.items, ...page2.items].map((i) => i.serial)).size).toBe(3);
    const one = (await call('GET', `/v1/certificates/${page1.items[0]!.serial}`)).json<{ pem: string; status: string }>();
    expect(one.status).toBe('active');
    expect(openssl(['x509', '-noout', '-serial'], one.pem).trim().toLowerCase().replace(/=0+/, '=')).toBe(
      `serial=${page1.items[0]!.serial}`,
    );
    expect((await call('GET', '/v1/certificates/00ff')).status).toBe(404);
  });

  it('imports an Istio plug-in CA (intermediate under an external root) and signs with it after activation', async () => {
    const d = tempDir();
    const f = (name: string) => join(d, name);
    openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('root-key.pem'),
      '-out',
      f('root-cert.pem'),
      '-days',
      '365',
      '-subj',
      '/O=Plug/CN=Plug Root',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    openssl([
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('ca-key.pem'),
      '-out',
      f('ca.csr'),
      '-subj',
      '/O=Plug/CN=Plug Intermediate',
    ]);
    writeFileSync(
      f('ext.cnf'),
      'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=URI:spiffe://cluster.local\n',
    );
    openssl([
      'x509',
      '-req',
      '-in',
      f('ca.csr'),
      '-CA',
      f('root-cert.pem'),
      '-CAkey',
      f('root-key.pem'),
      '-CAcreateserial',
      '-out',
      f('ca-cert.pem'),
      '-days',
      '200',
      '-extfile',
      f('ext.cnf'),
    ]);
    const read = (name: string) => readFileSync(f(name), 'utf8');
    const res = await call('POST', '/v1/authorities/import', {
      body: {
        caCert: read('ca-cert.pem'),
        caKey: read('ca-key.pem'),
        certChain: read('ca-cert.pem') + read('root-cert.pem'),
        rootCert: read('root-cert.pem'),
      },
    });
    expect(res.status, res.text).toBe(201);
    const imported = res.json<{ authorities: { id: string; kind: string; state: string }[] }>().authorities;
    const intermediate = imported.find((a) => a.kind === 'intermediate')!;
    expect((await call('POST', `/v1/authorities/${intermediate.id}/activate`)).status).toBe(200);
    const leaf = await credentials('plugged');
    writeFileSync(f('leaf.pem'), leaf.cert);
    expect(openssl(['verify', '-CAfile', f('root-cert.pem'), '-untrusted', f('leaf.pem'), f('leaf.pem')])).toContain('OK');
    expect(
      (
        await call('POST', '/v1/authorities/import', {
          body: {
            caCert: read('root-cert.pem'),
            caKey: read('ca-key.pem'),
            certChain: read('root-cert.pem'),
            rootCert: read('root-cert.pem'),
          },
        })
      ).status,
    ).toBe(400);
    removeDir(d);
  });
});
