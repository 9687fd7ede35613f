import { execFile } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { CaClient } from '../src/client/ca-client.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { databasePath } from '../src/app/data-dir.js';
import { adminCall } from './support/admin.js';
import { openssl } from './support/openssl.js';
import { CLI, spawnServer, type ServerProcess } from './support/process.js';
import { csrFor, removeDir, tempDir } from './support/server.js';

const run = promisify(execFile);
const meshca = (...args: string[]) => run(process.execPath, [CLI, ...args], { env: { ...process.env } });
const dirs: string[] = [];
const procs: ServerProcess[] = [];

function newDir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}

async function started(dataDir: string): Promise<ServerProcess> {
  const p = await spawnServer(dataDir, ['--dev']);
  procs.push(p);
  return p;
}

async function stop(p: ServerProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
  p.child.kill(signal);
  return p.exited;
}

afterAll(() => {
  procs.forEach((p) => p.child.kill('SIGKILL'));
  dirs.forEach(removeDir);
});

describe('meshca CLI', () => {
  it.each(['', 'serve', 'bundle', 'dev-token', 'request'])('"meshca %s --help" documents flags and env vars', async (command) => {
    const { stdout } = await meshca(...(command ? [command] : []), '--help');
    expect(stdout).toContain('Usage: meshca');
    expect(stdout).toContain('MESHCA_');
  });

  it('refuses an unknown flag with a hint', async () => {
    const error = await meshca('serve', '--no-such-flag').catch((e: { code: number; stderr: string }) => e);
    expect(error).toMatchObject({ code: 2 });
    expect((error as { stderr: string }).stderr).toContain('meshca serve --help');
  });

  it('refuses to start without a KEK outside dev mode', async () => {
    const d = newDir();
    writeFileSync(join(d, 'jwks.json'), JSON.stringify({ keys: [] }));
    const error = await meshca(
      'serve',
      '--data-dir',
      join(d, 'data'),
      '--jwks-file',
      join(d, 'jwks.json'),
      '--jwt-issuer',
      'x',
      '--grpc-listen',
      '127.0.0.1:0',
      '--monitoring-listen',
      '127.0.0.1:0',
    ).catch((e: { code: number; stdout: string }) => e);
    expect((error as { code: number }).code).toBe(1);
    expect((error as { stdout: string }).stdout).toContain('openssl rand -base64 32');
  });
});

describe('quick start: serve --dev, bundle, dev-token, request', () => {
  it('gets a certificate with the human client, and keeps the same root across a restart', async () => {
    const d = newDir();
    const data = join(d, 'data');
    let server = await started(data);
    expect(statSync(data).mode & 0o777).toBe(0o700);
    expect(statSync(join(data, 'kek')).mode & 0o777).toBe(0o600);
    const bundle = (await meshca('bundle', '--data-dir', data)).stdout;
    writeFileSync(join(d, 'bundle.pem'), bundle);
    const token = (await meshca('dev-token', '--data-dir', data, '--namespace', 'demo', '--service-account', 'web')).stdout.trim();
    const out = join(d, 'out');
    // A symlink planted at the target must be replaced, never followed; the victim stays untouched.
    mkdirSync(out, { mode: 0o700 });
    writeFileSync(join(d, 'victim'), 'do not overwrite\n', { mode: 0o644 });
    symlinkSync(join(d, 'victim'), join(out, 'key.pem'));
    await meshca(
      'request',
      '--addr',
      `127.0.0.1:${server.grpcPort}`,
      '--server-name',
      'localhost',
      '--root',
      join(d, 'bundle.pem'),
      '--token',
      token,
      '--out',
      out,
    );
    expect(readFileSync(join(d, 'victim'), 'utf8')).toBe('do not overwrite\n');
    expect(lstatSync(join(out, 'key.pem')).isSymbolicLink()).toBe(false);
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(out, 'key.pem'), 'utf8')).toContain('PRIVATE KEY');
    expect(
      openssl(['verify', '-CAfile', join(out, 'root-cert.pem'), '-untrusted', join(out, 'cert-chain.pem'), join(out, 'cert-chain.pem')]),
    ).toContain('OK');
    const serial = new X509Certificate(openssl(['x509', '-in', join(out, 'cert-chain.pem')])).serialNumber.toLowerCase().replace(/^0+/, '');

    expect(await stop(server)).toBe(0);
    server = await started(data);
    expect((await meshca('bundle', '--data-dir', data)).stdout).toBe(bundle);
    const store = openSqliteStore({ path: databasePath(data) });
    expect((await store.getCertificate(serial, new Date()))?.spiffeId).toBe('spiffe://cluster.local/ns/demo/sa/web');
    expect((await store.loadAuthorities()).filter((a) => a.kind === 'root')).toHaveLength(1);
    await store.close();
    await stop(server);
  });
});

describe('graceful lifecycle', () => {
  const retryable = new Set([status.UNAVAILABLE, status.CANCELLED, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED]);

  it('SIGTERM answers in-flight requests (or refuses them retryably), exits 0, and loses nothing', async () => {
    const data = join(newDir(), 'data');
    const server = await started(data);
    const issuer = await openDevTokenIssuer(data);
    const client = new CaClient({
      address: `127.0.0.1:${server.grpcPort}`,
      rootsPem: (await meshca('bundle', '--data-dir', data)).stdout,
      serverName: 'localhost',
    });
    const requests = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => ({
        csrPem: await csrFor(`spiffe://cluster.local/ns/term/sa/s${i}`),
        token: await issuer.sign({ namespace: 'term', serviceAccount: `s${i}`, ttlSeconds: 600 }),
      })),
    );
    const results = requests.map((r) =>
      client.createCertificate(r).then(
        (chain) => new X509Certificate(chain[0]!).serialNumber,
        (e: { code: status }) => e.code,
      ),
    );
    setTimeout(() => server.child.kill('SIGTERM'), 15);
    const outcomes = await Promise.all(results);
    client.close();
    expect(await server.exited).toBe(0);
    const serials = outcomes.filter((o): o is string => typeof o === 'string');
    expect(outcomes.filter((o) => typeof o !== 'string' && !retryable.has(o))).toEqual([]);
    const store = openSqliteStore({ path: databasePath(data) });
    for (const serial of serials) expect(await store.getCertificate(serial.toLowerCase().replace(/^0+/, ''), new Date())).toBeDefined();
    await store.close();
  });

  it('SIGHUP re-issues the serving certificate without dropping connections', async () => {
    const data = join(newDir(), 'data');
    const server = await started(data);
    const issuer = await openDevTokenIssuer(data);
    const roots = (await meshca('bundle', '--data-dir', data)).stdout;
    const servingSerial = () => tlsPeerSerial(server.grpcPort, roots);
    const before = await servingSerial();
    const client = new CaClient({ address: `127.0.0.1:${server.grpcPort}`, rootsPem: roots, serverName: 'localhost' });
    const request = async () =>
      client.createCertificate({
        csrPem: await csrFor('spiffe://cluster.local/ns/hup/sa/a'),
        token: await issuer.sign({ namespace: 'hup', serviceAccount: 'a', ttlSeconds: 600 }),
      });
    await request();
    server.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 1000));
    expect(await servingSerial()).not.toBe(before);
    expect((await request()).length).toBeGreaterThanOrEqual(2);
    client.close();
    await stop(server);
  });
});

function tlsPeerSerial(port: number, roots: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: roots, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      resolve(socket.getPeerX509Certificate()!.serialNumber);
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

describe('crash safety', () => {
  it('after kill -9 with requests in flight, every certificate a client received is in the store', async () => {
    const d = newDir();
    const data = join(d, 'data');
    const server = await started(data);
    const issuer = await openDevTokenIssuer(data);
    const roots = (await meshca('bundle', '--data-dir', data)).stdout;
    const client = new CaClient({ address: `127.0.0.1:${server.grpcPort}`, rootsPem: roots, serverName: 'localhost' });
    const received: string[] = [];
    let killed = false;
    const worker = async (w: number) => {
      for (let i = 0; !killed; i++) {
        const sa = `w${w}-${i % 5}`;
        const chain = await client
          .createCertificate({
            csrPem: await csrFor(`spiffe://cluster.local/ns/crash/sa/${sa}`),
            token: await issuer.sign({ namespace: 'crash', serviceAccount: sa, ttlSeconds: 600 }),
          })
          .catch(() => undefined);
        if (chain) received.push(new X509Certificate(chain[0]!).serialNumber.toLowerCase().replace(/^0+/, ''));
        if (received.length >= 150 && !killed) {
          killed = true;
          server.child.kill('SIGKILL');
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
    expect(await server.exited).toBe('SIGKILL');
    client.close();
    const store = openSqliteStore({ path: databasePath(data) });
    expect(await store.integrityCheck()).toBe('ok');
    const missing = [];
    for (const serial of received) if (!(await store.getCertificate(serial, new Date()))) missing.push(serial);
    await store.close();
    expect(missing).toEqual([]);
    expect(received.length).toBeGreaterThanOrEqual(150);
    const again = await started(data);
    expect(await stop(again)).toBe(0);
  });

  it('revocations and denials acknowledged by the admin API survive kill -9', async () => {
    const data = join(newDir(), 'data');
    const server = await started(data);
    const issuer = await openDevTokenIssuer(data);
    const roots = (await meshca('bundle', '--data-dir', data)).stdout;
    const client = new CaClient({ address: `127.0.0.1:${server.grpcPort}`, rootsPem: roots, serverName: 'localhost' });
    const chain = await client.createCertificate({
      csrPem: await csrFor('spiffe://cluster.local/ns/k/sa/leaked'),
      token: await issuer.sign({ namespace: 'k', serviceAccount: 'leaked', ttlSeconds: 600 }),
    });
    client.close();
    const serial = new X509Certificate(chain[0]!).serialNumber.toLowerCase().replace(/^0+/, '');
    const admin = { port: server.adminPort, roots, token: readFileSync(join(data, 'admin-token'), 'utf8').trim() };
    expect((await adminCall(admin, 'POST', `/v1/certificates/${serial}/revoke`, { body: { reason: 'keyCompromise' } })).status).toBe(200);
    expect(
      (
        await adminCall(admin, 'POST', '/v1/identities/revoke', {
          body: { spiffeId: 'spiffe://cluster.local/ns/k/sa/other', reason: 'keyCompromise', deny: true },
        })
      ).status,
    ).toBe(200);
    server.child.kill('SIGKILL');
    await server.exited;
    const store = openSqliteStore({ path: databasePath(data) });
    expect((await store.getCertificate(serial, new Date()))?.revocationReason).toBe('keyCompromise');
    expect(await store.isDenied('spiffe://cluster.local/ns/k/sa/other')).toBe(true);
    await store.close();
  });
});
