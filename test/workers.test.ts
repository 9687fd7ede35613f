import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../src/client/ca-client.js';
import { adminCall } from './support/admin.js';
import { CLI, spawnServer, type ServerProcess } from './support/process.js';
import { csrFor, removeDir, tempDir } from './support/server.js';

const run = promisify(execFile);
const splitPem = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];

/** GET /metrics on a new connection each time, so scrapes reach either worker. */
function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: ${res.statusCode} ${body}`))));
    }).on('error', reject);
  });
}

function metricValue(body: string, name: string): number {
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`${name} is not in /metrics`);
  return Number(line.slice(name.length + 1));
}
const meshca = async (...args: string[]) => (await run(process.execPath, [CLI, ...args])).stdout;

/** serve --workers 2 on the default SQLite store: one port, two processes, one CA. */
describe('serve --workers', () => {
  let dataDir: string;
  let server: ServerProcess;
  let roots: string;
  let token: string;

  beforeAll(async () => {
    dataDir = tempDir();
    server = await spawnServer(dataDir, ['--dev', '--workers', '2']);
    roots = await meshca('bundle', '--data-dir', dataDir);
    token = (await meshca('dev-token', '--data-dir', dataDir, '--namespace', 'default', '--service-account', 'app')).trim();
  });

  afterAll(async () => {
    server.child.kill('SIGTERM');
    await server.exited;
    removeDir(dataDir);
  });

  /** A new connection each time: the primary hands connections to the workers in turn. */
  async function issueOnNewConnection(): Promise<string[]> {
    const client = new CaClient({ address: `127.0.0.1:${server.grpcPort}`, rootsPem: roots, serverName: 'localhost' });
    // Closed after the call: the per-peer connection limit (--max-connections-per-peer) would otherwise refuse later ones.
    try {
      return await client.createCertificate({ csrPem: await csrFor('spiffe://cluster.local/ns/default/sa/app'), token });
    } finally {
      client.close();
    }
  }

  const issuingPids = (logs = server.logs) =>
    new Set(logs.flatMap((line) => (line.includes('"issued certificate"') ? [(JSON.parse(line) as { pid: number }).pid] : [])));

  it('serves one gRPC port from two worker processes', async () => {
    // Readiness means the first worker listens; on a loaded CI machine the second may take a few
    // seconds more, and until then the primary hands every connection to the first.
    const deadline = Date.now() + 15_000;
    while (issuingPids().size < 2 && Date.now() < deadline) {
      await issueOnNewConnection();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(issuingPids().size).toBe(2);
    expect(issuingPids().has(server.child.pid!)).toBe(false);
  });

  it('signs with an intermediate activated through one worker on every worker within 5 s', async () => {
    const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const admin = (path: string) => adminCall({ port: server.adminPort, roots, token: adminToken }, 'POST', path, { body: {} });
    const prepared = await admin('/v1/authorities/prepare');
    expect(prepared.status).toBe(201);
    roots = await meshca('bundle', '--data-dir', dataDir); // the prepared root joined the bundle; the serving certificate will chain to it
    const intermediate = prepared
      .json<{ authorities: { id: string; kind: string; sha256Fingerprint: string }[] }>()
      .authorities.find((a) => a.kind === 'intermediate')!;
    expect((await admin(`/v1/authorities/${intermediate.id}/activate`)).status).toBe(200);
    const expected = intermediate.sha256Fingerprint.replace(/:/g, '').toLowerCase();
    const deadline = Date.now() + 5_000;
    let agreeing = 0;
    // Four consecutive new connections (two per worker, round-robin) all signed by the new intermediate.
    while (agreeing < 4) {
      const chain = await issueOnNewConnection();
      const signer = new X509Certificate(chain[1]!).fingerprint256.replace(/:/g, '').toLowerCase();
      agreeing = signer === expected ? agreeing + 1 : 0;
      if (agreeing < 4 && Date.now() > deadline) throw new Error('the workers did not agree on the new intermediate within 5 s');
    }
  });

  it('records every certificate it handed out, and the store verifies', async () => {
    const chains = await Promise.all(Array.from({ length: 8 }, () => issueOnNewConnection()));
    const serials = chains.map((chain) => new X509Certificate(chain[0]!).serialNumber.toLowerCase().replace(/^0+/, ''));
    const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    for (const serial of serials) {
      const found = await adminCall({ port: server.adminPort, roots, token: adminToken }, 'GET', `/v1/certificates/${serial}`);
      expect(found.status, serial).toBe(200);
    }
    await expect(meshca('verify', '--data-dir', dataDir)).resolves.toContain('ok');
  });

  it('answers /metrics, whichever worker a scrape reaches, with the sum over both (gauges combined, not added)', async () => {
    const issuedCount = async () => {
      const body = await scrape(server.monitoringPort);
      return {
        issued: metricValue(body, 'citadel_server_success_cert_issuance_count'),
        rootExpiry: metricValue(body, 'citadel_server_root_cert_expiry_timestamp'),
      };
    };
    const before = await issuedCount();
    const pidsBefore = server.logs.length;
    let issued = 0;
    const issuersSince = () => issuingPids(server.logs.slice(pidsBefore));
    for (; issued < 4 || (issued < 20 && issuersSince().size < 2); issued++) await issueOnNewConnection();
    expect(issuersSince().size, 'both workers issued some of them').toBe(2);
    const earliestRoot = Math.min(...splitPem(roots).map((pem) => Date.parse(new X509Certificate(pem).validTo) / 1000));
    for (let scrapes = 0; scrapes < 4; scrapes++) {
      const now = await issuedCount();
      expect(now.issued).toBe(before.issued + issued);
      expect(now.rootExpiry).toBe(earliestRoot);
    }
  });

  it('starts a killed worker again while the other keeps serving', async () => {
    const victim = [...issuingPids()][0]!;
    process.kill(victim, 'SIGKILL');
    for (let i = 0; i < 4; i++) await expect(issueOnNewConnection()).resolves.toHaveLength(3);
    const restarted = () => server.logs.some((line) => line.includes('died; starting it again'));
    const deadline = Date.now() + 30_000;
    while (!restarted() || server.logs.filter((line) => line.includes('"meshca is serving"')).length < 3) {
      if (Date.now() > deadline) throw new Error('the killed worker was not started again');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  });
});
