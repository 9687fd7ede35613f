import { randomBytes, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { UpstreamError } from '../src/authority/errors.js';
import { CertificateAuthority } from '../src/authority/lifecycle.js';
import { ACTIVATE_FRACTION, lifetimePoint } from '../src/authority/auto-rotation.js';
import { RENEW_FRACTION, UpstreamRenewer } from '../src/authority/upstream-renewal.js';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags } from '../src/flags.js';
import { KubeClient } from '../src/kubernetes/client.js';
import { loadKubeconfig } from '../src/kubernetes/connection.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { CertManagerSigner } from '../src/upstream/cert-manager.js';
import { KubeApiSimulator, type Obj } from './support/kube-api.js';
import { workloadCredentials } from './support/mtls.js';
import { ecCsr, OpensslCa } from './support/offline-ca.js';
import { openssl } from './support/openssl.js';
import { removeDir, startTestServer, tempDir } from './support/server.js';

const silent = pino({ level: 'silent' });
const NS = 'meshca';
let dir: string;
let api: KubeApiSimulator;
let issuerCa: OpensslCa;

type Condition = { type: string; status: string; reason?: string; message?: string };
const b64 = (text: string) => Buffer.from(text).toString('base64');
const approved: Condition = {
  type: 'Approved',
  status: 'True',
  reason: 'cert-manager.io',
  message: 'Certificate request has been approved by cert-manager.io',
};

/** What "cert-manager" does with each CertificateRequest, as the real controllers would write its status. */
const behaviours: Record<string, (cr: Obj) => Record<string, unknown> | undefined> = {
  issue: (cr) => {
    const spec = cr.spec as { request: string; duration: string };
    const days = Math.ceil(Number(/^(\d+)s$/.exec(spec.duration)![1]) / 86_400);
    const certificate = issuerCa.sign(Buffer.from(spec.request, 'base64').toString('utf8'), { days });
    return {
      conditions: [approved, { type: 'Ready', status: 'True', reason: 'Issued', message: 'Certificate fetched from issuer successfully' }],
      certificate: b64(certificate),
      ca: b64(issuerCa.certPem),
    };
  },
  deny: () => ({
    conditions: [
      {
        type: 'Denied',
        status: 'True',
        reason: 'policy.cert-manager.io',
        message: 'No policy approved this request: [mesh-intermediates: spec.isCA: Invalid value: true]',
      },
      { type: 'Ready', status: 'False', reason: 'Denied', message: 'The CertificateRequest was denied by an approval controller' },
    ],
  }),
  fail: () => ({ conditions: [approved, { type: 'Ready', status: 'False', reason: 'Failed', message: 'issuer "mesh-root" not found' }] }),
  ignore: () => undefined,
};
let behaviour = 'issue';

beforeAll(async () => {
  dir = tempDir('meshca-cert-manager-');
  api = await KubeApiSimulator.start(join(dir, 'api'));
  api.addNamespace(NS);
  issuerCa = OpensslCa.root(dir, 'cluster-issuer-root');
  // Approval and issuance happen a little later, as with the real controllers.
  api.onCertificateRequest = (cr) =>
    void setTimeout(() => {
      const status = behaviours[behaviour]!(cr);
      if (status) api.setStatus('certificaterequests', NS, cr.metadata.name, status);
    }, 30);
});

beforeEach(() => {
  behaviour = 'issue';
});

afterAll(async () => {
  await api?.close();
  removeDir(dir);
});

const client = () => new KubeClient({ connection: loadKubeconfig(api.kubeconfig()), logger: silent });
const signer = (waitMs = 5000) =>
  new CertManagerSigner(
    client(),
    { issuerName: 'mesh-root', issuerKind: 'ClusterIssuer', issuerGroup: 'cert-manager.io', namespace: NS, waitMs },
    silent,
  );
const CSR = () =>
  ecCsr(join(dir, 'k.pem'), '/CN=t', [
    '-addext',
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);

describe('--upstream cert-manager flags', () => {
  const config = (argv: string[]) => buildServerConfig(parseFlags(SERVE_FLAGS, ['--dev', ...argv], {}, 'serve').values).upstream;

  it('builds the cert-manager config slice', () => {
    expect(
      config([
        '--upstream',
        'cert-manager',
        '--issuer-name',
        'mesh-root',
        '--issuer-kind',
        'ClusterIssuer',
        '--cert-manager-namespace',
        'istio-system',
      ]),
    ).toMatchObject({
      kind: 'cert-manager',
      certManager: {
        issuerName: 'mesh-root',
        issuerKind: 'ClusterIssuer',
        issuerGroup: 'cert-manager.io',
        namespace: 'istio-system',
        waitMs: 300_000,
      },
    });
  });

  it.each([
    [['--upstream', 'cert-manager'], /--issuer-name is required/],
    [['--upstream', 'cert-manager', '--issuer-name', 'Bad_Name'], /not a Kubernetes object name/],
  ])('refuses %j', (argv, message) => {
    expect(() => config(argv)).toThrow(message);
  });
});

describe('cert-manager client', () => {
  it('creates an isCA CertificateRequest for the issuer and returns status.certificate and status.ca once Ready', async () => {
    const csr = CSR();
    const files = await signer().signIntermediate({ id: 'pending-00112233aabbccdd', csrPem: csr, ttlMs: 90 * 86_400_000 });
    const cr = api.get('certificaterequests', NS, 'meshca-intermediate-00112233aabbccdd')!;
    expect(cr).toMatchObject({
      apiVersion: 'cert-manager.io/v1',
      kind: 'CertificateRequest',
      spec: {
        isCA: true,
        request: b64(csr),
        duration: '7776000s',
        usages: ['cert sign', 'crl sign'],
        issuerRef: { name: 'mesh-root', kind: 'ClusterIssuer', group: 'cert-manager.io' },
      },
    });
    expect(new X509Certificate(files.certificate).ca).toBe(true);
    expect(files.chain).toBe(issuerCa.certPem);
  });

  it.each([
    ['deny', 'ERR_UPSTREAM_REFUSED', /was denied \(policy\.cert-manager\.io\): No policy approved this request/],
    ['fail', 'ERR_UPSTREAM_REFUSED', /failed: issuer "mesh-root" not found/],
    ['ignore', 'ERR_UPSTREAM_TIMEOUT', /is not Ready after 1s \(no conditions yet\); approve it/],
  ])('reports a CertificateRequest that cert-manager answers with "%s" clearly', async (answer, code, message) => {
    behaviour = answer;
    const error = await signer(1000)
      .signIntermediate({ id: `pending-${randomBytes(8).toString('hex')}`, csrPem: CSR(), ttlMs: 86_400_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error).toMatchObject({ code, message: expect.stringMatching(message) });
  });

  it('reports an unreachable API server as unavailable', async () => {
    await api.stop();
    try {
      const error = await new CertManagerSigner(
        new KubeClient({ connection: loadKubeconfig(api.kubeconfig()), maxAttempts: 1, logger: silent }),
        { issuerName: 'x', issuerKind: 'Issuer', issuerGroup: 'cert-manager.io', namespace: NS, waitMs: 1000 },
        silent,
      )
        .signIntermediate({ id: 'pending-ffffffffffffffff', csrPem: CSR(), ttlMs: 86_400_000 })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({
        code: 'ERR_UPSTREAM_UNAVAILABLE',
        message: expect.stringMatching(/cert-manager: creating CertificateRequest meshca\/meshca-intermediate-ffffffffffffffff failed/),
      });
    } finally {
      await api.resume();
    }
  });
});

describe('meshca serve --upstream cert-manager', () => {
  it('starts with an intermediate cert-manager issued; leaves verify against the issuer root alone', async () => {
    const data = join(dir, 'serve');
    const t = await startTestServer(data, [
      '--dev',
      '--upstream',
      'cert-manager',
      '--issuer-name',
      'mesh-root',
      '--issuer-kind',
      'ClusterIssuer',
      '--kubeconfig',
      api.kubeconfig(),
      '--upstream-wait',
      '10s',
    ]);
    try {
      expect(t.server.ca.current().rootsPem).toBe(issuerCa.certPem);
      const issuer = await openDevTokenIssuer(data);
      const leaf = await workloadCredentials(
        t.client(),
        'spiffe://cluster.local/ns/c/sa/c',
        await issuer.sign({ namespace: 'c', serviceAccount: 'c', ttlSeconds: 600 }),
      );
      writeFileSync(join(dir, 'cm-leaf.pem'), leaf.cert);
      expect(openssl(['verify', '-CAfile', issuerCa.certPath, '-untrusted', join(dir, 'cm-leaf.pem'), join(dir, 'cm-leaf.pem')])).toContain(
        'OK',
      );
    } finally {
      await t.close();
    }
  });

  it('renews at 2/3 through a new CertificateRequest and activates the successor at 5/6 (injected clock)', async () => {
    const d = tempDir('meshca-cm-renew-');
    const store = openSqliteStore({ path: join(d, 'meshca.db') });
    let clock = Date.now();
    const now = () => new Date(clock);
    const cm = signer();
    const ca = await CertificateAuthority.open({
      store,
      kek: randomBytes(32),
      logger: silent,
      now,
      bootstrapSigner: cm,
      trustDomain: 'cluster.local',
      keyType: 'ec-p256',
      rootTtlMs: 3650 * 86_400_000,
      intermediateTtlMs: 30 * 86_400_000,
    });
    const renewer = new UpstreamRenewer({
      ca,
      store,
      signer: cm,
      logger: silent,
      intermediateTtlMs: 30 * 86_400_000,
      checkIntervalMs: 60_000,
      retry: { initialMs: 1000, maxMs: 1000 },
      now,
    });
    try {
      const first = ca.current().signer.record;
      clock = lifetimePoint(first, RENEW_FRACTION) + 1;
      const before = api.count('POST', /certificaterequests$/);
      expect(await renewer.runOnce()).toMatchObject({ step: { kind: 'renew' }, performed: true });
      expect(api.count('POST', /certificaterequests$/)).toBe(before + 1);
      clock = lifetimePoint(first, ACTIVATE_FRACTION) + 1;
      const activated = await renewer.runOnce();
      expect(activated).toMatchObject({ step: { kind: 'activate' }, performed: true });
      expect(ca.current().signer.id).not.toBe(first.id);
      expect(ca.current().signer.record.parentId).toBe(first.parentId);
    } finally {
      await renewer.stop();
      await store.close();
      removeDir(d);
    }
  });
});
