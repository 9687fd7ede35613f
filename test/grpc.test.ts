import { randomBytes, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientKeyType } from '../src/client/csr.js';
import { IssuanceError } from '../src/authority/errors.js';
import { IssuanceService } from '../src/authority/issuance.js';
import { IssuancePolicy } from '../src/authority/policy.js';
import { toGrpcFailure } from '../src/grpc/status.js';
import { CsrVerifierPool } from '../src/pki/verify-pool.js';
import { mutualTls, workloadCredentials } from './support/mtls.js';
import { openssl, writeChain } from './support/openssl.js';
import { countCertificates, csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';
import { TEST_ISSUER, TestTokenIssuer } from './support/tokens.js';
import { H2Channel } from '../bench/lib/grpc-h2.mjs';
import { istioCertificateService } from '../src/grpc/proto.js';

const TD = 'cluster.local';
const id = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const HOUR = 3600_000;

let dir: string;
let issuer: TestTokenIssuer;
let t: TestServer;

beforeAll(async () => {
  dir = tempDir();
  issuer = await TestTokenIssuer.create(dir);
  // A long --commit-linger: an announced issuance that a refusal failed to withdraw would hold every later lone commit for 1 s.
  const flags = ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER, '--max-ttl', '48h', '--commit-linger', '1s'];
  t = await startTestServer(join(dir, 'data'), flags, {
    MESHCA_KEK: randomBytes(32).toString('base64'),
  });
});

afterAll(async () => {
  await t?.close();
  removeDir(dir);
});

async function issue(ns: string, sa: string, keyType: ClientKeyType = 'ec-p256', validitySeconds = 0): Promise<string[]> {
  return t.client().createCertificate({
    csrPem: await csrFor(id(ns, sa), keyType),
    token: await issuer.token({ namespace: ns, serviceAccount: sa }),
    validitySeconds,
  });
}

describe('CreateCertificate issues X509-SVIDs', () => {
  it.each<ClientKeyType>(['ec-p256', 'ec-p384', 'rsa-2048'])('with a %s CSR, openssl accepts the chain and profile', async (keyType) => {
    const chain = await issue('shop', 'cart', keyType);
    expect(chain.length).toBeGreaterThanOrEqual(2);
    expect(chain[chain.length - 1]).toBe(t.server.ca.current().rootsPem);
    const out = tempDir();
    const files = writeChain(out, chain);
    expect(openssl(['verify', '-CAfile', files.roots, '-untrusted', files.untrusted, files.leaf])).toContain(': OK');
    const text = openssl(['x509', '-in', files.leaf, '-noout', '-text']);
    expect(text).toMatch(/X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/shop\/sa\/cart\s*\n/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(
      keyType.startsWith('rsa')
        ? /Key Usage: critical\s+Digital Signature, Key Encipherment/
        : /Key Usage: critical\s+Digital Signature\s*\n/,
    );
    expect(text).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/Subject: *\n/);
    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.subjectAltName).toBe(`URI:${id('shop', 'cart')}`);
    expect(BigInt(`0x${leaf.serialNumber}`)).toBeGreaterThan(2n ** 120n);
    const record = await t.server.store.getCertificate(leaf.serialNumber.toLowerCase().replace(/^0+/, ''), new Date());
    expect(record?.spiffeId).toBe(id('shop', 'cart'));
    removeDir(out);
  });

  it.each([
    { requested: 0, expectedMs: 24 * HOUR, why: 'default TTL' },
    { requested: 3600, expectedMs: HOUR, why: 'requested TTL' },
    { requested: 10 * 86400, expectedMs: 48 * HOUR, why: 'clamped to --max-ttl' },
  ])('validity: $why', async ({ requested, expectedMs }) => {
    const before = Date.now();
    const leaf = new X509Certificate((await issue('ttl', 'svc', 'ec-p256', requested))[0]!);
    const lifetime = Date.parse(leaf.validTo) - before;
    expect(Math.abs(lifetime - expectedMs)).toBeLessThan(5000);
    expect(Date.parse(leaf.validFrom)).toBeLessThanOrEqual(before);
  });

  it("two workloads complete a TLS 1.3 mutual-auth handshake and read each other's SPIFFE ID", async () => {
    const [a, b] = await Promise.all(
      ['a', 'b'].map(async (sa) =>
        workloadCredentials(t.client(), id('mesh', sa), await issuer.token({ namespace: 'mesh', serviceAccount: sa })),
      ),
    );
    const result = await mutualTls(a!, b!);
    expect(result).toMatchObject({
      ok: true,
      protocol: 'TLSv1.3',
      serverSawClient: `URI:${id('mesh', 'a')}`,
      clientSawServer: `URI:${id('mesh', 'b')}`,
    });
  });
});

interface Rejection {
  readonly name: string;
  readonly code: status;
  token(): Promise<string | undefined>;
  csr(): Promise<string>;
  impersonate?: string;
}

const goodCsr = () => csrFor(id('app', 'api'));
const goodToken = () => issuer.token({ namespace: 'app', serviceAccount: 'api' });
const now = () => Math.floor(Date.now() / 1000);
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

function tamperSignature(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 3] ^= 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
}

async function opensslCsr(
  args: readonly string[],
  keyAlgorithm = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
): Promise<string> {
  const d = tempDir();
  const key = join(d, 'k.pem');
  openssl(['genpkey', ...keyAlgorithm, '-out', key]);
  const csr = openssl(['req', '-new', '-key', key, ...args]);
  removeDir(d);
  return csr;
}

const SAN = (v: string) => ['-addext', `subjectAltName=critical,${v}`];

const REJECTIONS: Rejection[] = [
  { name: 'missing authorization header', code: status.UNAUTHENTICATED, token: async () => undefined, csr: goodCsr },
  { name: 'garbage token', code: status.UNAUTHENTICATED, token: async () => 'not.a.jwt', csr: goodCsr },
  {
    name: 'expired token',
    code: status.UNAUTHENTICATED,
    token: () => issuer.token({ namespace: 'app', serviceAccount: 'api', exp: now() - 600 }),
    csr: goodCsr,
  },
  {
    name: 'not-yet-valid token',
    code: status.UNAUTHENTICATED,
    token: () => issuer.token({ namespace: 'app', serviceAccount: 'api', nbf: now() + 600 }),
    csr: goodCsr,
  },
  {
    name: 'wrong issuer',
    code: status.UNAUTHENTICATED,
    token: () => issuer.token({ namespace: 'app', serviceAccount: 'api', iss: 'https://evil.example' }),
    csr: goodCsr,
  },
  {
    name: 'wrong audience',
    code: status.UNAUTHENTICATED,
    token: () => issuer.token({ namespace: 'app', serviceAccount: 'api', aud: 'kubernetes' }),
    csr: goodCsr,
  },
  {
    name: 'alg none',
    code: status.UNAUTHENTICATED,
    token: async () =>
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: TEST_ISSUER, sub: 'system:serviceaccount:app:api', aud: 'istio-ca', exp: now() + 600 })}.`,
    csr: goodCsr,
  },
  {
    name: 'HS256 signed with the public key (key confusion)',
    code: status.UNAUTHENTICATED,
    token: async () => {
      const { createHmac, createPublicKey } = await import('node:crypto');
      const secret = createPublicKey({ key: issuer.publicJwk as never, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
      const input = `${b64({ alg: 'HS256', kid: 'test-key' })}.${b64({ iss: TEST_ISSUER, sub: 'system:serviceaccount:app:api', aud: 'istio-ca', exp: now() + 600 })}`;
      return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
    },
    csr: goodCsr,
  },
  {
    name: 'bad token signature',
    code: status.UNAUTHENTICATED,
    token: async () => {
      const [h, p, s] = (await goodToken()).split('.');
      return `${h}.${p}.${s!.slice(0, -4)}${s!.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    },
    csr: goodCsr,
  },
  { name: 'CSR for another identity', code: status.PERMISSION_DENIED, token: goodToken, csr: () => csrFor(id('app', 'admin')) },
  {
    name: 'CSR with two URIs',
    code: status.PERMISSION_DENIED,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')},URI:${id('app', 'x')}`)]),
  },
  { name: 'tampered CSR signature', code: status.INVALID_ARGUMENT, token: goodToken, csr: async () => tamperSignature(await goodCsr()) },
  {
    name: 'CSR with a DNS SAN',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')},DNS:api.example`)]),
  },
  {
    name: 'CSR with an IP SAN',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')},IP:10.0.0.1`)]),
  },
  {
    name: 'CSR with an email SAN',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')},email:a@b.example`)]),
  },
  {
    name: 'CSR with a CN',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/CN=api', ...SAN(`URI:${id('app', 'api')}`)]),
  },
  {
    name: 'CSR asking for CA:true',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')}`), '-addext', 'basicConstraints=critical,CA:TRUE']),
  },
  {
    name: 'CSR with an RSA-1024 key',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')}`)], ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024']),
  },
  {
    name: 'CSR with an Ed25519 key',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: () => opensslCsr(['-subj', '/O=', ...SAN(`URI:${id('app', 'api')}`)], ['-algorithm', 'ED25519']),
  },
  {
    name: 'garbage CSR',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: async () => '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
  },
  { name: 'empty CSR', code: status.INVALID_ARGUMENT, token: goodToken, csr: async () => '' },
  {
    name: 'oversized CSR (40 KiB)',
    code: status.INVALID_ARGUMENT,
    token: goodToken,
    csr: async () => (await goodCsr()) + 'x'.repeat(40 * 1024),
  },
  { name: 'oversized message (100 KiB)', code: status.RESOURCE_EXHAUSTED, token: goodToken, csr: async () => 'x'.repeat(100 * 1024) },
  {
    name: 'impersonation without trusted node accounts',
    code: status.UNAUTHENTICATED,
    token: goodToken,
    csr: () => csrFor(id('app', 'other')),
    impersonate: id('app', 'other'),
  },
];

describe('CreateCertificate rejects bad requests and writes nothing', () => {
  it.each(REJECTIONS)('$name', async (c) => {
    const before = await countCertificates(t.server);
    const error = await t
      .client()
      .createCertificate({ csrPem: await c.csr(), token: await c.token(), impersonatedIdentity: c.impersonate })
      .then(
        () => undefined,
        (e: { code: status; details: string }) => e,
      );
    expect(error?.code, error?.details).toBe(c.code);
    expect(error?.details.length).toBeGreaterThan(0);
    expect(await countCertificates(t.server)).toBe(before);
    // the server keeps serving, and the refusal left no announced issuance behind for the commit to wait on
    const started = performance.now();
    expect((await issue('app', 'api')).length).toBeGreaterThanOrEqual(2);
    expect(performance.now() - started).toBeLessThan(900);
  });

  it('an unknown clusterid is unauthenticated', async () => {
    const error = await t
      .client()
      .createCertificate({ csrPem: await goodCsr(), token: await goodToken(), clusterId: 'elsewhere' })
      .catch((e: { code: status }) => e);
    expect((error as { code: status }).code).toBe(status.UNAUTHENTICATED);
  });
});

describe('monitoring endpoints', () => {
  it('serve health, readiness and istiod-compatible metrics', async () => {
    const base = `http://127.0.0.1:${t.server.monitoringAddress.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'citadel_server_csr_count',
      'citadel_server_success_cert_issuance_count',
      'citadel_server_authentication_failure_count',
      'citadel_server_root_cert_expiry_timestamp',
      'meshca_issuance_duration_seconds_bucket',
    ]) {
      expect(metrics).toContain(name);
    }
    expect(metrics).toMatch(/citadel_server_success_cert_issuance_count [1-9]/);
  });
});

// The benchmark's load generators speak gRPC through their own small client (bench/lib/grpc-h2.mjs):
// it must get what grpc-js's client gets, or the benchmark would measure something else.
describe("the benchmark's HTTP/2 gRPC client", () => {
  const { requestSerialize, responseDeserialize } = istioCertificateService().service.CreateCertificate;
  const call = async (csrPem: string, token: string): Promise<string[]> => {
    const channel = (await H2Channel.open(t.address, t.server.ca.current().rootsPem)) as H2Channel;
    try {
      const bytes = await channel.unary(
        '/istio.v1.auth.IstioCertificateService/CreateCertificate',
        requestSerialize({ csr: csrPem, validity_duration: 0, metadata: null }),
        { authorization: `Bearer ${token}`, clusterid: 'Kubernetes' },
        10_000,
      );
      return (responseDeserialize(bytes) as { cert_chain: string[] }).cert_chain;
    } finally {
      channel.close();
    }
  };

  it('gets a chain for its identity', async () => {
    const chain = await call(await csrFor(id('bench', 'h2')), await issuer.token({ namespace: 'bench', serviceAccount: 'h2' }));
    expect(chain.length).toBeGreaterThanOrEqual(2);
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${id('bench', 'h2')}`);
  });

  it.each([
    ['a token that is not a JWT', async () => ['not-a-jwt', await csrFor(id('bench', 'h2'))], status.UNAUTHENTICATED],
    [
      'a CSR for another identity',
      async () => [await issuer.token({ namespace: 'bench', serviceAccount: 'h2' }), await csrFor(id('bench', 'other'))],
      status.PERMISSION_DENIED,
    ],
  ] as const)("reads the status of a refusal as grpc-js's client does: %s", async (_what, material, code) => {
    const [token, csrPem] = await material();
    const details = await t
      .client()
      .createCertificate({ csrPem, token, validitySeconds: 0 })
      .then(
        () => 'issued',
        (e: { code: number; details: string }) => ({ code: e.code, details: e.details }),
      );
    expect(details).toMatchObject({ code });
    await expect(call(csrPem, token)).rejects.toMatchObject(details as object);
  });
});

describe('server faults are not blamed on the CSR', () => {
  it('a dead CSR verifier thread gives UNAVAILABLE (istio-agent retries), not INVALID_ARGUMENT', async () => {
    const pool = new CsrVerifierPool(1);
    const issuance = new IssuanceService(
      t.server.ca,
      t.server.store,
      new IssuancePolicy({ defaultTtlMs: HOUR, maxTtlMs: HOUR, backdateMs: 0 }),
      pool,
    );
    const caller = {
      spiffeId: id('shop', 'verifier'),
      namespace: 'shop',
      serviceAccount: 'verifier',
      clusterId: 'Kubernetes',
      expiresAt: new Date(Date.now() + HOUR),
    };
    const outcome = issuance.issue({ csrPem: await csrFor(id('shop', 'verifier')), validitySeconds: 0, caller }).catch((e: unknown) => e);
    await pool.close(); // the thread dies before it answers
    const error = await outcome;
    expect(error).toBeInstanceOf(IssuanceError);
    expect(toGrpcFailure(error)).toMatchObject({ code: status.UNAVAILABLE, reason: 'ERR_VERIFIER_UNAVAILABLE' });
  });
});
