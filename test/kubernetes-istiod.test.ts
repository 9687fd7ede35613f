import { execFile } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminCall, type AdminResponse } from './support/admin.js';
import { KubeApiSimulator } from './support/kube-api.js';
import { openssl } from './support/openssl.js';
import { CLI } from './support/process.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

const ISTIOD_ID = 'spiffe://cluster.local/ns/istio-system/sa/istiod';

let dir: string;
let sim: KubeApiSimulator;
let t: TestServer;
let adminToken: string;

beforeAll(async () => {
  dir = tempDir();
  sim = await KubeApiSimulator.start(join(dir, 'api'));
  ['istio-system', 'meshca', 'istiod-cli'].forEach((ns) => sim.addNamespace(ns));
  t = await startTestServer(join(dir, 'data'), [
    '--dev',
    '--kubeconfig',
    sim.kubeconfig('token'),
    '--k8s-secret',
    '--istiod-revision',
    'canary',
    '--istiod-cert-ttl',
    '6s',
    '--clock-skew',
    '0s',
    '--max-ttl',
    '72h',
  ]);
  adminToken = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
});

afterAll(async () => {
  await t?.close();
  await sim?.close();
  removeDir(dir);
});

interface Files {
  readonly 'tls.crt': string;
  readonly 'tls.key': string;
  readonly 'root-cert.pem': string;
}

/** What istiod would check: the chain verifies to root-cert.pem, the SANs, and the key matches. */
function expectIstiodFiles(files: Files, dnsNames: readonly string[]): X509Certificate {
  const d = tempDir();
  try {
    const [leafPem, ...intermediates] = files['tls.crt'].match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g)!;
    writeFileSync(join(d, 'leaf.pem'), leafPem!);
    writeFileSync(join(d, 'chain.pem'), intermediates.join(''));
    writeFileSync(join(d, 'roots.pem'), files['root-cert.pem']);
    expect(
      openssl([
        'verify',
        '-CAfile',
        join(d, 'roots.pem'),
        '-untrusted',
        join(d, 'chain.pem'),
        '-purpose',
        'sslserver',
        join(d, 'leaf.pem'),
      ]),
    ).toContain(': OK');
  } finally {
    removeDir(d);
  }
  const leaf = new X509Certificate(files['tls.crt']);
  expect(leaf.subjectAltName?.split(', ').sort()).toEqual([...dnsNames.map((n) => `DNS:${n}`), `URI:${ISTIOD_ID}`].sort());
  expect(leaf.checkPrivateKey(createPrivateKey(files['tls.key']))).toBe(true);
  expect(files['root-cert.pem']).toBe(t.server.ca.current().rootsPem);
  return leaf;
}

const secretFiles = (namespace: string): Files | undefined => {
  const data = sim.get('secrets', namespace, 'istiod-tls')?.data as Record<string, string> | undefined;
  if (!data) return undefined;
  const text = (k: string) => Buffer.from(data[k] ?? '', 'base64').toString('utf8');
  return { 'tls.crt': text('tls.crt'), 'tls.key': text('tls.key'), 'root-cert.pem': text('root-cert.pem') };
};

async function waitFor<T>(what: string, value: () => T | undefined, timeoutMs = 8_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = value();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let firstSecret: X509Certificate;

describe('serve --k8s-secret keeps Secret istiod-tls', () => {
  it('creates it with the SANs istiod expects, chaining to the mesh root', async () => {
    const files = await waitFor('Secret istiod-tls exists', () => secretFiles('istio-system'));
    expect(sim.get('secrets', 'istio-system', 'istiod-tls')).toMatchObject({
      type: 'kubernetes.io/tls',
      metadata: { labels: { 'app.kubernetes.io/managed-by': 'meshca' } },
    });
    firstSecret = expectIstiodFiles(files, ['istiod.istio-system.svc', 'istiod-canary.istio-system.svc']);
  });
});

describe('POST /v1/profiles/istiod/issue', () => {
  const call = (body: unknown, token: string | null = adminToken): Promise<AdminResponse> =>
    adminCall(
      { port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token: adminToken },
      'POST',
      '/v1/profiles/istiod/issue',
      { body, token },
    );

  it.each([
    { body: { namespace: 'istio-system' }, dnsNames: ['istiod.istio-system.svc'], ttlMs: 6_000 },
    {
      body: { namespace: 'istio-system', revisions: ['canary', '1-24-0'], ttl: '48h' },
      dnsNames: ['istiod.istio-system.svc', 'istiod-canary.istio-system.svc', 'istiod-1-24-0.istio-system.svc'],
      ttlMs: 48 * 3600_000,
    },
    {
      body: { namespace: 'istio-system', revisions: ['default'], ttl: '100000h' },
      dnsNames: ['istiod.istio-system.svc'],
      ttlMs: 72 * 3600_000,
      why: 'clamped to --max-ttl',
    },
  ])('issues tls.crt, tls.key and root-cert.pem for $body', async ({ body, dnsNames, ttlMs }) => {
    const before = Date.now();
    const res = await call(body);
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const reply = res.json<{ spiffeId: string; dnsNames: string[]; serial: string; notAfter: string; files: Files }>();
    expect(reply).toMatchObject({ spiffeId: ISTIOD_ID, dnsNames });
    const leaf = expectIstiodFiles(reply.files, dnsNames);
    expect(Math.abs(Date.parse(reply.notAfter) - before - ttlMs)).toBeLessThan(5_000);
    expect(leaf.serialNumber.toLowerCase().replace(/^0+/, '')).toBe(reply.serial);
    const record = await t.server.store.getCertificate(reply.serial, new Date());
    expect(record).toMatchObject({ spiffeId: ISTIOD_ID, callerId: 'admin', clusterId: 'Kubernetes' });
  });

  it.each([
    { why: 'no namespace', body: {}, status: 400 },
    { why: 'a namespace that is not a DNS label', body: { namespace: 'Istio_System' }, status: 400 },
    { why: 'a bad revision', body: { namespace: 'istio-system', revisions: ['Bad!'] }, status: 400 },
    { why: 'a bad ttl', body: { namespace: 'istio-system', ttl: 'soon' }, status: 400 },
    { why: 'an unknown field', body: { namespace: 'istio-system', dnsNames: ['evil.example'] }, status: 400 },
    { why: 'no admin token', body: { namespace: 'istio-system' }, status: 401, token: null },
  ])('refuses $why ($status)', async ({ body, status, token }) => {
    const res = await call(body, token);
    expect(res.status, res.text).toBe(status);
    expect(res.json()).toHaveProperty('code');
  });
});

describe('meshca istiod-cert (CLI on the data dir)', () => {
  // Asynchronous on purpose: the simulated API server lives in this process and must keep answering.
  const cli = (...args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [CLI, 'istiod-cert', '--data-dir', join(dir, 'data'), ...args],
        { env: { ...process.env, MESHCA_KEK: '' } },
        (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, out: stdout + stderr }),
      );
    });

  it('--out writes the files istiod mounts (tls.key 0600)', async () => {
    const out = join(dir, 'istiod-files');
    const result = await cli('--namespace', 'istio-system', '--revision', 'canary', '--out', out);
    expect(result.code, result.out).toBe(0);
    const read = (f: string) => readFileSync(join(out, f), 'utf8');
    expectIstiodFiles({ 'tls.crt': read('tls.crt'), 'tls.key': read('tls.key'), 'root-cert.pem': read('root-cert.pem') }, [
      'istiod.istio-system.svc',
      'istiod-canary.istio-system.svc',
    ]);
    expect(statSync(join(out, 'tls.key')).mode & 0o777).toBe(0o600);
  });

  it('--k8s-secret creates the Secret, leaves a fresh one alone, and renews it with --force', async () => {
    const kubeconfig = sim.kubeconfig('token');
    const namespace = ['--namespace', 'istiod-cli', '--k8s-secret', '--kubeconfig', kubeconfig];
    expect((await cli(...namespace)).out).toContain('Secret istiod-cli/istiod-tls: created');
    const first = new X509Certificate(secretFiles('istiod-cli')!['tls.crt']).serialNumber;
    expect((await cli(...namespace)).out).toContain('is current');
    expect(new X509Certificate(secretFiles('istiod-cli')!['tls.crt']).serialNumber).toBe(first);
    expect((await cli(...namespace, '--force')).out).toContain('Secret istiod-cli/istiod-tls: updated');
    expect(new X509Certificate(secretFiles('istiod-cli')!['tls.crt']).serialNumber).not.toBe(first);
  });

  it('is a usage error (exit 2) without a destination, with a bad namespace or a bad revision', async () => {
    const results = await Promise.all(
      [
        ['--namespace', 'istio-system'],
        ['--namespace', 'Bad_NS', '--out', '/tmp/x'],
        ['--revision', 'no spaces', '--out', '/tmp/x'],
      ].map((args) => cli(...args)),
    );
    expect(results.map((r) => r.code)).toEqual([2, 2, 2]);
    expect(results.map((r) => r.out).join('')).toMatch(
      /--out DIR and\/or --k8s-secret[\s\S]*--namespace must be a namespace name[\s\S]*is not a revision name/,
    );
  });
});

describe('serve --k8s-secret renewal', () => {
  it('renews after 2/3 of the lifetime and well before expiry, keeping keys it does not own', async () => {
    const secret = sim.get('secrets', 'istio-system', 'istiod-tls')!;
    sim.put('secrets', 'istio-system', {
      ...secret,
      data: { ...(secret.data as object), 'ca.crt': Buffer.from('kept').toString('base64') },
    });
    const writes = () =>
      sim.requests
        .filter((r) => /^\/api\/v1\/namespaces\/istio-system\/secrets/.test(r.path) && (r.method === 'POST' || r.method === 'PUT'))
        .map((r) => ({
          at: r.at,
          leaf: new X509Certificate(
            Buffer.from((JSON.parse(r.body) as { data: Record<string, string> }).data['tls.crt']!, 'base64').toString(),
          ),
        }));
    const count = writes().length;
    await waitFor('two more renewals', () => writes().length >= count + 2 || undefined, 12_000);
    const all = writes();
    expect(all[0]!.leaf.serialNumber).toBe(firstSecret.serialNumber);
    for (let i = 1; i < all.length; i++) {
      const previous = all[i - 1]!.leaf;
      const from = Date.parse(previous.validFrom);
      const to = Date.parse(previous.validTo);
      expect(all[i]!.at, `renewal ${i} too early`).toBeGreaterThanOrEqual(from + ((to - from) * 2) / 3 - 1_000); // X.509 times have 1 s resolution
      expect(all[i]!.at, `renewal ${i} too late`).toBeLessThan(to);
      expect(all[i]!.leaf.serialNumber).not.toBe(previous.serialNumber);
    }
    expectIstiodFiles(secretFiles('istio-system')!, ['istiod.istio-system.svc', 'istiod-canary.istio-system.svc']);
    const data = sim.get('secrets', 'istio-system', 'istiod-tls')!.data as Record<string, string>;
    expect(Buffer.from(data['ca.crt']!, 'base64').toString()).toBe('kept');
  });
});
