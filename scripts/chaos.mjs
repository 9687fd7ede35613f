#!/usr/bin/env node
// @ts-check
/**
 * Crash-safety harness (issue 7 item 3): runs CreateCertificate load and admin rotations against a
 * real `meshca serve` process, kills it with SIGKILL at seeded random moments (sometimes while it is
 * still starting), restarts it on the same data dir, and after every restart checks the store
 * invariants (src/authority/invariants.ts) plus what clients observed:
 *
 *   - integrity_check ok; exactly one active intermediate whose key (unsealed with the KEK) matches
 *     its certificate, under a trusted root; authority chains intact;
 *   - the bundle sequence never decreased (the highest one the admin API ever served, tracked
 *     across restarts);
 *   - every certificate a client received is in the store;
 *   - no stored certificate chains to an authority the store does not know (all are verified);
 *   - the restarted server serves exactly the roots the store trusts;
 *   - a revoked intermediate is tainted exactly when its revocation is recorded (authority-taint).
 *
 * Before the first kill it also runs a short unauthenticated stream flood (issue 11; the full one is
 * test/security.test.ts): header-only gRPC streams with 60 KB headers and no token while the load
 * keeps running; the server's RSS must grow by less than 150 MB and its workloads must still get
 * certificates.
 *
 * Usage: npm run chaos -- [--iterations 30] [--seed 1] [--workers 6] [--min-up-ms 300] [--max-up-ms 2000] [--no-flood] [--keep]
 * Admin operations: prepare, activate, rotate-intermediate, remove, and revoke (key compromise).
 * The test suite runs a short version (test/chaos.test.ts). Needs dist/ (npm run chaos builds it).
 */
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { spawnMeshca } from './lib/meshca-process.mjs';
import { residentBytes, spawnStreamFlood } from './lib/stream-flood.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
const CLI = join(DIST, 'cli.js');
const load = (module) => import(pathToFileURL(join(DIST, module)).href);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A small seeded PRNG (mulberry32): the same seed gives the same kill times and admin choices. */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normalizeSerial(hex) {
  return hex.toLowerCase().replace(/^0+(?=.)/, '');
}

function pemBlocks(pem) {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/**
 * Starts `meshca serve` and resolves once it logs "meshca is serving" (with its ports), or rejects
 * if it exits first. Its stdout is drained for the whole run (a full pipe would stall the server).
 */
function startMeshca(dataDir, env, tail) {
  const args = [
    'serve',
    '--dev',
    '--data-dir',
    dataDir,
    '--grpc-listen',
    '127.0.0.1:0',
    '--monitoring-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--log-level',
    'info',
  ];
  return spawnMeshca(args, {
    env,
    onLine: (line) => {
      tail.push(line);
      if (tail.length > 60) tail.shift();
    },
  });
}

function adminRequest(port, ca, token, method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = request({ host: '127.0.0.1', port, path, method, headers, ca, servername: 'localhost', timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`${method} ${path}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
        else resolve(text);
      });
    });
    req.on('timeout', () => req.destroy(new Error('admin request timed out')));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/**
 * Runs the harness; resolves with { ok, violations, stats, dataDir }. Never throws for a violation:
 * callers decide (the CLI exits 1, the test asserts).
 */
export async function runChaos(options = {}) {
  const iterations = options.iterations ?? 20;
  const seed = options.seed ?? 1;
  const workers = options.workers ?? 6;
  const minUpMs = options.minUpMs ?? 300;
  const maxUpMs = options.maxUpMs ?? 2000;
  const earlyKillRate = options.earlyKillRate ?? 0.2;
  const log = options.log ?? (() => {});

  const [
    { CaClient },
    { generateWorkloadKey, workloadCsr },
    { openDevTokenIssuer },
    { inspectSqliteStore },
    { checkInvariants, formatInvariantReport },
    { trustedRootsPem },
  ] = await Promise.all([
    load('client/ca-client.js'),
    load('client/csr.js'),
    load('authn/index.js'),
    load('store/sqlite.js'),
    load('authority/invariants.js'),
    load('authority/snapshot.js'),
  ]);

  const killRandom = seededRandom(seed);
  const opRandom = seededRandom(seed ^ 0x9e3779b9);
  const loadRandom = seededRandom(seed ^ 0x85ebca6b);
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'meshca-chaos-'));
  const dataDir = join(dir, 'data');
  const dbPath = join(dataDir, 'meshca.db');
  const kekText = randomBytes(32).toString('base64');
  const kek = Buffer.from(kekText, 'base64');
  const env = { ...process.env, MESHCA_KEK: kekText };

  // Workload identities: keys, CSRs and tokens made once (the dev token issuer lives in the data dir).
  const issuer = await openDevTokenIssuer(dataDir);
  const identities = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const sa = `chaos-${i}`;
      const spiffeId = `spiffe://cluster.local/ns/chaos/sa/${sa}`;
      const key = await generateWorkloadKey('ec-p256');
      return {
        spiffeId,
        csrPem: await workloadCsr(key, spiffeId),
        token: await issuer.sign({ namespace: 'chaos', serviceAccount: sa, ttlSeconds: 24 * 3600 }),
      };
    }),
  );

  const received = new Set();
  const rootsSeen = new Set();
  const violations = [];
  const stats = {
    iterations: 0,
    kills: 0,
    killsWhileStarting: 0,
    restarts: 0,
    issued: 0,
    failedRequests: 0,
    adminOps: { prepare: 0, activate: 0, 'rotate-intermediate': 0, remove: 0, revoke: 0 },
    adminFailures: 0,
    adminFailureSamples: /** @type {string[]} */ ([]),
    checks: 0,
    maxBundleSequence: 0,
  };
  let maxSequence = 0;
  const caPem = () => [...rootsSeen].join('');
  const learnRoots = (pem) => pemBlocks(pem).forEach((b) => rootsSeen.add(b));

  const check = async (label, ports) => {
    stats.checks++;
    const store = inspectSqliteStore(dbPath);
    let report;
    let storeRoots;
    try {
      report = await checkInvariants(store, { kek, minBundleSequence: maxSequence, receivedSerials: received });
      storeRoots = trustedRootsPem(await store.loadAuthorities()).pem;
    } finally {
      await store.close();
    }
    const problems = report.ok ? [] : [formatInvariantReport(report)];
    learnRoots(storeRoots);
    if (ports) {
      const served = await adminRequest(ports.adminPort, caPem(), undefined, 'GET', '/v1/bundle').catch((e) => `error: ${e.message}`);
      if (served !== storeRoots) problems.push(`the restarted server serves other roots than the store trusts:\n${served.slice(0, 300)}`);
      const spiffe = await adminRequest(ports.adminPort, caPem(), undefined, 'GET', '/v1/bundle?format=spiffe').then(
        JSON.parse,
        () => undefined,
      );
      if (!spiffe || spiffe.spiffe_sequence < maxSequence)
        problems.push(`served spiffe_sequence ${spiffe?.spiffe_sequence} is below ${maxSequence} seen before`);
    }
    maxSequence = Math.max(maxSequence, report.bundleSequence);
    stats.maxBundleSequence = maxSequence;
    if (problems.length > 0) violations.push({ label, problems });
    return problems.length === 0;
  };

  const runLoad = (ctx) => {
    let lastRecreate = 0;
    const worker = async () => {
      while (ctx.running) {
        const id = identities[Math.floor(loadRandom() * identities.length)];
        try {
          const chain = await ctx.client.createCertificate({ csrPem: id.csrPem, token: id.token, deadlineMs: 5000 });
          received.add(normalizeSerial(new X509Certificate(chain[0]).serialNumber));
          learnRoots(chain[chain.length - 1]);
          stats.issued++;
          ctx.issued++;
        } catch (error) {
          if (!ctx.running) return;
          stats.failedRequests++;
          // The serving certificate follows rotations; reconnect trusting every root seen so far.
          if (error?.code === 14 && Date.now() - lastRecreate > 500) {
            lastRecreate = Date.now();
            const old = ctx.client;
            ctx.client = new CaClient({ address: `127.0.0.1:${ctx.ports.grpcPort}`, rootsPem: caPem(), serverName: 'localhost' });
            setTimeout(() => old.close(), 1000);
          }
          await sleep(20);
        }
      }
    };
    return Promise.all(Array.from({ length: workers }, worker));
  };

  const runAdmin = async (ctx) => {
    while (ctx.running) {
      await sleep(Math.floor(opRandom() * 120));
      if (!ctx.running) return;
      const call = (method, path, body) => adminRequest(ctx.ports.adminPort, caPem(), ctx.adminToken, method, path, body);
      let op = 'list';
      try {
        const { authorities } = JSON.parse(await call('GET', '/v1/authorities'));
        const prepared = authorities.filter((a) => a.kind === 'intermediate' && a.state === 'prepared');
        const retiredRoots = authorities.filter((a) => a.kind === 'root' && a.state === 'retired');
        const retiredIntermediates = authorities.filter((a) => a.kind === 'intermediate' && a.state === 'retired');
        const r = opRandom();
        if (r >= 0.9) {
          // Key compromise: the active intermediate is tainted and replaced in one transaction.
          op = 'revoke';
          const active = authorities.find((a) => a.kind === 'intermediate' && a.state === 'active');
          await call('POST', `/v1/authorities/${active.id}/revoke`, { reason: 'keyCompromise' });
        } else if (prepared.length > 0 && r < 0.5) {
          op = 'activate';
          await call('POST', `/v1/authorities/${prepared[0].id}/activate`);
        } else if (retiredRoots.length > 0 && r < 0.75) {
          op = 'remove';
          await call('POST', `/v1/authorities/${retiredRoots[0].id}/remove?force=true`);
        } else if (retiredIntermediates.length > 2 && r < 0.85) {
          op = 'remove';
          await call('POST', `/v1/authorities/${retiredIntermediates[0].id}/remove?force=true`);
        } else if (prepared.length > 0 || r < 0.8) {
          op = 'rotate-intermediate';
          await call('POST', '/v1/authorities/rotate-intermediate');
        } else {
          op = 'prepare';
          await call('POST', '/v1/authorities/prepare');
        }
        stats.adminOps[op]++;
        ctx.adminOps++;
        const spiffe = JSON.parse(await call('GET', '/v1/bundle?format=spiffe'));
        maxSequence = Math.max(maxSequence, spiffe.spiffe_sequence);
        learnRoots(await call('GET', '/v1/bundle'));
      } catch (error) {
        if (ctx.running) {
          stats.adminFailures++;
          if (stats.adminFailureSamples.length < 5) stats.adminFailureSamples.push(`${op}: ${error.message}`);
        }
      }
    }
  };

  // The short flood: 10 connections x 64 header-only streams, 3 s, under the running load.
  const floodCheck = async (server, ctx) => {
    const baseline = residentBytes(server.child.pid);
    const issuedBefore = ctx.issued;
    const flood = spawnStreamFlood({ port: server.ports.grpcPort, ca: caPem(), connections: 10, streams: 64, headerBytes: 60 * 1024 });
    let peak = baseline;
    await flood.underway(10_000);
    const started = Date.now();
    while (Date.now() - started < 3000) {
      peak = Math.max(peak, residentBytes(server.child.pid));
      await sleep(100);
    }
    const attack = await flood.stop();
    const problems = [];
    if (peak - baseline > 150 * 1024 * 1024)
      problems.push(`RSS grew by ${((peak - baseline) / 1048576).toFixed(0)} MB under the flood (limit 150 MB)`);
    if (ctx.issued === issuedBefore) problems.push('no certificate was issued while the flood ran');
    if (attack.opened === 0) problems.push('the flood could not open a single connection');
    stats.flood = { ...attack, rssGrowthMb: Math.round((peak - baseline) / 1048576), issuedDuring: ctx.issued - issuedBefore };
    if (problems.length > 0) violations.push({ label: 'stream flood', problems });
    log(
      `stream flood: ${attack.opened} connections, ${attack.streamsOpened} streams; RSS +${stats.flood.rssGrowthMb} MB; ${stats.flood.issuedDuring} certificates issued meanwhile`,
    );
  };

  const tail = [];
  const live = new Set();
  const start = async (label) => {
    const proc = startMeshca(dataDir, env, tail);
    live.add(proc.child);
    void proc.exited.then(() => live.delete(proc.child));
    try {
      const ports = await proc.ready;
      return { ...proc, ports };
    } catch (error) {
      proc.child.kill('SIGKILL');
      violations.push({ label, problems: [`${error.message}; last log lines:\n${tail.slice(-20).join('\n')}`] });
      return undefined;
    }
  };

  try {
    for (let i = 0; i < iterations && violations.length === 0; i++) {
      stats.iterations++;
      if (i > 0 && killRandom() < earlyKillRate) {
        // Kill while it starts: recovery, migrations, the serving certificate, the dev token issuer.
        const early = startMeshca(dataDir, env, tail);
        live.add(early.child);
        early.ready.catch(() => undefined);
        await sleep(Math.floor(killRandom() * 800));
        early.child.kill('SIGKILL');
        await early.exited;
        stats.killsWhileStarting++;
      }
      const server = await start(`start ${i + 1}`);
      if (!server) break;
      if (i > 0) stats.restarts++;
      const ctx = {
        running: true,
        ports: server.ports,
        issued: 0,
        adminOps: 0,
        adminToken: readFileSync(join(dataDir, 'admin-token'), 'utf8').trim(),
        client: undefined,
      };
      if (i > 0 && !(await check(`after restart ${i}`, server.ports))) {
        server.child.kill('SIGKILL');
        await server.exited;
        break;
      }
      if (i === 0) await check('first start', server.ports);
      const client = new CaClient({ address: `127.0.0.1:${server.ports.grpcPort}`, rootsPem: caPem(), serverName: 'localhost' });
      ctx.client = client;
      const upMs = minUpMs + Math.floor(killRandom() * (maxUpMs - minUpMs));
      const work = Promise.all([runLoad(ctx), runAdmin(ctx)]);
      if (i === 0 && options.flood) await floodCheck(server, ctx);
      await sleep(upMs);
      server.child.kill('SIGKILL');
      await server.exited;
      ctx.running = false;
      await work;
      client.close();
      stats.kills++;
      log(
        `iteration ${i + 1}/${iterations}: killed after ${upMs} ms; ${ctx.issued} certificates, ${ctx.adminOps} admin ops (totals: ${received.size} received, bundle sequence ≥ ${maxSequence})`,
      );
    }
    if (violations.length === 0) {
      const server = await start('final start');
      if (server) {
        await check('final restart', server.ports);
        server.child.kill('SIGTERM');
        const code = await server.exited;
        if (code !== 0) violations.push({ label: 'final shutdown', problems: [`SIGTERM exit code ${code}`] });
        const cli = await new Promise((resolve) =>
          execFile(process.execPath, [CLI, 'verify', '--data-dir', dataDir], { env }, (error, stdout, stderr) =>
            resolve({ code: error ? error.code : 0, stdout, stderr }),
          ),
        );
        if (cli.code !== 0) violations.push({ label: 'meshca verify', problems: [`exit ${cli.code}\n${cli.stdout}${cli.stderr}`] });
      }
    }
  } finally {
    // Never leave a server behind, even when a check threw.
    for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (!options.keep && !options.dir) rmSync(dir, { recursive: true, force: true });
  }
  stats.received = received.size;
  return { ok: violations.length === 0, violations, stats, dataDir };
}

function parseArgs(argv) {
  /** @type {{ flood: boolean, keep?: boolean } & Record<string, number | boolean>} */
  const options = { flood: true };
  const numbers = {
    '--iterations': 'iterations',
    '--seed': 'seed',
    '--workers': 'workers',
    '--min-up-ms': 'minUpMs',
    '--max-up-ms': 'maxUpMs',
    '--early-kill-rate': 'earlyKillRate',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'Usage: npm run chaos -- [--iterations 30] [--seed 1] [--workers 6] [--min-up-ms 300] [--max-up-ms 2000] [--early-kill-rate 0.2] [--no-flood] [--keep]\n',
      );
      process.exit(0);
    }
    if (arg === '--keep') options.keep = true;
    else if (arg === '--no-flood') options.flood = false;
    else if (numbers[arg] && argv[i + 1] !== undefined && Number.isFinite(Number(argv[i + 1]))) options[numbers[arg]] = Number(argv[++i]);
    else {
      process.stderr.write(`chaos: unknown or incomplete argument ${arg}; see --help\n`);
      process.exit(2);
    }
  }
  return options;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  // The CLI runs the short stream flood unless --no-flood; runChaos() alone (the test) does not.
  const options = { iterations: 30, seed: Date.now() % 100000, ...parseArgs(process.argv.slice(2)) };
  const started = Date.now();
  process.stdout.write(`chaos: ${options.iterations} iterations, seed ${options.seed} (re-run with --seed ${options.seed})\n`);
  const result = await runChaos({ ...options, log: (line) => process.stdout.write(line + '\n') });
  process.stdout.write(`\n${JSON.stringify(result.stats, null, 2)}\n`);
  if (options.keep) process.stdout.write(`data dir kept: ${result.dataDir}\n`);
  if (result.ok) {
    process.stdout.write(
      `chaos: all invariants held after ${result.stats.kills} SIGKILLs in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
  } else {
    for (const v of result.violations) process.stderr.write(`\nVIOLATION (${v.label}):\n${v.problems.join('\n')}\n`);
    process.stderr.write(`chaos: FAILED with seed ${options.seed}\n`);
    process.exitCode = 1;
  }
}
