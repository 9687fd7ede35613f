#!/usr/bin/env node
// @ts-check
// `npm run demo`: a zero-downtime root rotation, end to end, with live mutual TLS at every step.
//
// Starts a throwaway meshca (dist/cli.js serve --dev) in a temp dir on free loopback ports, gets
// certificates for two workloads the way istio-agent does, connects them with real mTLS (node:tls,
// each side verifying the other against its trust bundle and the peer's SPIFFE ID), then rotates the
// root through the admin API with the `meshca authorities` CLI: prepare → activate → re-issue →
// remove. One long-lived TLS connection stays open throughout and exchanges a message at every step,
// and a fresh handshake is made at every step. Exits 0 on success, 1 with the reason on failure, and
// always stops the server and deletes the temp dir (also on Ctrl-C).
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { spawnMeshca } from './lib/meshca-process.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const dist = (path) => import(pathToFileURL(join(ROOT, 'dist', path)).href);
const TRUST_DOMAIN = 'cluster.local';
const FRONTEND = `spiffe://${TRUST_DOMAIN}/ns/demo/sa/frontend`;
const BACKEND = `spiffe://${TRUST_DOMAIN}/ns/demo/sa/backend`;
const DEADLINE_MS = 90_000;

// ---------------------------------------------------------------------------------------------
// output

let stepNo = 0;
const step = (title) => process.stdout.write(`\n[${++stepNo}] ${title}\n`);
const say = (line = '') => process.stdout.write(`    ${line}\n`);
const ok = (line) => say(`✓ ${line}`);
const cmd = (args) => say(`$ meshca ${args.join(' ')}`);

class DemoError extends Error {}
const fail = (message) => {
  throw new DemoError(message);
};

// ---------------------------------------------------------------------------------------------
// cleanup (always, also on Ctrl-C)

/** @type {{ dir?: string, server?: import('node:child_process').ChildProcess, serverExited?: Promise<unknown>, sockets: Set<import('node:net').Socket>, tlsServer?: import('node:tls').Server, clients: Array<{ close(): void }> }} */
const resources = { dir: undefined, server: undefined, serverExited: undefined, sockets: new Set(), tlsServer: undefined, clients: [] };
let cleanedUp = false;

async function cleanup() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const socket of resources.sockets) socket.destroy();
  resources.tlsServer?.close();
  for (const client of resources.clients) client.close();
  const child = resources.server;
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await resources.serverExited;
    clearTimeout(killer);
  }
  if (resources.dir) rmSync(resources.dir, { recursive: true, force: true });
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\ninterrupted (${signal}): stopping the demo CA and deleting ${resources.dir ?? 'the temp dir'}\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// the throwaway CA

const serverLogs = [];

function startCa(dataDir) {
  const args = [
    'serve',
    '--dev',
    '--data-dir',
    dataDir,
    '--grpc-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--monitoring-listen',
    '127.0.0.1:0',
  ];
  cmd(args);
  const server = spawnMeshca(args, { onLine: (line) => serverLogs.push(line) });
  resources.server = server.child;
  resources.serverExited = server.exited;
  return server.ready.catch((error) => {
    throw new DemoError(error.message);
  });
}

/** Runs the meshca CLI against the demo CA (the commands of the rotation runbook). */
function meshca(args, { show = true, allowFailure = false } = {}) {
  if (show) cmd(args);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      if (code !== 0 && !allowFailure)
        return reject(new DemoError(`"meshca ${args.join(' ')}" failed (exit ${code}): ${stderr.trim() || error?.message}`));
      resolve({ code, stdout, stderr: stderr.trim() });
    });
  });
}

/** GET a public admin endpoint, verifying the server against the roots the caller trusts. */
function adminGet(port, path, roots) {
  return new Promise((resolve, reject) => {
    const req = request({ host: 'localhost', port, path, ca: roots, servername: 'localhost' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new DemoError(`GET ${path}: HTTP ${res.statusCode} ${body}`))));
    });
    req.on('error', (e) => reject(new DemoError(`GET ${path}: ${e.message}`)));
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// certificates

const splitPem = (pem) => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
const fingerprintId = (prefix, pem) => `${prefix}-${createHash('sha256').update(new X509Certificate(pem).raw).digest('hex').slice(0, 16)}`;
const rootId = (pem) => fingerprintId('root', pem);
const rootIds = (bundlePem) => splitPem(bundlePem).map(rootId);

/** Every root ever seen, so we can name the root a leaf chains to even after it was removed. */
const knownRoots = new Map();
function remember(bundlePem) {
  for (const pem of splitPem(bundlePem)) knownRoots.set(rootId(pem), new X509Certificate(pem));
}

/** "int-… → root-…": the intermediate a leaf comes with and the root that intermediate verifies under. */
function chainOf(credentials) {
  const [, intermediatePem] = splitPem(credentials.cert);
  const intermediate = new X509Certificate(intermediatePem);
  const root = [...knownRoots.entries()].find(([, cert]) => intermediate.checkIssued(cert) && intermediate.verify(cert.publicKey));
  return { intermediate: fingerprintId('int', intermediatePem), root: root ? root[0] : 'an unknown root' };
}

const describe = (name, c) => {
  const { intermediate, root } = chainOf(c);
  return `${name.padEnd(8)} ${c.spiffeId}  leaf → ${intermediate} → ${root}  (valid until ${c.notAfter.toISOString()})`;
};

// ---------------------------------------------------------------------------------------------
// mutual TLS

const uriSan = (x509) =>
  (x509?.subjectAltName ?? '')
    .split(', ')
    .find((s) => s.startsWith('URI:'))
    ?.slice(4);

/** Envoy-style SAN matching: the chain is verified by TLS, the SPIFFE ID here. */
const expectPeer = (expected) => (_host, cert) => {
  const seen = (cert.subjectaltname ?? '')
    .split(', ')
    .find((s) => s.startsWith('URI:'))
    ?.slice(4);
  return seen === expected ? undefined : new Error(`peer is ${seen ?? 'without a SPIFFE ID'}, expected ${expected}`);
};

/** The backend: a TLS server that requires and verifies a client certificate. */
async function startBackend(credentials) {
  const errors = [];
  // The chain check is done here rather than by rejectUnauthorized only to log why a client is refused.
  const server = createServer(
    { ...context(credentials), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' },
    (socket) => {
      resources.sockets.add(socket);
      socket.on('close', () => resources.sockets.delete(socket));
      if (!socket.authorized) {
        errors.push(`client certificate refused: ${socket.authorizationError}`);
        return socket.destroy();
      }
      const peer = uriSan(socket.getPeerX509Certificate());
      if (peer !== FRONTEND) {
        errors.push(`client ${peer ?? 'without a SPIFFE ID'} refused: only ${FRONTEND} may connect`);
        return socket.destroy();
      }
      socket.setEncoding('utf8');
      let buffered = '';
      socket.on('data', (d) => {
        buffered += d;
        let nl;
        while ((nl = buffered.indexOf('\n')) !== -1) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          socket.write(`${line.replace(/^ping/, 'pong')} (backend saw ${peer})\n`);
        }
      });
      socket.on('error', () => undefined);
    },
  );
  server.on('tlsClientError', (e) => errors.push(e.message));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  resources.tlsServer = server;
  return {
    server,
    port: /** @type {import('node:net').AddressInfo} */ (server.address()).port,
    errors,
    update: (c) => server.setSecureContext(context(c)),
  };
}

const context = (c) => ({ key: c.key, cert: c.cert, ca: c.bundle });

/** A frontend connection; resolves once both sides are authenticated. */
function dial(port, credentials) {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port, ...context(credentials), checkServerIdentity: expectPeer(BACKEND), minVersion: 'TLSv1.3' },
      () => resolve(socket),
    );
    socket.setEncoding('utf8');
    socket.once('error', reject);
    socket.once('close', () => reject(new Error('the backend closed the connection during the handshake')));
  });
}

function exchange(socket, message) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new DemoError(`no answer to "${message}" within 5 s`)), 5000);
    socket.once('data', (d) => {
      clearTimeout(timer);
      resolve(String(d).trim());
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error('the peer closed the connection')));
    socket.write(`${message}\n`);
  });
}

// ---------------------------------------------------------------------------------------------
// the demo

async function main() {
  const watchdog = setTimeout(() => {
    process.stderr.write(`\nDEMO FAILED: it did not finish within ${DEADLINE_MS / 1000} s\n`);
    void cleanup().finally(() => process.exit(1));
  }, DEADLINE_MS);
  watchdog.unref();
  const { CaClient } = await dist('client/ca-client.js');
  const { generateWorkloadKey, privateKeyPemOf, workloadCsr } = await dist('client/csr.js');
  const { openDevTokenIssuer } = await dist('authn/index.js');

  process.stdout.write('meshca demo: a full root rotation while two workloads keep talking mutual TLS\n');
  resources.dir = mkdtempSync(join(tmpdir(), 'meshca-demo-'));
  const dataDir = join(resources.dir, 'data');
  say(`temp dir: ${resources.dir} (deleted at the end)`);

  // 1. the CA ---------------------------------------------------------------------------------
  step('Start a throwaway CA');
  const { grpcPort, adminPort } = await startCa(dataDir);
  const adminUrl = `https://localhost:${adminPort}`;
  const admin = ['--admin-url', adminUrl, '--data-dir', dataDir];
  const { stdout: bundle } = await meshca(['bundle', '--data-dir', dataDir], { show: false });
  remember(bundle);
  say(`serving: gRPC 127.0.0.1:${grpcPort} (Istio CA API), admin ${adminUrl}`);
  const bundleInfo = async (roots) => {
    const spiffe = JSON.parse(await adminGet(adminPort, '/v1/bundle?format=spiffe', roots));
    const pem = await adminGet(adminPort, '/v1/bundle', roots);
    remember(pem);
    return { sequence: spiffe.spiffe_sequence, pem, roots: rootIds(pem) };
  };
  let trust = await bundleInfo(bundle);
  say(`trust bundle: sequence ${trust.sequence}, roots [${trust.roots.join(', ')}]`);
  const oldRoot = trust.roots[0];

  // 2. workload certificates -------------------------------------------------------------------
  const tokens = await openDevTokenIssuer(dataDir);
  /** istio-agent's part: key, CSR, CreateCertificate with a ServiceAccount token; the last cert_chain element is the bundle. */
  const issue = async (spiffeId) => {
    const [, , , , ns, , sa] = spiffeId.split('/');
    const client = new CaClient({ address: `127.0.0.1:${grpcPort}`, rootsPem: trust.pem, serverName: 'localhost' });
    resources.clients.push(client);
    const key = await generateWorkloadKey('ec-p256');
    const chain = await client
      .createCertificate({
        csrPem: await workloadCsr(key, spiffeId),
        token: await tokens.sign({ namespace: ns, serviceAccount: sa, ttlSeconds: 600 }),
      })
      .catch((e) => fail(`CreateCertificate for ${spiffeId} failed: ${e.message}`))
      .finally(() => client.close());
    const credentials = {
      spiffeId,
      key: await privateKeyPemOf(key),
      cert: chain.slice(0, -1).join(''),
      bundle: chain[chain.length - 1],
      notAfter: new Date(new X509Certificate(chain[0]).validTo),
    };
    remember(credentials.bundle);
    return credentials;
  };
  step('Issue certificates for two workloads (CreateCertificate, as istio-agent does)');
  let frontend = await issue(FRONTEND);
  let backend = await issue(BACKEND);
  const frontendV1 = frontend;
  say(describe('frontend', frontend));
  say(describe('backend', backend));

  // 3. mTLS -------------------------------------------------------------------------------------
  step('Connect them with mutual TLS');
  const backendServer = await startBackend(backend);
  say(
    `backend listens on 127.0.0.1:${backendServer.port}: TLS 1.3, requires a client certificate, verifies it against its bundle, accepts only ${FRONTEND}`,
  );
  const live = await dial(backendServer.port, frontend).catch((e) =>
    fail(`the first mTLS handshake failed: ${e.message}; backend: ${backendServer.errors.join('; ')}`),
  );
  resources.sockets.add(live);
  live.on('error', () => undefined);
  say(
    `long-lived connection open: frontend sees ${uriSan(live.getPeerX509Certificate())}, ${live.getProtocol()}, ${live.getCipher().name}`,
  );
  const openedAt = Date.now();
  let messages = 0;
  let handshakes = 0;
  const checkLive = async () => {
    const reply = await exchange(live, `ping ${++messages}`).catch((e) => fail(`the long-lived connection broke: ${e.message}`));
    if (!reply.startsWith(`pong ${messages} `)) fail(`unexpected reply on the long-lived connection: ${reply}`);
    ok(`long-lived connection (same TLS session since step 3): "ping ${messages}" → "${reply}"`);
  };
  const checkFresh = async (note = '') => {
    const before = backendServer.errors.length;
    const socket = await dial(backendServer.port, frontend).catch((e) =>
      fail(
        `fresh mTLS handshake failed: ${e.message}${backendServer.errors.length > before ? `; backend: ${backendServer.errors.slice(before).join('; ')}` : ''}`,
      ),
    );
    resources.sockets.add(socket);
    const reply = await exchange(socket, 'ping fresh');
    socket.end();
    handshakes++;
    if (!reply.includes(FRONTEND)) fail(`unexpected reply on the fresh connection: ${reply}`);
    ok(
      `fresh handshake: frontend (${chainOf(frontend).root}) ⇄ backend (${chainOf(backend).root}) — frontend saw ${uriSan(socket.getPeerX509Certificate())}, backend saw ${FRONTEND}${note}`,
    );
  };
  await checkLive();
  await checkFresh();

  // 4. prepare ----------------------------------------------------------------------------------
  step('Prepare a new root and intermediate');
  const prepared = JSON.parse((await meshca(['authorities', 'prepare', ...admin, '--json'])).stdout).authorities;
  const newRoot = prepared.find((a) => a.kind === 'root')?.id ?? fail('prepare returned no root');
  const newInt = prepared.find((a) => a.kind === 'intermediate')?.id;
  const before = trust;
  trust = await bundleInfo(trust.pem);
  say(`prepared ${newRoot} (+ ${newInt}): state "prepared" = trusted, not signing yet`);
  say(`trust bundle: sequence ${before.sequence} → ${trust.sequence}, roots [${trust.roots.join(', ')}]`);
  if (trust.sequence !== before.sequence + 1 || trust.roots.length !== 2)
    fail('the bundle should hold both roots with the sequence bumped by one');
  say('workloads refresh their bundle (GET /v1/bundle; istio-agent gets it with its next certificate)');
  frontend = { ...frontend, bundle: trust.pem };
  backend = { ...backend, bundle: trust.pem };
  backendServer.update(backend);
  await checkLive();
  await checkFresh(' (dual-root bundles)');

  // 5. activate ---------------------------------------------------------------------------------
  step('Activate the new root');
  await meshca(['authorities', 'activate', newRoot, ...admin]);
  const afterActivate = await bundleInfo(trust.pem);
  say(`new certificates now chain to ${newRoot}; ${oldRoot} is "retired" and still trusted`);
  say(`trust bundle: sequence ${afterActivate.sequence} (unchanged), roots [${afterActivate.roots.join(', ')}]`);
  if (afterActivate.sequence !== trust.sequence) fail('activation must not change the bundle');
  trust = afterActivate;
  await checkLive();
  await checkFresh();

  // 6. re-issue one workload --------------------------------------------------------------------
  step('Re-issue one workload: backend renews its certificate');
  backend = await issue(BACKEND);
  backendServer.update(backend);
  say(describe('backend', backend));
  say(describe('frontend', frontend));
  if (chainOf(backend).root !== newRoot || chainOf(frontend).root !== oldRoot)
    fail('expected backend on the new root and frontend on the old one');
  say('the two workloads now chain to different roots; the dual-root bundle lets each verify the other');
  await checkLive();
  await checkFresh(' (across roots)');

  // 7. remove -----------------------------------------------------------------------------------
  step(`Remove the old root ${oldRoot}`);
  const refused = await meshca(['authorities', 'remove', oldRoot, ...admin], { allowFailure: true });
  if (refused.code === 0) fail('removal should be refused while unexpired certificates chain to the old root');
  say(`refused, as it should be: ${refused.stderr.replace(/^meshca authorities: /, '')}`);
  say('(frontend still uses a certificate from the old root; removing the root now would cut it off)');
  frontend = await issue(FRONTEND);
  say(`frontend renews (istio-agent does this at about half of the certificate lifetime):`);
  say(describe('frontend', frontend));
  const listed = JSON.parse((await meshca(['authorities', 'list', ...admin, '--json'], { show: false })).stdout).authorities;
  const remaining = listed.find((a) => a.id === oldRoot)?.unexpiredIssuedCount ?? 0;
  say(`no workload uses the old root any more, but ${remaining} superseded certificates issued under it are still unexpired`);
  say("(the workloads' previous certificates and meshca's own previous serving certificates, valid for up to 24 h);");
  say('in production you wait for them to expire (or let --auto-rotate do it); the demo does not wait, so it FORCES the removal:');
  const removed = JSON.parse((await meshca(['authorities', 'remove', oldRoot, '--force', ...admin, '--json'])).stdout);
  const beforeRemove = trust;
  trust = await bundleInfo(newRootPem(trust.pem, newRoot));
  say(`removed ${removed.removed.join(', ')} (forced over ${removed.unexpiredCertificates} unexpired superseded certificates)`);
  say(`trust bundle: sequence ${beforeRemove.sequence} → ${trust.sequence}, roots [${trust.roots.join(', ')}]`);
  if (trust.sequence !== beforeRemove.sequence + 1 || trust.roots.join() !== newRoot) fail(`the bundle should hold only ${newRoot} now`);
  ok(`the admin API was verified against ${newRoot} alone: meshca re-issued its own serving certificates on activation`);
  say('workloads refresh their bundle: it holds only the new root');
  frontend = { ...frontend, bundle: trust.pem };
  backend = { ...backend, bundle: trust.pem };
  backendServer.update(backend);
  await checkLive();
  await checkFresh(' (new-root-only bundles)');
  // In TLS 1.3 the server verifies the client certificate after the client finished its side of the
  // handshake, so the rejection shows on the first exchange.
  const errorsBefore = backendServer.errors.length;
  const stale = await dial(backendServer.port, { ...frontendV1, bundle: trust.pem }).then(
    async (socket) => {
      resources.sockets.add(socket);
      socket.on('error', () => undefined);
      return exchange(socket, 'ping stale').then(
        () => undefined,
        (e) => e.message,
      );
    },
    (e) => e.message,
  );
  if (stale === undefined) fail("frontend's old certificate (from the removed root) was still accepted");
  await new Promise((resolve) => setTimeout(resolve, 100)); // let the backend report why
  const why = backendServer.errors.slice(errorsBefore).join('; ') || stale;
  ok(`frontend's superseded certificate from ${oldRoot} is now rejected by the backend: ${why}`);

  // 8. summary ----------------------------------------------------------------------------------
  step('Done');
  say(
    `long-lived connection: ${messages} messages over ${((Date.now() - openedAt) / 1000).toFixed(1)} s, one TLS session, never re-established`,
  );
  say(
    `fresh handshakes: ${handshakes} of ${handshakes} succeeded; the root changed from ${oldRoot} to ${newRoot} with no failed connection`,
  );
  say(
    '(an established TLS session is not re-verified; new handshakes are, which is why the bundle holds both roots until the old one is removed)',
  );
  say('runbook: docs/operations/rotation.md');
  clearTimeout(watchdog);
}

/** Only the new root of a PEM bundle (to verify the admin API after the old root is gone). */
function newRootPem(bundlePem, id) {
  return splitPem(bundlePem)
    .filter((pem) => rootId(pem) === id)
    .join('');
}

try {
  await main();
  await cleanup();
  process.stdout.write('\nmeshca demo: OK — the rotation completed with uninterrupted mTLS\n');
  process.exit(0);
} catch (error) {
  if (interrupted) await new Promise(() => undefined); // the signal handler cleans up and exits 130
  process.stderr.write(`\nDEMO FAILED: ${error instanceof DemoError ? error.message : (error?.stack ?? String(error))}\n`);
  const tail = serverLogs.join('\n').split('\n').filter(Boolean).slice(-15);
  if (tail.length > 0) process.stderr.write(`last meshca log lines:\n${tail.map((l) => `  ${l}`).join('\n')}\n`);
  await cleanup();
  process.exit(1);
}
