import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { buildServerConfig, SERVE_FLAGS } from '../../src/config.js';
import { parseFlags } from '../../src/flags.js';
import { startServer, type RunningServer } from '../../src/app/server.js';
import { openDevTokenIssuer, type DevTokenIssuer } from '../../src/authn/index.js';
import { CaClient } from '../../src/client/ca-client.js';
import { adminCall, type AdminResponse } from './admin.js';
import { generateWorkloadKey, workloadCsr, type ClientKeyType } from '../../src/client/csr.js';

export function tempDir(prefix = 'meshca-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Server flags for tests: loopback, free ports, quiet logs. Extra args override. */
export function testServerArgs(dataDir: string, extra: readonly string[] = []): string[] {
  return [
    '--data-dir',
    dataDir,
    '--grpc-listen',
    '127.0.0.1:0',
    '--monitoring-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--log-level',
    'silent',
    ...extra,
  ];
}

export interface TestServer {
  readonly server: RunningServer;
  readonly dataDir: string;
  readonly address: string;
  client(): CaClient;
  close(): Promise<void>;
}

/** A real meshca (TLS gRPC, SQLite in dataDir) inside the test process. */
export async function startTestServer(dataDir: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<TestServer> {
  const parsed = parseFlags(SERVE_FLAGS, testServerArgs(dataDir, extra), env, 'serve');
  const config = buildServerConfig(parsed.values);
  const server = await startServer(config, pino({ level: 'silent' }), env);
  const address = `127.0.0.1:${server.grpcAddress.port}`;
  const clients: CaClient[] = [];
  return {
    server,
    dataDir,
    address,
    client: () => {
      const c = new CaClient({ address, rootsPem: server.ca.current().rootsPem, serverName: 'localhost' });
      clients.push(c);
      return c;
    },
    close: async () => {
      clients.forEach((c) => c.close());
      await server.close();
    },
  };
}

const keyCache = new Map<ClientKeyType, Awaited<ReturnType<typeof generateWorkloadKey>>>();

/** A CSR for an identity, with keys generated once per type to keep tests fast. */
export async function csrFor(spiffeId: string, keyType: ClientKeyType = 'ec-p256'): Promise<string> {
  let key = keyCache.get(keyType);
  if (!key) keyCache.set(keyType, (key = await generateWorkloadKey(keyType)));
  return workloadCsr(key, spiffeId);
}

export async function countCertificates(server: RunningServer): Promise<number> {
  let count = 0;
  let cursor: string | undefined;
  do {
    const page = await server.store.listCertificates({ limit: 500, cursor, now: new Date() });
    count += page.items.length;
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return count;
}

/**
 * A `--dev` server as the revocation suites use it: its data dir, development token issuer and
 * admin token, and `call` for its admin API (verified against the current roots; `token: null`
 * sends none).
 */
export interface DevServer {
  /** The running server (a new one after restart). */
  readonly t: TestServer;
  /** A temporary directory the test may write into (removed by close). */
  readonly dir: string;
  readonly data: string;
  readonly devIssuer: DevTokenIssuer;
  readonly adminToken: string;
  call(method: string, path: string, body?: unknown, token?: string | null): Promise<AdminResponse>;
  /** Stops the server and starts it again on the same data dir. */
  restart(): Promise<TestServer>;
  close(): Promise<void>;
}

export async function startDevServer(extra: readonly string[] = []): Promise<DevServer> {
  const dir = tempDir();
  const data = join(dir, 'data');
  const args = ['--dev', ...extra];
  let t = await startTestServer(data, args);
  const adminToken = readFileSync(join(data, 'admin-token'), 'utf8').trim();
  const devIssuer = await openDevTokenIssuer(data);
  return {
    get t() {
      return t;
    },
    dir,
    data,
    devIssuer,
    adminToken,
    call: (method, path, body, token) =>
      adminCall({ port: t.server.adminAddress.port, roots: t.server.ca.current().rootsPem, token: adminToken }, method, path, {
        body,
        token,
      }),
    restart: async () => {
      await t.close();
      t = await startTestServer(data, args);
      return t;
    },
    close: async () => {
      await t.close();
      removeDir(dir);
    },
  };
}
