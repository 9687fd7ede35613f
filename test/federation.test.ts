import { randomBytes, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../src/agent/agent.js';
import { AgentMetrics } from '../src/agent/metrics.js';
import { AGENT_FLAGS, buildAgentConfig } from '../src/agent/options.js';
import { parseFlags } from '../src/flags.js';
import type { SpiffeBundle } from '../src/spiffe/bundle.js';
import { adminCall } from './support/admin.js';
import { removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';
import { TEST_ISSUER, TestTokenIssuer } from './support/tokens.js';
import { collect, splitDer, unary, workloadApiClient, workloadMetadata, type WorkloadApiClient } from './support/workload-client.js';

let dir: string;
let issuer: TestTokenIssuer;
let a: TestServer;
let b: TestServer;
let aArgs: string[];
const kek = randomBytes(32).toString('base64');

const base = () => ['--jwks-file', issuer.jwksPath, '--jwt-issuer', TEST_ISSUER, '--bundle-refresh-hint', '1s'];
const startA = () => startTestServer(join(dir, 'a'), aArgs, { MESHCA_KEK: kek });
const rootsOf = (s: TestServer) =>
  s.server.ca
    .current()
    .roots.map((r) => r.toString('base64'))
    .sort();

async function federated(server: TestServer): Promise<Record<string, SpiffeBundle>> {
  const response = await adminCall(
    { port: server.server.adminAddress.port, roots: server.server.ca.current().rootsPem },
    'GET',
    '/v1/bundles/federated',
  );
  expect(response.status).toBe(200);
  return response.json<Record<string, SpiffeBundle>>();
}

const x509Of = (bundle: SpiffeBundle | undefined) =>
  (bundle?.keys ?? [])
    .filter((k) => k.use === 'x509-svid')
    .map((k) => k.x5c![0])
    .sort();

beforeAll(async () => {
  dir = tempDir();
  issuer = await TestTokenIssuer.create(dir);
  b = await startTestServer(join(dir, 'b'), [...base(), '--trust-domain', 'b.test', '--bundle-endpoint-listen', '127.0.0.1:0'], {
    MESHCA_KEK: kek,
  });
  writeFileSync(join(dir, 'b-roots.pem'), b.server.ca.current().rootsPem);
  aArgs = [
    ...base(),
    '--trust-domain',
    'a.test',
    '--federate-with',
    `b.test=https://localhost:${b.server.adminAddress.port}/v1/bundle?format=spiffe`,
    '--federation-ca-file',
    join(dir, 'b-roots.pem'),
  ];
  a = await startA();
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  removeDir(dir);
});

describe('federation between two meshca servers', () => {
  it("fetches the other trust domain's bundle (https_web) and serves it at /v1/bundles/federated", async () => {
    await expect.poll(async () => x509Of((await federated(a))['b.test']), { timeout: 15_000 }).toEqual(rootsOf(b));
    const bundle = (await federated(a))['b.test']!;
    expect(bundle.keys.filter((k) => k.use === 'jwt-svid').map((k) => k.kid)).toContain(b.server.jwt.current().signer.kid);
  });

  it("an agent of trust domain A gets B's bundle and validates B's JWT-SVIDs", async () => {
    writeFileSync(join(dir, 'a.token'), await issuer.token({ namespace: 'apps', serviceAccount: 'client' }));
    writeFileSync(join(dir, 'a-roots.pem'), a.server.ca.current().rootsPem);
    const args = [
      '--server',
      a.address,
      '--server-name',
      'localhost',
      '--root',
      join(dir, 'a-roots.pem'),
      '--token-file',
      join(dir, 'a.token'),
      '--trust-domain',
      'a.test',
      '--socket',
      join(dir, 'agent', 'agent.sock'),
      '--monitoring-listen',
      '127.0.0.1:0',
    ];
    const agent: RunningAgent = await startAgent(
      buildAgentConfig(parseFlags(AGENT_FLAGS, args, {}, 'agent').values),
      pino({ level: 'silent' }),
      new AgentMetrics({ processMetrics: false }),
    );
    const client: WorkloadApiClient = workloadApiClient(join(dir, 'agent', 'agent.sock'));
    try {
      const [svid] = await collect(client.FetchX509SVID({}, workloadMetadata()), (m) => m.length >= 1);
      expect(svid!.svids[0]!.spiffe_id).toBe('spiffe://a.test/ns/apps/sa/client');
      expect(
        splitDer(svid!.federated_bundles['spiffe://b.test']!)
          .map((c) => c.raw.toString('base64'))
          .sort(),
      ).toEqual(rootsOf(b));
      const [bundles] = await collect(client.FetchX509Bundles({}, workloadMetadata()), (m) => m.length >= 1);
      expect(Object.keys(bundles!.bundles).sort()).toEqual(['spiffe://a.test', 'spiffe://b.test']);

      const fromB = await b.client().mintJwtSvid({
        token: await issuer.token({ namespace: 'shop', serviceAccount: 'cart' }),
        audiences: ['spiffe://a.test/ns/apps/sa/client'],
      });
      const valid = await unary(client.ValidateJWTSVID, client, { audience: 'spiffe://a.test/ns/apps/sa/client', svid: fromB.token });
      expect(valid.spiffe_id).toBe('spiffe://b.test/ns/shop/sa/cart');
      const wrongAudience = (await unary(client.ValidateJWTSVID, client, { audience: 'someone-else', svid: fromB.token }).catch(
        (e: unknown) => e,
      )) as ServiceError;
      expect(wrongAudience.code).toBe(status.INVALID_ARGUMENT);
    } finally {
      client.close();
      await agent.close();
    }
  });

  it("follows the peer's rotation at its refresh hint, keeps the last good bundle while the peer is down and across a restart", async () => {
    await b.server.ca.prepare({}, 'test');
    await expect.poll(async () => x509Of((await federated(a))['b.test']), { timeout: 15_000 }).toEqual(rootsOf(b));
    const lastGood = x509Of((await federated(a))['b.test']);
    expect(lastGood).toHaveLength(2);
    await b.close();
    await new Promise((resolve) => setTimeout(resolve, 2500)); // a few failed refreshes
    expect(x509Of((await federated(a))['b.test'])).toEqual(lastGood);
    await a.close();
    a = await startA();
    expect(x509Of((await federated(a))['b.test'])).toEqual(lastGood);
    b = await startTestServer(join(dir, 'b'), [...base(), '--trust-domain', 'b.test'], { MESHCA_KEK: kek }); // closed in afterAll
  });

  it('serves the https_spiffe bundle endpoint with its SVID', async () => {
    const c = await startTestServer(join(dir, 'c'), [...base(), '--trust-domain', 'c.test', '--bundle-endpoint-listen', '127.0.0.1:0'], {
      MESHCA_KEK: kek,
    });
    try {
      const port = c.server.bundleEndpointAddress!.port;
      // https_spiffe: trust the peer's bundle and check its SPIFFE ID instead of a DNS name.
      const { peer, body } = await new Promise<{ peer: X509Certificate; body: string }>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, path: '/', ca: c.server.ca.current().rootsPem, checkServerIdentity: () => undefined },
          (res) => {
            const peerCert = new X509Certificate((res.socket as TLSSocket).getPeerCertificate().raw);
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => resolve({ peer: peerCert, body: text }));
          },
        );
        req.on('error', reject);
        req.end();
      });
      expect(peer.subjectAltName).toContain('URI:spiffe://c.test/ns/meshca/sa/meshca');
      const bundle = JSON.parse(body) as SpiffeBundle;
      expect(x509Of(bundle)).toEqual(rootsOf(c));
      expect(bundle.spiffe_refresh_hint).toBe(1);
    } finally {
      await c.close();
    }
  });
});
