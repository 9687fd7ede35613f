import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDevTokenIssuer } from '../src/authn/index.js';
import { istioCertificateServiceDefinition } from '../src/grpc/proto.js';
import { openssl, writeChain } from './support/openssl.js';
import { countCertificates, csrFor, removeDir, startTestServer, tempDir, type TestServer } from './support/server.js';

/**
 * meshca's gRPC port (its own HTTP/2 layer) against grpc-go, the gRPC implementation istio-agent
 * uses, built from Debian's golang-google-grpc-dev. .ci/run installs it; in CI a missing toolchain
 * fails this file, elsewhere it is skipped with the reason.
 */

const GRPC_GO_SOURCES = '/usr/share/gocode/src/google.golang.org/grpc';
const CLIENT_SOURCE = join(import.meta.dirname, 'support', 'grpc-go-client', 'main.go');
const IDLE_SECONDS = 2;
const run = promisify(execFile);

function goMissing(): string | undefined {
  if (spawnSync('go', ['version']).status !== 0) return 'the go command is missing';
  if (!existsSync(GRPC_GO_SOURCES)) return `${GRPC_GO_SOURCES} is missing`;
  return undefined;
}

const missing = goMissing();

interface Check {
  readonly check: string;
  readonly code: string;
  readonly message?: string;
  readonly counts?: Record<string, number>;
  readonly state?: string;
}

describe.skipIf(missing !== undefined && !process.env.CI)(`grpc-go as the client${missing ? ` (${missing})` : ''}`, () => {
  let dir: string;
  let t: TestServer;
  let checks: Map<string, Check>;
  let before: number;

  beforeAll(async () => {
    if (missing) throw new Error(`${missing}: install Debian's golang-go and golang-google-grpc-dev (.ci/run does)`);
    dir = tempDir();
    // GOPATH mode: the Debian packages are a GOPATH tree, and nothing is downloaded.
    const gopath = join(dir, 'gopath');
    mkdirSync(join(gopath, 'src', 'grpcgoclient'), { recursive: true });
    copyFileSync(CLIENT_SOURCE, join(gopath, 'src', 'grpcgoclient', 'main.go'));
    const binary = join(dir, 'grpc-go-client');
    await run('go', ['build', '-o', binary, 'grpcgoclient'], {
      cwd: gopath,
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOENV: 'off',
        GOPATH: `${gopath}:/usr/share/gocode`,
        GOFLAGS: '',
        GOCACHE: join(tmpdir(), 'meshca-go-build-cache'),
      },
    });
    t = await startTestServer(join(dir, 'data'), ['--dev', '--rate-limit-per-identity', '0', '--max-connection-idle', `${IDLE_SECONDS}s`]);
    const issuer = await openDevTokenIssuer(join(dir, 'data'));
    writeFileSync(join(dir, 'token.txt'), await issuer.sign({ namespace: 'interop', serviceAccount: 'go', ttlSeconds: 600 }));
    writeFileSync(join(dir, 'ca.pem'), t.server.ca.current().rootsPem);
    const csr = await csrFor('spiffe://cluster.local/ns/interop/sa/go');
    writeFileSync(
      join(dir, 'request.bin'),
      istioCertificateServiceDefinition().CreateCertificate.requestSerialize({ csr, validity_duration: 3600 }),
    );
    before = await countCertificates(t.server);
    // Asynchronous: the server runs in this process and must keep serving while the client runs.
    const { stdout } = await run(binary, [dir, t.address, String(IDLE_SECONDS)], { timeout: 50_000 });
    checks = new Map(
      stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Check)
        .map((c) => [c.check, c]),
    );
  });

  afterAll(async () => {
    await t?.close();
    if (dir) removeDir(dir);
  });

  it('answers 200 calls made at once on one connection (more than its concurrent-stream limit) and records each', async () => {
    expect(checks.get('concurrent')?.counts).toEqual({ OK: 200 });
    // 200, the metadata call and the call after reconnecting.
    expect(await countCertificates(t.server)).toBe(before + 202);
  });

  it('returns a chain that openssl verifies against the roots', () => {
    const response = istioCertificateServiceDefinition().CreateCertificate.responseDeserialize(readFileSync(join(dir, 'response.bin'))) as {
      cert_chain: string[];
    };
    const files = writeChain(dir, response.cert_chain);
    expect(openssl(['verify', '-CAfile', files.roots, '-untrusted', files.untrusted, files.leaf])).toContain(': OK');
  });

  it.each([
    ['bad token', 'Unauthenticated', /bearer token/],
    ['bad csr', 'InvalidArgument', /CSR/],
    ['oversized message', 'ResourceExhausted', /larger than max \(70000 vs 65536\)/],
    ['12 KiB of metadata', 'OK', undefined],
    ['unknown method', 'Unimplemented', undefined],
  ])('%s: %s', (check, code, message) => {
    const got = checks.get(check);
    expect(got?.code).toBe(code);
    if (message) expect(got?.message).toMatch(message);
  });

  it('reconnects after the server’s idle GOAWAY and is served again', () => {
    expect(checks.get('after the idle GOAWAY')).toMatchObject({ code: 'OK', state: 'READY' });
  });
});
