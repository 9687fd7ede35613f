import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databasePath } from '../src/app/data-dir.js';
import { openssl } from './support/openssl.js';
import { runMeshca, spawnServer, type ServerProcess } from './support/process.js';
import { removeDir, tempDir, testServerArgs } from './support/server.js';

const TRACE = ['--import', new URL('./support/module-trace.mjs', import.meta.url).href];
/** Code only the servers need: an offline command that loads one of these has pulled in the server. */
const SERVER_CODE = [
  /\/node_modules\/fastify\//,
  /\/node_modules\/@grpc\//,
  /\/dist\/(admin|grpc|kubernetes)\//,
  /-worker\.js$/,
  /\/dist\/app\/server\.js$/,
];

const dirs: string[] = [];
let dir: string;
let dataDir: string;
let server: ServerProcess;

function newDir(): string {
  const d = tempDir('meshca-cli-');
  dirs.push(d);
  return d;
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Runs a command with the module trace; returns its result and the modules it loaded. */
async function traced(args: readonly string[]): Promise<{ code: number; output: string; modules: string[] }> {
  const trace = join(newDir(), 'modules.txt');
  const result = await runMeshca(args, { MESHCA_MODULE_TRACE: trace }, TRACE);
  return { ...result, modules: existsSync(trace) ? readFileSync(trace, 'utf8').split('\n').filter(Boolean) : [] };
}

beforeAll(async () => {
  dir = newDir();
  dataDir = join(dir, 'data');
  server = await spawnServer(dataDir, ['--dev']);
  writeFileSync(join(dir, 'bundle.pem'), (await runMeshca(['bundle', '--data-dir', dataDir])).stdout);
});

afterAll(async () => {
  server?.child.kill('SIGTERM');
  await server?.exited;
  dirs.forEach(removeDir);
});

describe('offline commands', () => {
  const commands: [string, (d: string) => string[]][] = [
    ['status', (d) => ['status', '--data-dir', d]],
    ['verify', (d) => ['verify', '--data-dir', d]],
    ['bundle', (d) => ['bundle', '--data-dir', d]],
    ['crl', (d) => ['crl', '--data-dir', d]],
  ];

  it.each(commands)(
    'meshca %s works beside a live server and loads no server code (Fastify, gRPC, Kubernetes, worker threads)',
    async (_, args) => {
      const { code, output, modules } = await traced(args(dataDir));
      expect(code, output).toBe(0);
      expect(modules.some((m) => m.endsWith('/dist/cli.js'))).toBe(true); // the trace works
      expect(modules.filter((m) => SERVER_CODE.some((p) => p.test(m)))).toEqual([]);
    },
  );

  it('status, verify and bundle leave a stopped data dir byte for byte as it was (read-only: no migrations, no writes)', async () => {
    const d = join(newDir(), 'data');
    const stopped = await spawnServer(d, ['--dev']);
    stopped.child.kill('SIGTERM');
    await stopped.exited;
    const before = { db: sha256(databasePath(d)), files: readdirSync(d).sort() };
    for (const [, args] of commands.filter(([name]) => name !== 'crl')) expect((await runMeshca(args(d))).code).toBe(0);
    expect({ db: sha256(databasePath(d)), files: readdirSync(d).sort() }).toEqual(before);
  });
});

describe('a build without the native ECDSA verifier (native/ not compiled)', () => {
  let cli: string;
  beforeAll(() => {
    const tree = newDir();
    const repo = fileURLToPath(new URL('..', import.meta.url));
    for (const part of ['dist', 'proto', 'migrations', 'package.json']) cpSync(join(repo, part), join(tree, part), { recursive: true });
    symlinkSync(join(repo, 'node_modules'), join(tree, 'node_modules'));
    cli = join(tree, 'dist', 'cli.js');
  });

  it('--ecdsa-verifier native refuses to start, creates nothing and says how to build it', async () => {
    const data = join(newDir(), 'data');
    const start = spawnServer(data, ['--dev', '--ecdsa-verifier', 'native'], {}, cli);
    await expect(start).rejects.toThrow(/exited \(1\)[\s\S]*native ECDSA verifier cannot load[\s\S]*npm run build:native/);
    expect(existsSync(data), 'nothing is created on disk').toBe(false);
  });

  it('the default (auto) warns, falls back to node:crypto and issues', async () => {
    const d = newDir();
    const fallback = await spawnServer(join(d, 'data'), ['--dev'], {}, cli);
    try {
      expect(fallback.logs.join('\n')).toMatch(/native ECDSA verifier unavailable/);
      writeFileSync(join(d, 'bundle.pem'), (await runMeshca(['bundle', '--data-dir', join(d, 'data')])).stdout);
      const token = (
        await runMeshca(['dev-token', '--data-dir', join(d, 'data'), '--namespace', 'demo', '--service-account', 'web'])
      ).stdout.trim();
      const request = ['request', '--addr', `localhost:${fallback.grpcPort}`, '--root', join(d, 'bundle.pem'), '--token', token];
      const result = await runMeshca([...request, '--out', join(d, 'out')]);
      expect(result.code, result.output).toBe(0);
    } finally {
      fallback.child.kill('SIGTERM');
      await fallback.exited;
    }
  });
});

describe('first-hour papercuts', () => {
  let busy: Server;
  let busyPort: number;

  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(() => busy.close());

  it('a port in use names the flag that moves it, and nothing is created on disk', async () => {
    const d = join(newDir(), 'data');
    const result = await runMeshca([
      'serve',
      '--dev',
      ...testServerArgs(d, ['--log-level', 'info', '--monitoring-listen', `127.0.0.1:${busyPort}`]),
    ]);
    expect(result.code).toBe(1);
    expect(result.output).toMatch(/--monitoring-listen 127\.0\.0\.1:\d+ is in use/);
    expect(result.output).toContain('npm start -- --monitoring-listen');
    expect(existsSync(d)).toBe(false);
  });

  it('an unwritable data dir is a clear message, not an EACCES stack', async () => {
    const file = join(newDir(), 'not-a-dir');
    writeFileSync(file, '');
    const result = await runMeshca(['serve', '--dev', ...testServerArgs(join(file, 'data'), ['--log-level', 'info'])]);
    expect(result.code).toBe(1);
    expect(result.output).toMatch(/cannot use .* as the data dir .*pass a --data-dir this user can write/);
    expect(result.output).not.toMatch(/\n\s+at /);
  });

  const usageErrors: { why: string; args: () => string[]; error: RegExp }[] = [
    {
      why: 'bundle --format xml',
      args: () => ['bundle', '--data-dir', dataDir, '--format', 'xml'],
      error: /--format xml is not supported; use one of pem, spiffe/,
    },
    {
      why: '--default-ttl longer than --max-ttl',
      args: () => ['serve', '--dev', '--default-ttl', '2h', '--max-ttl', '1h'],
      error: /--default-ttl 2h is longer than --max-ttl 1h/,
    },
    {
      why: 'dev-token for a data dir that does not exist',
      args: () => ['dev-token', '--data-dir', join(dir, 'does-not-exist'), '--namespace', 'a', '--service-account', 'b'],
      error: /does not exist/,
    },
    { why: 'a boolean flag with a value', args: () => ['serve', '--dev=maybe'], error: /--dev must be true or false/ },
    ...['serve', 'status', 'bundle', 'verify'].map((command) => ({
      why: `${command} --store with a password in the URL`,
      args: () => [command, ...(command === 'serve' ? ['--dev'] : []), '--store', 'postgres://meshca:s3cret@127.0.0.1:1/meshca'],
      error: /--store must not contain a password/,
    })),
    {
      why: 'an --ecdsa-verifier that does not exist',
      args: () => ['serve', '--dev', '--ecdsa-verifier', 'fast'],
      error: /--ecdsa-verifier must be one of auto, native, node/,
    },
    { why: 'verify --store that is not a postgres URL', args: () => ['verify', '--store', 'mysql://db/x'], error: /postgres:\/\/ URL/ },
  ];

  it.each(usageErrors)('$why is refused with exit 2', async ({ args, error }) => {
    const result = await runMeshca(args());
    expect(result.code, result.output).toBe(2);
    expect(result.stderr).toMatch(error);
    expect(result.output).not.toContain('s3cret');
    expect(existsSync(join(dir, 'does-not-exist'))).toBe(false);
  });

  it('--version prints the package version, and the top-level help shows whole descriptions', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect((await runMeshca(['--version'])).stdout).toBe(`meshca ${version}\n`);
    const help = (await runMeshca(['--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('Reads the data dir directly and read-only, so it works with the server running or stopped');
  });

  it('request honours explicit --namespace/--service-account with an unreadable token (the server then rejects the token)', async () => {
    const out = join(newDir(), 'out');
    const result = await runMeshca([
      'request',
      '--addr',
      `localhost:${server.grpcPort}`,
      '--root',
      join(dir, 'bundle.pem'),
      '--token',
      'garbage',
      '--namespace',
      'demo',
      '--service-account',
      'web',
      '--out',
      out,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).not.toContain('cannot read the namespace');
    expect(result.stderr).toMatch(/authentication failed/);
  });

  it('request after a rotation (a stale bundle) says to re-run meshca bundle; an IP address says to add --server-name', async () => {
    const d = newDir();
    openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-subj',
      '/O=stale',
      '-days',
      '1',
      '-keyout',
      join(d, 'k.pem'),
      '-out',
      join(d, 'stale.pem'),
    ]);
    const token = (await runMeshca(['dev-token', '--data-dir', dataDir, '--namespace', 'demo', '--service-account', 'web'])).stdout.trim();
    const request = (addr: string, root: string) =>
      runMeshca(['request', '--addr', addr, '--root', root, '--token', token, '--out', join(d, 'out')]);
    expect((await request(`localhost:${server.grpcPort}`, join(d, 'stale.pem'))).stderr).toMatch(/re-run "meshca bundle/);
    expect((await request(`127.0.0.1:${server.grpcPort}`, join(dir, 'bundle.pem'))).stderr).toMatch(/add --server-name localhost/);
    expect((await request(`localhost:${server.grpcPort}`, join(dir, 'bundle.pem'))).code).toBe(0);
  });

  it('schema errors list the allowed values, and CLI errors point at CLI commands', async () => {
    const admin = ['--admin-url', `https://localhost:${server.adminPort}`, '--data-dir', dataDir];
    const badReason = await runMeshca(['certificates', 'revoke', 'abc', '--reason', 'bogus', ...admin]);
    expect(badReason.stderr).toMatch(/one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation/);
    const unknown = await runMeshca(['authorities', 'activate', 'int-0000000000000000', ...admin]);
    expect(unknown.stderr).toContain('list them with "meshca authorities list"');
    expect(unknown.stderr).not.toContain('/v1/');
  });

  it.each([
    { command: 'revoke', sa: 'cli-revoked', denied: false },
    { command: 'deny', sa: 'cli-denied', denied: true },
  ])('identities $command revokes through the admin API (deny-listed: $denied)', async ({ command, sa, denied }) => {
    const admin = ['--admin-url', `https://localhost:${server.adminPort}`, '--data-dir', dataDir];
    const spiffeId = `spiffe://cluster.local/ns/default/sa/${sa}`;
    const result = await runMeshca(['identities', command, spiffeId, '--reason', 'keyCompromise', '--json', ...admin]);
    expect(result.code, result.output).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([{ spiffeId, revoked: 0, denied }]);
    const list = await runMeshca(['identities', 'denied', '--json', ...admin]);
    expect(list.stdout.includes(spiffeId)).toBe(denied);
  });

  it('backup and restore leave no -wal/-shm files beside the result', async () => {
    const d = newDir();
    const file = join(d, 'backup.db');
    expect((await runMeshca(['backup', '--data-dir', dataDir, '--out', file])).code).toBe(0);
    const restored = join(d, 'restored');
    mkdirSync(restored, { mode: 0o700 });
    const restore = await runMeshca(['restore', '--from', file, '--data-dir', restored]);
    expect(restore.code, restore.output).toBe(0);
    expect(readdirSync(d).sort()).toEqual(['backup.db', 'restored']);
    expect(readdirSync(restored).filter((f) => f.startsWith('meshca.db'))).toEqual(['meshca.db']);
  });
});
