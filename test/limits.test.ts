import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectivityState, status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { CaClient } from '../src/client/ca-client.js';
import { MAX_HEADER_LIST_BYTES } from '../src/grpc/server.js';
import { pino } from 'pino';
import { storeClientStanding } from '../src/admin/client-standing.js';
import { AUDITED_ROUTE_CHARS } from '../src/admin/failure-audit.js';
import { databasePath } from '../src/app/data-dir.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { adminCall, publicBundle } from './support/admin.js';
import { spawnServer } from './support/process.js';
import { countCertificates, csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

const id = (sa: string) => `spiffe://cluster.local/ns/lim/sa/${sa}`;
const running: { t: TestServer; dir: string }[] = [];

async function server(flags: string[]): Promise<TestServer & { token(sa: string): Promise<string>; adminToken: string }> {
  const dir = tempDir();
  const t = await startTestServer(join(dir, 'data'), ['--dev', ...flags]);
  running.push({ t, dir });
  const issuer = await openDevTokenIssuer(join(dir, 'data'));
  const adminToken = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
  return Object.assign(t, { token: (sa: string) => issuer.sign({ namespace: 'lim', serviceAccount: sa, ttlSeconds: 600 }), adminToken });
}

async function codes(t: Awaited<ReturnType<typeof server>>, sas: readonly string[], client = t.client()): Promise<(status | 'OK')[]> {
  const requests = await Promise.all(sas.map(async (sa) => ({ csrPem: await csrFor(id(sa)), token: await t.token(sa) })));
  return Promise.all(
    requests.map((r) =>
      client.createCertificate(r).then(
        () => 'OK' as const,
        (e: { code: status }) => e.code,
      ),
    ),
  );
}

function h2(t: TestServer): ClientHttp2Session {
  const session = http2Connect(`https://127.0.0.1:${t.server.grpcAddress.port}`, {
    ca: t.server.ca.current().rootsPem,
    servername: 'localhost',
  });
  session.on('error', () => undefined);
  return session;
}

async function metricValue(t: TestServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = await t.server.metrics.registry.getSingleMetric(name)?.get();
  const sample = metric?.values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value));
  return sample?.value ?? 0;
}

afterEach(async () => {
  for (const { t, dir } of running.splice(0)) {
    await t.close();
    removeDir(dir);
  }
});

describe('gRPC limits', () => {
  it('--max-in-flight sheds excess concurrent calls with RESOURCE_EXHAUSTED and writes nothing for them', async () => {
    const t = await server(['--max-in-flight', '2']);
    const results = await codes(
      t,
      Array.from({ length: 40 }, (_, i) => `s${i}`),
    );
    const shed = results.filter((c) => c === status.RESOURCE_EXHAUSTED).length;
    expect(shed).toBeGreaterThan(0);
    expect(results.filter((c) => c === 'OK').length + shed).toBe(40);
    expect(await countCertificates(t.server)).toBe(results.filter((c) => c === 'OK').length + 1); // + the serving certificate
  });

  it('--max-active queues calls beyond it instead of shedding them, and does no work for calls that expire while waiting', async () => {
    const t = await server(['--max-active', '1']);
    const client = t.client();
    const waiting = codes(
      t,
      Array.from({ length: 30 }, (_, i) => `q${i}`),
      client,
    );
    const requests = await Promise.all(
      ['late0', 'late1', 'late2'].map(async (sa) => ({ csrPem: await csrFor(id(sa)), token: await t.token(sa), deadlineMs: 1 })),
    );
    const expired = await Promise.all(
      requests.map((r) =>
        client.createCertificate(r).then(
          () => 'OK' as const,
          (e: { code: status }) => e.code,
        ),
      ),
    );
    expect(await waiting).toEqual(Array(30).fill('OK'));
    expect(expired).toEqual(Array(3).fill(status.DEADLINE_EXCEEDED));
    expect(await countCertificates(t.server)).toBe(30 + 1); // + the serving certificate
  });

  it('--rate-limit-per-identity limits one identity without affecting others', async () => {
    const t = await server(['--rate-limit-per-identity', '1']);
    const client = t.client();
    const results: (status | 'OK')[] = [];
    for (let i = 0; i < 8; i++) results.push(...(await codes(t, ['noisy'], client)));
    expect(results.slice(0, 5)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    expect(results.slice(5)).toContain(status.RESOURCE_EXHAUSTED);
    expect(await codes(t, ['quiet'], client)).toEqual(['OK']);
  });

  it('limits each identity by default, so one token cannot fill the disk', async () => {
    const t = await server([]);
    const results = await codes(
      t,
      Array.from({ length: 80 }, () => 'greedy'),
    );
    expect(results.filter((c) => c === status.RESOURCE_EXHAUSTED).length).toBeGreaterThan(0);
    expect(await codes(t, ['modest'])).toEqual(['OK']);
  });

  it.each([
    { minFree: '100%', expected: status.UNAVAILABLE, low: 1 },
    { minFree: '0', expected: 'OK' as const, low: 0 },
  ])('--min-free-disk $minFree: issuance answers $expected (real statfs of the data volume)', async ({ minFree, expected, low }) => {
    const t = await server(['--min-free-disk', minFree]);
    const before = await countCertificates(t.server);
    expect(await codes(t, ['disk'])).toEqual([expected]);
    expect(await countCertificates(t.server)).toBe(before + (expected === 'OK' ? 1 : 0));
    expect(await metricValue(t, 'meshca_data_volume_low')).toBe(low);
  });

  it('--max-concurrent-streams and the header-list bound are advertised in HTTP/2 SETTINGS', async () => {
    const t = await server(['--max-concurrent-streams', '3']);
    const session = h2(t);
    const settings = await new Promise<{ maxConcurrentStreams?: number; maxHeaderListSize?: number }>((resolve, reject) => {
      session.once('remoteSettings', resolve);
      session.once('error', reject);
    });
    session.close();
    expect(settings.maxConcurrentStreams).toBe(3);
    expect(settings.maxHeaderListSize).toBe(MAX_HEADER_LIST_BYTES);
    expect(await codes(t, ['a', 'b', 'c', 'd', 'e', 'f'])).toEqual(Array(6).fill('OK'));
  });

  it.each([
    { flag: '--max-connections-per-peer', reason: 'per_peer' },
    { flag: '--max-connections', reason: 'total' },
  ])('$flag refuses connections beyond it before TLS, counts them, and serves the admitted ones', async ({ flag, reason }) => {
    const t = await server([flag, '2']);
    const sessions = Array.from({ length: 3 }, () => h2(t));
    const outcomes = await Promise.all(
      sessions.map(
        (s) =>
          new Promise<string>((resolve) => {
            s.once('remoteSettings', () => resolve('open'));
            s.once('error', () => resolve('refused'));
            s.once('close', () => resolve('refused'));
          }),
      ),
    );
    expect(outcomes.sort()).toEqual(['open', 'open', 'refused']);
    expect(await metricValue(t, 'meshca_grpc_refused_connections_total', { reason })).toBe(1);
    sessions.forEach((s) => s.destroy());
    await new Promise((r) => setTimeout(r, 200));
    expect(await codes(t, ['after'])).toEqual(['OK']); // the closed ones freed their slots
  });

  it('--request-read-timeout cancels a call whose request message never arrives, and counts it', async () => {
    const t = await server(['--request-read-timeout', '300ms']);
    const session = h2(t);
    const stream = session.request(
      {
        ':method': 'POST',
        ':path': '/istio.v1.auth.IstioCertificateService/CreateCertificate',
        'content-type': 'application/grpc',
        te: 'trailers',
      },
      { endStream: false },
    );
    const [headers, closed] = await Promise.all([
      new Promise<Record<string, unknown>>((resolve) => stream.once('response', resolve)),
      new Promise<number>((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1))),
    ]);
    stream.resume();
    session.close();
    expect(headers['grpc-status']).toBe(String(status.DEADLINE_EXCEEDED));
    expect(closed).toBe(0); // reset with NO_ERROR: the server frees the half-open stream
    expect(await metricValue(t, 'meshca_grpc_request_read_timeouts_total')).toBe(1);
    expect(await codes(t, ['prompt'])).toEqual(['OK']);
  });

  it.each([
    ['--max-connection-idle', 'idle'],
    ['--max-connection-age', 'old'],
  ])('%s closes %s client connections (GOAWAY)', async (flag) => {
    const t = await server([flag, '1s']);
    const client = new CaClient({ address: t.address, rootsPem: t.server.ca.current().rootsPem, serverName: 'localhost' });
    expect(await codes(t, ['conn'], client)).toEqual(['OK']);
    const channel = (
      client as unknown as { stub: { getChannel(): { getConnectivityState(b: boolean): connectivityState } } }
    ).stub.getChannel();
    expect(channel.getConnectivityState(false)).toBe(connectivityState.READY);
    await new Promise((r) => setTimeout(r, 2500));
    expect(channel.getConnectivityState(false)).not.toBe(connectivityState.READY);
    client.close();
  });
});

describe('admin limits', () => {
  it('--admin-body-limit refuses large bodies with 413', async () => {
    const t = await server(['--admin-body-limit', '1024']);
    const res = await adminCall(
      { port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token: t.adminToken },
      'POST',
      '/v1/identities/revoke',
      {
        body: { spiffeId: id('x'), reason: 'keyCompromise', padding: 'x'.repeat(4096) },
      },
    );
    expect(res.status).toBe(413);
  });

  it("never refuses the correct token for others' failures; failures over the global budget are answered late and audited once per source", async () => {
    const dir = tempDir();
    const proc = await spawnServer(join(dir, 'data'), ['--dev', '--admin-max-auth-failures', '2']);
    try {
      const roots = await publicBundle(proc.adminPort);
      const target = { port: proc.adminPort, roots, token: readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim() };
      const probe = `/v1/certificates/${'a'.repeat(6000)}?token=leaked-secret`;
      const attempts = [];
      for (let i = 0; i < 4; i++) {
        const started = performance.now();
        const res = await adminCall(target, 'GET', probe, { token: 'wrong' });
        attempts.push({ status: res.status, ms: performance.now() - started });
      }
      expect(attempts.map((a) => a.status)).toEqual([401, 401, 401, 401]);
      expect(attempts[2]!.ms).toBeGreaterThanOrEqual(240); // over budget: 250 ms, then 500 ms
      expect(attempts[3]!.ms).toBeGreaterThanOrEqual(490);
      expect((await adminCall(target, 'GET', '/v1/authorities')).status).toBe(200);
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
      expect(proc.logs.join('\n')).not.toContain('leaked-secret');
      const store = openSqliteStore({ path: databasePath(join(dir, 'data')), logger: pino({ level: 'silent' }) });
      const rows = (await store.listAudit({ limit: 100 })).items.filter((e) => e.action === 'admin.authenticate');
      await store.close();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ actor: 'ip:127.0.0.1', result: 'denied', details: { count: 4 } });
      expect(rows[0]!.target.length).toBeLessThanOrEqual(AUDITED_ROUTE_CHARS);
      expect(JSON.stringify(rows[0])).not.toContain('leaked-secret');
    } finally {
      proc.child.kill('SIGKILL');
      removeDir(dir);
    }
  });

  it('refuses to start with an admin token shorter than 32 characters and says how to make one', async () => {
    const dir = tempDir();
    running.push({ t: { close: async () => undefined } as unknown as TestServer, dir });
    const file = join(dir, 'admin-token');
    writeFileSync(file, 'short-but-not-empty\n', { mode: 0o600 });
    await expect(startTestServer(join(dir, 'data'), ['--dev', '--admin-token-file', file])).rejects.toThrow(
      /at least 32 .*openssl rand -base64 32/,
    );
  });

  it('--admin-client-ids requires a mesh client certificate with an allowed SPIFFE ID', async () => {
    const t = await server(['--admin-client-ids', id('operator')]);
    const target = { port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token: t.adminToken };
    expect((await adminCall(target, 'GET', '/v1/authorities')).status).toBe(401);
    const { workloadCredentials } = await import('./support/mtls.js');
    const operator = await workloadCredentials(t.client(), id('operator'), await t.token('operator'));
    const intruder = await workloadCredentials(t.client(), id('intruder'), await t.token('intruder'));
    expect((await adminCall({ ...target, client: operator }, 'GET', '/v1/authorities')).status).toBe(200);
    expect((await adminCall({ ...target, client: intruder }, 'GET', '/v1/authorities')).status).toBe(401);
  });

  it.each([
    {
      what: 'revoked',
      status: 401,
      code: 'ERR_ADMIN_CLIENT_REVOKED',
      act: (serial: string) => ['POST', `/v1/certificates/${serial}/revoke`, { reason: 'keyCompromise' }] as const,
    },
    {
      what: 'deny-listed',
      status: 403,
      code: 'ERR_ADMIN_CLIENT_DENIED',
      act: () => ['POST', '/v1/identities/revoke', { spiffeId: id('operator'), reason: 'keyCompromise', deny: true }] as const,
    },
  ])('--admin-client-ids refuses a $what client certificate within two seconds', async ({ status: expected, code, act }) => {
    const t = await server(['--admin-client-ids', id('operator')]);
    const target = { port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token: t.adminToken };
    const { workloadCredentials } = await import('./support/mtls.js');
    const operator = await workloadCredentials(t.client(), id('operator'), await t.token('operator'));
    const serial = new X509Certificate(operator.cert).serialNumber;
    expect((await adminCall({ ...target, client: operator }, 'GET', '/v1/authorities')).status).toBe(200);
    const [method, path, body] = act(serial);
    expect((await adminCall({ ...target, client: operator }, method, path, { body })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100)); // the standing cache holds verdicts for at most a second
    const refused = await adminCall({ ...target, client: operator }, 'GET', '/v1/authorities');
    expect(refused.status).toBe(expected);
    expect(refused.json()).toMatchObject({ code });
  });

  it('refuses an admin client certificate outside its validity', async () => {
    const t = await server([]);
    const { workloadCredentials } = await import('./support/mtls.js');
    const operator = await workloadCredentials(t.client(), id('operator'), await t.token('operator'));
    const cert = new X509Certificate(operator.cert);
    const later = Date.parse(cert.validTo) + 1000;
    const standing = storeClientStanding({ certificate: async () => undefined, isDenied: async () => false }, 1000, () => later);
    expect(await standing(cert, id('operator'))).toMatchObject({ status: 401, code: 'ERR_ADMIN_CLIENT_EXPIRED' });
    const now = storeClientStanding({ certificate: async () => undefined, isDenied: async () => false });
    expect(await now(cert, id('operator'))).toBeUndefined();
  });
});
