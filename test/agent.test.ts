import { createPrivateKey, randomBytes, type X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { credentials, loadPackageDefinition, status, type ServiceClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { pino } from 'pino';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../src/agent/agent.js';
import { AgentMetrics } from '../src/agent/metrics.js';
import { AGENT_FLAGS, buildAgentConfig } from '../src/agent/options.js';
import { parseFlags } from '../src/flags.js';
import { spawnMeshca } from '../scripts/lib/meshca-process.mjs';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';
import { TEST_ISSUER, TestTokenIssuer } from './support/tokens.js';
import { collect, splitDer, unary, workloadApiClient, workloadMetadata, type WorkloadApiClient } from './support/workload-client.js';

const ID = 'spiffe://cluster.local/ns/apps/sa/web';
const TD_KEY = 'spiffe://cluster.local';

let dir: string;
let issuer: TestTokenIssuer;
let meshca: TestServer;
let serverArgs: string[];
const kek = randomBytes(32).toString('base64');

function agentArgs(name: string, extra: readonly string[] = []): string[] {
  return [
    '--server',
    meshca.address,
    '--server-name',
    'localhost',
    '--root',
    join(dir, 'root.pem'),
    '--token-file',
    join(dir, `${name}.token`),
    '--socket',
    join(dir, name, 'sock', 'agent.sock'),
    '--monitoring-listen',
    '127.0.0.1:0',
    ...extra,
  ];
}

async function writeToken(name: string, sa = 'web'): Promise<void> {
  writeFileSync(join(dir, `${name}.token`), await issuer.token({ namespace: 'apps', serviceAccount: sa }));
}

async function runAgent(name: string, extra: readonly string[] = []): Promise<RunningAgent> {
  await writeToken(name);
  const config = buildAgentConfig(parseFlags(AGENT_FLAGS, agentArgs(name, extra), {}, 'agent').values);
  return startAgent(config, pino({ level: 'silent' }), new AgentMetrics({ processMetrics: false }));
}

function firstSvid(client: WorkloadApiClient) {
  return collect(client.FetchX509SVID({}, workloadMetadata()), (m) => m.length >= 1).then((m) => m[0]!);
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

function checkChain(chain: X509Certificate[], roots: X509Certificate[], spiffeId: string): void {
  expect(chain[0]!.subjectAltName).toBe(`URI:${spiffeId}`);
  for (let i = 0; i + 1 < chain.length; i++) expect(chain[i]!.verify(chain[i + 1]!.publicKey)).toBe(true);
  expect(roots.some((root) => chain[chain.length - 1]!.verify(root.publicKey))).toBe(true);
}

beforeAll(async () => {
  dir = tempDir();
  issuer = await TestTokenIssuer.create(dir);
  serverArgs = ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER, '--bundle-refresh-hint', '1s'];
  meshca = await startTestServer(join(dir, 'data'), serverArgs, { MESHCA_KEK: kek });
  writeFileSync(join(dir, 'root.pem'), meshca.server.ca.current().rootsPem);
});

afterAll(async () => {
  await meshca?.close();
  removeDir(dir);
});

describe('Workload API', () => {
  let agent: RunningAgent;
  let client: WorkloadApiClient;

  beforeAll(async () => {
    agent = await runAgent('a', [
      '--write-dir',
      join(dir, 'a', 'files'),
      '--on-rotate',
      `echo rotated >> ${join(dir, 'a', 'rotations')}`,
      '--sds-socket',
      join(dir, 'a', 'sock', 'sds.sock'),
    ]);
    client = workloadApiClient(join(dir, 'a', 'sock', 'agent.sock'));
  });

  afterAll(async () => {
    client?.close();
    await agent?.close();
  });

  it('FetchX509SVID: the agent identity as DER (leaf first), a PKCS#8 key that matches, and the trust domain bundle', async () => {
    const message = await firstSvid(client);
    expect(message.svids).toHaveLength(1);
    const svid = message.svids[0]!;
    expect(svid.spiffe_id).toBe(ID);
    const chain = splitDer(svid.x509_svid);
    const roots = splitDer(svid.bundle);
    checkChain(chain, roots, ID);
    expect(chain[0]!.checkPrivateKey(createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' }))).toBe(true);
    expect(roots.map((r) => r.raw.toString('base64')).sort()).toEqual(
      meshca.server.ca
        .current()
        .roots.map((r) => r.toString('base64'))
        .sort(),
    );
    expect(statSync(join(dir, 'a', 'sock', 'agent.sock')).mode & 0o777).toBe(0o770);
  });

  it.each([
    { method: 'FetchX509SVID', stream: true },
    { method: 'FetchX509Bundles', stream: true },
    { method: 'FetchJWTBundles', stream: true },
    { method: 'FetchJWTSVID', stream: false, request: { audience: ['api'] } },
    { method: 'ValidateJWTSVID', stream: false, request: { audience: 'api', svid: 'x.y.z' } },
  ])('$method without the workload.spiffe.io header is InvalidArgument', async ({ method, stream, request }) => {
    const target = client as unknown as Record<string, (...args: unknown[]) => unknown>;
    const error = stream
      ? await collect(target[method]!.call(client, {}, workloadMetadata(false)) as never, () => true).catch((e: unknown) => e)
      : await unary(target[method] as never, client, request as never, workloadMetadata(false)).catch((e: unknown) => e);
    expect((error as ServiceError).code).toBe(status.INVALID_ARGUMENT);
  });

  it('FetchX509Bundles streams the full state at once, then again when a root is added', async () => {
    const stream = client.FetchX509Bundles({}, workloadMetadata());
    const collected = collect(stream, (m) => m.length >= 2);
    const before = meshca.server.ca.current().roots.length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    await meshca.server.ca.prepare({}, 'test');
    const [first, second] = await collected;
    expect(Object.keys(first!.bundles)).toEqual([TD_KEY]);
    expect(splitDer(first!.bundles[TD_KEY]!)).toHaveLength(before);
    expect(splitDer(second!.bundles[TD_KEY]!)).toHaveLength(before + 1);
  });

  it('FetchJWTSVID mints an ES256 JWT-SVID that verifies against FetchJWTBundles, and refuses requests without audience or for another identity', async () => {
    const { svids } = await unary(client.FetchJWTSVID, client, { audience: ['https://api.example.com'] });
    expect(svids[0]!.spiffe_id).toBe(ID);
    const [bundles] = await collect(client.FetchJWTBundles({}, workloadMetadata()), (m) => m.length >= 1);
    const jwks = JSON.parse(bundles!.bundles[TD_KEY]!.toString('utf8')) as JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid)).toContain(meshca.server.jwt.current().signer.kid);
    const { payload, protectedHeader } = await jwtVerify(svids[0]!.svid, createLocalJWKSet(jwks), { audience: 'https://api.example.com' });
    expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    expect(payload.sub).toBe(ID);
    const refusals = [
      { request: { audience: [] }, code: status.INVALID_ARGUMENT },
      { request: { audience: ['api'], spiffe_id: 'spiffe://cluster.local/ns/apps/sa/other' }, code: status.PERMISSION_DENIED },
    ];
    for (const { request, code } of refusals)
      expect(((await unary(client.FetchJWTSVID, client, request).catch((e: unknown) => e)) as ServiceError).code).toBe(code);
  });

  it('ValidateJWTSVID accepts the right audience and refuses a wrong audience or a tampered token', async () => {
    const { svids } = await unary(client.FetchJWTSVID, client, { audience: ['billing'] });
    const token = svids[0]!.svid;
    const valid = await unary(client.ValidateJWTSVID, client, { audience: 'billing', svid: token });
    expect(valid.spiffe_id).toBe(ID);
    expect(valid.claims.fields.sub!.stringValue).toBe(ID);
    expect(valid.claims.fields.aud!.listValue!.values.map((v) => v.stringValue)).toEqual(['billing']);
    const [header, payload, signature] = token.split('.');
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), sub: 'spiffe://cluster.local/ns/apps/sa/admin' })).toString('base64url')}.${signature}`;
    for (const request of [
      { audience: 'other-api', svid: token },
      { audience: 'billing', svid: forged },
      { audience: '', svid: token },
    ]) {
      expect(((await unary(client.ValidateJWTSVID, client, request).catch((e: unknown) => e)) as ServiceError).code).toBe(
        status.INVALID_ARGUMENT,
      );
    }
  });

  it('--write-dir holds the same SVID as tls.crt/tls.key (0600) and the roots as ca.crt; --on-rotate ran', async () => {
    const svid = (await firstSvid(client)).svids[0]!;
    const files = join(dir, 'a', 'files');
    await expect.poll(() => existsSync(join(dir, 'a', 'rotations'))).toBe(true);
    expect(statSync(join(files, 'tls.key')).mode & 0o777).toBe(0o600);
    const chainPem = readFileSync(join(files, 'tls.crt'), 'utf8');
    expect(chainPem.split('BEGIN CERTIFICATE').length - 1).toBe(splitDer(svid.x509_svid).length);
    const key = createPrivateKey(readFileSync(join(files, 'tls.key')));
    expect(splitDer(svid.x509_svid)[0]!.checkPrivateKey(key)).toBe(true);
    expect(readFileSync(join(files, 'ca.crt'), 'utf8')).toContain(meshca.server.ca.current().rootsPem.split('\n')[1]);
  });

  it('Envoy SDS: StreamSecrets answers "default" and "ROOTCA" like the Istio agent', async () => {
    const loaded = loadPackageDefinition(
      loadSync('envoy/service/secret/v3/sds.proto', {
        includeDirs: [fileURLToPath(new URL('../proto/', import.meta.url))],
        keepCase: true,
        defaults: true,
        oneofs: true,
        json: true,
      }),
    ) as unknown as {
      envoy: { service: { secret: { v3: { SecretDiscoveryService: ServiceClientConstructor } } } };
    };
    const sds = new loaded.envoy.service.secret.v3.SecretDiscoveryService(
      `unix:${join(dir, 'a', 'sock', 'sds.sock')}`,
      credentials.createInsecure(),
    ) as unknown as {
      StreamSecrets(): NodeJS.ReadWriteStream & { write(m: object): void; cancel(): void };
      close(): void;
    };
    const stream = sds.StreamSecrets();
    const response = await new Promise<{
      resources: {
        name: string;
        tls_certificate?: { certificate_chain: { inline_bytes: Buffer }; private_key: { inline_bytes: Buffer } };
        validation_context?: { trusted_ca: { inline_bytes: Buffer } };
      }[];
      nonce: string;
    }>((resolve, reject) => {
      stream.on('data', resolve);
      stream.on('error', reject);
      stream.write({
        node: { id: 'sidecar~10.0.0.1~web.apps~apps.svc.cluster.local' },
        resource_names: ['default', 'ROOTCA'],
        type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
      });
    });
    stream.cancel();
    sds.close();
    const byName = new Map(response.resources.map((r) => [r.name, r]));
    const certificate = byName.get('default')!.tls_certificate!;
    const leafPem = Buffer.from(certificate.certificate_chain.inline_bytes).toString();
    expect(leafPem).toContain('BEGIN CERTIFICATE');
    expect(Buffer.from(certificate.private_key.inline_bytes).toString()).toContain('BEGIN PRIVATE KEY');
    expect(Buffer.from(byName.get('ROOTCA')!.validation_context!.trusted_ca.inline_bytes).toString()).toContain(
      meshca.server.ca.current().rootsPem.split('\n')[1],
    );
  });

  it('serves its own /healthz, /readyz and /metrics', async () => {
    const port = agent.monitoringAddress.port;
    expect((await httpGet(port, '/healthz')).status).toBe(200);
    expect((await httpGet(port, '/readyz')).status).toBe(200);
    const metrics = await httpGet(port, '/metrics');
    expect(metrics.body).toMatch(/meshca_agent_svid_renewals_total\{result="ok"\} [1-9]/);
    expect(metrics.body).toMatch(/meshca_agent_workload_api_calls_total\{method="FetchX509SVID",code="INVALID_ARGUMENT"\} 1/);
  });
});

describe('rotation and outages', () => {
  it('renews at half-life with a short TTL, re-reads the token file, serves the last good SVID while meshca is down, and renews once it is back', async () => {
    const agent = await runAgent('b', ['--svid-ttl', '4s']);
    const client = workloadApiClient(join(dir, 'b', 'sock', 'agent.sock'));
    try {
      const started = Date.now();
      const stream = client.FetchX509SVID({}, workloadMetadata());
      const arrivals: { at: number; serial: string; id: string; notAfter: number }[] = [];
      const two = collect(stream, (messages) => {
        const svid = messages[messages.length - 1]!.svids[0]!;
        const leaf = splitDer(svid.x509_svid)[0]!;
        arrivals.push({
          at: Date.now() - started,
          serial: leaf.serialNumber,
          id: svid.spiffe_id,
          notAfter: Date.parse(leaf.validTo) - started,
        });
        if (arrivals.length === 1) void writeToken('b', 'web2'); // the next renewal must use the rewritten token
        return messages.length >= 2;
      });
      await two;
      const [first, second] = arrivals;
      expect(second!.serial).not.toBe(first!.serial);
      expect(second!.id).toBe('spiffe://cluster.local/ns/apps/sa/web2');
      // Renewed at half of a ~4 s lifetime (± 10 % jitter): the old SVID then has about 2 s left. Counted
      // against its notAfter (whole seconds), not against when this stream connected, which may be late.
      const leftAtRenewal = first!.notAfter - second!.at;
      expect(leftAtRenewal).toBeGreaterThan(1000);
      expect(leftAtRenewal).toBeLessThan(2500);

      // meshca down: renewals fail, the last good SVID is still served.
      const lastGood = (await firstSvid(client)).svids[0]!;
      await meshca.close();
      expect(await agent.renew()).toBe(false);
      const during = (await firstSvid(client)).svids[0]!;
      expect(during.x509_svid.equals(lastGood.x509_svid)).toBe(true);

      // meshca back on the same port and data dir: the agent renews by itself.
      meshca = await startTestServer(join(dir, 'data'), [...serverArgs, '--grpc-listen', meshca.address], { MESHCA_KEK: kek });
      const after = await collect(
        client.FetchX509SVID({}, workloadMetadata()),
        (m) => splitDer(m[m.length - 1]!.svids[0]!.x509_svid)[0]!.serialNumber !== splitDer(lastGood.x509_svid)[0]!.serialNumber,
        20_000,
      );
      expect(after.length).toBeGreaterThanOrEqual(2);
    } finally {
      client.close();
      await agent.close();
    }
  });
});

describe('meshca agent (process)', () => {
  it('documents every flag with its MESHCA_* variable', async () => {
    const lines: string[] = [];
    const child = spawnMeshca(['agent', '--help'], { onLine: (line: string) => lines.push(line) });
    child.ready.catch(() => undefined); // not a server: it never reports serving
    expect(await child.exited).toBe(0);
    for (const flag of AGENT_FLAGS) expect(lines.join('\n')).toContain(`MESHCA_${flag.name.toUpperCase().replace(/-/g, '_')}`);
  });

  it('serves the Workload API from a real process and shuts down cleanly on SIGTERM, removing its socket', async () => {
    await writeToken('p');
    const socket = join(dir, 'p', 'sock', 'agent.sock');
    const agent = spawnMeshca(['agent', ...agentArgs('p', ['--socket-mode', '0777'])], {});
    agent.ready.catch(() => undefined); // the agent never logs the server's "meshca is serving"
    const client = workloadApiClient(socket);
    try {
      await expect.poll(() => existsSync(socket), { timeout: 60_000 }).toBe(true);
      expect(statSync(socket).mode & 0o777).toBe(0o777);
      expect((await firstSvid(client)).svids[0]!.spiffe_id).toBe(ID);
    } finally {
      client.close();
      agent.child.kill('SIGTERM');
    }
    expect(await agent.exited).toBe(0);
    expect(existsSync(socket)).toBe(false);
  }, 120_000);
});

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML, checked by the assertions
type Doc = Record<string, any>;

describe('deploy/spiffe/agent-daemonset.yaml', () => {
  it('runs the agent with flags it accepts, its socket on a hostPath, and a projected istio-ca token', () => {
    const docs = parseAllDocuments(
      readFileSync(fileURLToPath(new URL('../deploy/spiffe/agent-daemonset.yaml', import.meta.url)), 'utf8'),
    ).map((d) => d.toJS() as Doc);
    const daemonSet = docs.find((d) => d.kind === 'DaemonSet')!;
    const spec = daemonSet.spec.template.spec;
    expect(docs.find((d) => d.kind === 'ServiceAccount')!.metadata.name).toBe(spec.serviceAccountName);
    const container = spec.containers[0];
    expect(container.args[0]).toBe('agent');
    const config = buildAgentConfig(parseFlags(AGENT_FLAGS, container.args.slice(1), {}, 'agent').values);
    const volume = (path: string) => {
      const mount = container.volumeMounts.find((m: { mountPath: string }) => path.startsWith(`${m.mountPath}/`));
      return spec.volumes.find((v: { name: string }) => v.name === mount?.name);
    };
    expect(volume(config.socket).hostPath).toMatchObject({ path: '/run/meshca', type: 'DirectoryOrCreate' });
    expect(volume(config.sdsSocket!).hostPath.path).toBe('/run/meshca');
    expect(volume(config.tokenFile).projected.sources[0].serviceAccountToken.audience).toBe('istio-ca');
    expect(volume(config.rootFile).configMap.name).toBe('istio-ca-root-cert');
    expect(container.readinessProbe.httpGet.port).toBe(config.monitoringListen.port);
  });
});
