import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaClient } from '../src/client/ca-client.js';
import { trustedRootsPem } from '../src/authority/snapshot.js';
import { openPostgresStore, type PostgresStore } from '../src/store/postgres/store.js';
import { adminCall, type AdminResponse } from './support/admin.js';
import { createTestDatabase, dropTestDatabases, POSTGRES_URL, requirePostgresInCi } from './support/postgres.js';
import { CLI, spawnServer, type ServerProcess } from './support/process.js';
import { csrFor, removeDir, tempDir } from './support/server.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { TEST_ISSUER, TestTokenIssuer } from './support/tokens.js';

const run = promisify(execFile);

requirePostgresInCi();

/** Several `meshca serve` processes on one PostgreSQL, sharing the KEK and admin token files, are one CA. */
/** Retries `attempt` (every 100 ms) until `accept` takes its value; fails after `ms`. */
async function eventually<T>(ms: number, attempt: () => Promise<T>, accept: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await attempt();
    if (accept(value)) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms (last: ${JSON.stringify(value)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The first defined result of `attempt` within `ms`. */
const within = <T>(ms: number, attempt: () => Promise<T | undefined>): Promise<T> =>
  eventually(ms, attempt, (value) => value !== undefined) as Promise<T>;

/** A gauge's value from a replica's /metrics. */
async function gauge(replica: ServerProcess, name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${replica.monitoringPort}/metrics`)).text();
  const value = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1];
  return value === undefined ? undefined : Number(value);
}

describe.runIf(POSTGRES_URL)('replicas on one PostgreSQL', () => {
  const dirs: string[] = [];
  const replicas: ServerProcess[] = [];
  const clients = new Map<ServerProcess, CaClient>();
  let store: PostgresStore;
  let tokens: TestTokenIssuer;
  let adminToken: string;
  let databaseUrl: string;
  let kekFile: string;

  beforeAll(async () => {
    const shared = tempDir();
    dirs.push(shared);
    const url = (databaseUrl = await createTestDatabase());
    kekFile = join(shared, 'kek');
    writeFileSync(kekFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    adminToken = randomBytes(24).toString('base64url');
    const tokenFile = join(shared, 'admin-token');
    writeFileSync(tokenFile, adminToken + '\n', { mode: 0o600 });
    tokens = await TestTokenIssuer.create(shared);
    const args = [
      '--store',
      url,
      '--kek-file',
      kekFile,
      '--admin-token-file',
      tokenFile,
      '--jwks-file',
      tokens.jwksPath,
      '--jwt-issuer',
      TEST_ISSUER,
    ];
    // All three start at once on an empty database: migrations and bootstrap race, and one CA results.
    replicas.push(
      ...(await Promise.all(
        [0, 1, 2].map(() => {
          const dataDir = tempDir();
          dirs.push(dataDir);
          return spawnServer(dataDir, args);
        }),
      )),
    );
    store = await openPostgresStore({ url });
  });

  afterAll(async () => {
    for (const client of clients.values()) client.close();
    for (const replica of replicas) replica.child.kill('SIGKILL');
    await Promise.all(replicas.map((r) => r.exited));
    await store?.close();
    await dropTestDatabases();
    dirs.forEach(removeDir);
  });

  async function roots(): Promise<string> {
    return trustedRootsPem(await store.loadAuthorities()).pem;
  }

  async function client(replica: ServerProcess): Promise<CaClient> {
    let c = clients.get(replica);
    if (!c)
      clients.set(
        replica,
        (c = new CaClient({ address: `127.0.0.1:${replica.grpcPort}`, rootsPem: await roots(), serverName: 'localhost' })),
      );
    return c;
  }

  async function issue(replica: ServerProcess, serviceAccount = 'app'): Promise<string[]> {
    const spiffeId = `spiffe://cluster.local/ns/default/sa/${serviceAccount}`;
    return (await client(replica)).createCertificate({ csrPem: await csrFor(spiffeId), token: await tokens.token({ serviceAccount }) });
  }

  async function admin(replica: ServerProcess, path: string, body: unknown = {}): Promise<AdminResponse> {
    return adminCall({ port: replica.adminPort, roots: await roots(), token: adminToken }, 'POST', path, { body });
  }

  /** The intermediate that signed a chain, by its SHA-256 fingerprint (lowercase hex). */
  const signer = (chain: readonly string[]) => new X509Certificate(chain[1]!).fingerprint256.replace(/:/g, '').toLowerCase();

  it('start together on an empty database and sign with the same intermediate (one JWT-SVID key)', async () => {
    const authorities = await store.loadAuthorities();
    expect(authorities.filter((a) => a.kind === 'root')).toHaveLength(1);
    // The first JWT-SVID key too: created once, by the lease holder, not raced by every replica.
    expect((await store.loadJwtAuthorities()).map((k) => k.state)).toEqual(['active']);
    const chains = await Promise.all(replicas.map((r) => issue(r)));
    expect(new Set(chains.map(signer)).size).toBe(1);
  });

  it('apply a prepare and an activation made through different replicas on all of them within 5 s', async () => {
    const prepared = await admin(replicas[0]!, '/v1/authorities/prepare');
    expect(prepared.status).toBe(201);
    const intermediate = prepared
      .json<{ authorities: { id: string; kind: string; sha256Fingerprint: string }[] }>()
      .authorities.find((a) => a.kind === 'intermediate')!;
    expect((await admin(replicas[1]!, `/v1/authorities/${intermediate.id}/activate`)).status).toBe(200);
    const started = Date.now();
    const expected = intermediate.sha256Fingerprint.replace(/:/g, '').toLowerCase();
    for (const replica of replicas) {
      await within(5_000 - (Date.now() - started), async () => (signer(await issue(replica)) === expected ? true : undefined));
    }
  });

  it('refuse a denied identity on every replica', async () => {
    const denied = await admin(replicas[2]!, '/v1/identities/revoke', {
      spiffeId: 'spiffe://cluster.local/ns/default/sa/evil',
      reason: 'keyCompromise',
      deny: true,
    });
    expect(denied.status).toBe(200);
    for (const replica of replicas) await expect(issue(replica, 'evil')).rejects.toMatchObject({ code: 7 }); // PERMISSION_DENIED
  });

  it('produce one new root when two replicas are asked to prepare at the same moment', async () => {
    const before = (await store.loadAuthorities()).filter((a) => a.kind === 'root').length;
    const responses = await Promise.all([admin(replicas[1]!, '/v1/authorities/prepare'), admin(replicas[2]!, '/v1/authorities/prepare')]);
    expect(responses.map((r) => r.status).sort()).toEqual([201, 409]);
    expect((await store.loadAuthorities()).filter((a) => a.kind === 'root')).toHaveLength(before + 1);
  });

  it('keep serving and lose no acknowledged certificate when the lease holder is killed -9 under load; another replica takes the lease', async () => {
    const lease = async () =>
      (await store.pool.query<{ holder: string; epoch: number }>("SELECT holder, epoch FROM leases WHERE name = 'singleton-jobs'")).rows[0];
    const holder = await within(20_000, lease);
    const victim = replicas.find((r) => holder.holder.includes(`/${r.child.pid}/`))!;
    expect(victim).toBeDefined();
    // /metrics says the same: only the holder reports the lease (sampled every 5 s).
    const leaseGauges = () => Promise.all(replicas.map((r) => gauge(r, 'meshca_singleton_lease_held')));
    const expected = replicas.map((r) => (r === victim ? 1 : 0)).join();
    await eventually(15_000, leaseGauges, (values) => values.join() === expected);
    const survivors = replicas.filter((r) => r !== victim);

    const acknowledged: string[] = [];
    const survivorErrors: unknown[] = [];
    let running = true;
    const load = replicas.map(async (replica) => {
      while (running && !(replica === victim && replica.child.exitCode !== null) && replica.child.signalCode === null) {
        try {
          const chain = await issue(replica);
          acknowledged.push(new X509Certificate(chain[0]!).serialNumber);
        } catch (error) {
          if (replica !== victim) survivorErrors.push(error);
        }
      }
    });
    await within(10_000, async () => (acknowledged.length >= 30 ? true : undefined));
    victim.child.kill('SIGKILL');
    await victim.exited;
    const afterKill = acknowledged.length;
    await within(10_000, async () => (acknowledged.length >= afterKill + 30 ? true : undefined));
    running = false;
    await Promise.all(load);

    expect(survivorErrors).toEqual([]);
    const missing = [];
    for (const serial of acknowledged) if (!(await store.getCertificate(serial, new Date()))) missing.push(serial);
    expect(missing).toEqual([]);
    const next = await within(25_000, async () => {
      const current = await lease();
      return current && current.holder !== holder.holder ? current : undefined;
    });
    expect(survivors.some((r) => next.holder.includes(`/${r.child.pid}/`))).toBe(true);
    expect(next.epoch).toBeGreaterThan(holder.epoch);
  });

  it('pass meshca verify against the shared database while they serve', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'verify', '--store', databaseUrl, '--kek-file', kekFile, '--json']);
    const report = JSON.parse(stdout) as { ok: boolean; results: { name: string; status: string }[] };
    expect(report.results.filter((r) => r.status === 'failed')).toEqual([]);
    expect(report.results.find((r) => r.name === 'authority-keys')?.status).toBe('ok');
    expect(report.ok).toBe(true);
  });

  it('answer meshca status and meshca bundle from the shared database while they serve', async () => {
    const status = JSON.parse((await run(process.execPath, [CLI, 'status', '--store', databaseUrl, '--json'])).stdout) as {
      dataDir: string;
      bundleSequence: number;
      authorities: { id: string }[];
    };
    const authorities = await store.loadAuthorities();
    expect(status.dataDir).toMatch(/^postgres:\/\//);
    expect(status.authorities.map((a) => a.id).sort()).toEqual(authorities.map((a) => a.id).sort());
    expect(status.bundleSequence).toBe(await store.bundleSequence());
    const pem = (await run(process.execPath, [CLI, 'bundle', '--store', databaseUrl])).stdout;
    expect(pem).toBe(trustedRootsPem(authorities).pem);
  });
});

describe.runIf(POSTGRES_URL)('a replica whose PostgreSQL becomes unreachable', () => {
  const dirs: string[] = [];
  let replica: ServerProcess;
  let proxy: TcpProxy;
  let store: PostgresStore;
  let tokens: TestTokenIssuer;
  let client: CaClient;

  beforeAll(async () => {
    const dir = tempDir();
    dirs.push(dir);
    const url = new URL(await createTestDatabase());
    proxy = await TcpProxy.start({ host: url.hostname, port: Number(url.port) });
    store = await openPostgresStore({ url: url.toString() });
    const viaProxy = new URL(url);
    viaProxy.port = String(proxy.port);
    tokens = await TestTokenIssuer.create(dir);
    replica = await spawnServer(dir, [
      '--dev',
      '--store',
      viaProxy.toString(),
      '--store-statement-timeout',
      '2s',
      '--jwks-file',
      tokens.jwksPath,
      '--jwt-issuer',
      TEST_ISSUER,
    ]);
    client = new CaClient({
      address: `127.0.0.1:${replica.grpcPort}`,
      rootsPem: trustedRootsPem(await store.loadAuthorities()).pem,
      serverName: 'localhost',
    });
  });

  afterAll(async () => {
    client?.close();
    replica?.child.kill('SIGKILL');
    await replica?.exited;
    await proxy?.close();
    await store?.close();
    await dropTestDatabases();
    dirs.forEach(removeDir);
  });

  const issue = async () =>
    client.createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/default/sa/app'),
      token: await tokens.token({ serviceAccount: 'app' }),
      deadlineMs: 10_000,
    });
  const readyz = async () => (await fetch(`http://127.0.0.1:${replica.monitoringPort}/readyz`)).status;
  const serial = (chain: readonly string[]) => new X509Certificate(chain[0]!).serialNumber;

  it('answers UNAVAILABLE and is not ready while cut off, issues nothing unrecorded, and recovers by itself', async () => {
    const received = [serial(await issue())];
    expect(await readyz()).toBe(200);

    await proxy.cut();
    const outcome = (promise: Promise<string[]>) =>
      promise.then(
        (chain) => (received.push(serial(chain)), 0),
        (error: { code?: number }) => error.code ?? -1,
      );
    expect(
      await eventually(
        15_000,
        () => outcome(issue()),
        (code) => code === 14,
      ),
    ).toBe(14); // UNAVAILABLE: istio-agent retries
    expect(await eventually(10_000, readyz, (status) => status === 503)).toBe(503);
    expect(
      await eventually(
        10_000,
        () => gauge(replica, 'meshca_store_up'),
        (up) => up === 0,
      ),
    ).toBe(0);

    await proxy.restore();
    await eventually(
      20_000,
      () => outcome(issue()),
      (code) => code === 0,
    );
    expect(await eventually(10_000, readyz, (status) => status === 200)).toBe(200);
    expect(
      await eventually(
        10_000,
        () => gauge(replica, 'meshca_store_up'),
        (up) => up === 1,
      ),
    ).toBe(1);

    for (const s of received) expect(await store.getCertificate(s, new Date()), s).toBeDefined();
  });
});
