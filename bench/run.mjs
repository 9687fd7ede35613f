#!/usr/bin/env node
// @ts-check
// meshca benchmark: `npm run bench [-- --quick]`. See bench/README.md for what each scenario means.
//
// This process only orchestrates: the server under test is a `node dist/cli.js serve` child, and
// the load comes from two forked bench/loadgen.mjs processes. Nothing here runs during a measured
// window except /proc sampling, a /metrics scrape at each edge and (large-store) the admin queries.

import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  statfsSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { prefillStore, STORE_IDENTITIES, storeSpiffeId } from './lib/large-store.mjs';
import { benchIdentity, burstIdentity, JWT_ISSUER, MaterialCache } from './lib/material.mjs';
import { stageBreakdown, summarizeProfile } from './lib/profile.mjs';
import { markdownReport, markdownTable, summaryLine, svgChart } from './lib/report.mjs';
import { certdbRows, CfsslServer, CFSSL_INSTALL_HINT, cfsslVersion, prepareCfssl } from './lib/cfssl.mjs';
import {
  describeExit,
  freePorts,
  machineBusySeconds,
  parseMetricTotals,
  pinningPlan,
  pinProcess,
  ResourceWindow,
  ServerProcess,
  sleep,
} from './lib/server.mjs';
import { errorTotal, latencySummary, mergeCounts, mergeSorted } from './lib/stats.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli.js');
const TMP = join(ROOT, 'bench', 'results', 'tmp');
const README = join(ROOT, 'bench', 'README.md');
const PROFILES = join(TMP, 'profiles');
const ALL_SCENARIOS = [
  'steady-c1',
  'steady-c8',
  'steady-c32',
  'steady-c128',
  'rsa-c32',
  'cold-tokens-c32',
  'rotation-burst',
  'large-store',
  'cfssl-c32',
  'cfssl-pair-c32',
  'workers',
  'ab-c32',
];
/** Scenarios that start servers of their own rather than using the main one. */
const OWN_SERVER = ['large-store', 'cfssl-c32', 'cfssl-pair-c32', 'workers', 'ab-c32'];
/** Scenarios that only run when asked for (they need more than this checkout, or repeat another's question). */
const ON_REQUEST = ['ab-c32', 'cfssl-pair-c32'];
/** What a run without --scenarios measures: a "full" run. */
const DEFAULT_SCENARIOS = ALL_SCENARIOS.filter((s) => !ON_REQUEST.includes(s));
const GOALS = { throughputGoal: 3000, p99GoalMs: 20 };
const LOADGENS = 2;
const REQUEST_DEADLINE_MS = 30_000;
const QUERIES = 200;

const HELP = `Usage: npm run bench [-- flags]

  --quick               short run (< 60 s): 3 s per steady scenario, 1,000-workload burst, 100,000 store rows
  --workloads N         distinct workload identities, each with its own token (default 1000)
  --duration S          seconds per steady scenario (default 10; quick 3)
  --scenarios a,b       subset of: ${ALL_SCENARIOS.join(', ')}
  --out DIR             where results go (default bench/results)
  --burst N             workloads in the rotation burst (default 5000; quick 1000)
  --store-rows N        pre-filled rows for large-store (default 1000000; quick 100000)
  --channels N          TLS connections per load generator (default 4)
  --client KIND         the load generators' gRPC client: h2 (a lean unary client on node:http2, the
                        default: it leaves the load CPU to spare) or grpc-js (@grpc/grpc-js's client)
  --server-log-level L  the server's --log-level (default warn: info logs one line per certificate)
  --profile             run the server under node --cpu-prof and print where its main thread spends
                        time and a per-stage breakdown (profiles in bench/results/tmp/profiles; numbers
                        include profiler overhead)
  --pin                 server (all its threads) on the first half of the CPUs, load generators and this
                        process on the rest, via taskset (said so, and run unpinned, when unavailable)
  --server-cpus LIST    with --pin: the server's CPU list (taskset -c syntax); the load gets the others
  --server-args="A B"   more \`meshca serve\` flags for the server under test (A/B comparisons), e.g.
                        --server-args="--verify-threads 1"
  --no-cfssl            skip the cfssl side-by-side comparison even when cfssl is on PATH
  --ab DIR              paired A/B (scenario ab-c32, the default with --ab): this build and the build in
                        DIR (another checkout with dist/ built) serve c32 at the same time, both on the
                        server CPUs with --pin, each with its own load generators; prints both CPU costs
                        per certificate and their ratio for every window, and the median ratio
  --ab-rounds N         measured windows in the paired scenarios, ab-c32 and cfssl-pair-c32 (default 5)
  --ab-server-args="A"  more \`meshca serve\` flags for B only (after --server-args): --ab . compares flags
                        on one build, e.g. --ab . --ab-server-args="--commit-linger 8ms"
  --ab-server-env="K=V" more environment for B's server process only, e.g. --ab . --ab-server-env=
                        "GLIBC_TUNABLES=glibc.malloc.mxfast=0"
`;

// ---------------------------------------------------------------------------------------------
// cleanup: the server, the load generators and the temp dir go away on success, failure or Ctrl-C

/** @type {Set<ServerProcess>} */
const servers = new Set();
/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
/** @type {Set<string>} */
const tempDirs = new Set();
let cleanedUp = false;
/** Per-stage breakdowns of profiled servers (--profile), for the results files. */
const profileStages =
  /** @type {{ server: string, scenario: string, certificates: number, cpuMsPerCert: number, mainThreadCpuMsPerCert: number, rows: { stage: string, thread: string, usPerCert: number }[] }[]} */ ([]);
/** Each server's measured scenario windows, to cut its CPU profile to them. */
const measuredWindows =
  /** @type {Map<ServerProcess, { name: string, window: { start: number, end: number }, certificates: number, cpuMsPerCert: number, mainThreadCpuMsPerCert: number }[]>} */ (
    new Map()
  );

/** @param {ServerProcess} server @param {import('./lib/report.mjs').ScenarioResult} r @param {{ usage: { monotonicUs: { start: number, end: number } } }} run */
function rememberWindow(server, r, run) {
  const list = measuredWindows.get(server) ?? [];
  list.push({
    name: r.name,
    window: run.usage.monotonicUs,
    certificates: r.ok,
    cpuMsPerCert: r.serverCpuMsPerCert,
    mainThreadCpuMsPerCert: r.serverMainThreadCpuMsPerCert,
  });
  measuredWindows.set(server, list);
}

function cleanupSync() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const server of servers) server.kill();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

process.on('exit', cleanupSync);
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
  process.on(signal, () => {
    process.stderr.write(`\nbench: ${signal}: stopping the server and load generators, removing temp data\n`);
    cleanupSync();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// options

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      workloads: { type: 'string' },
      duration: { type: 'string' },
      scenarios: { type: 'string' },
      out: { type: 'string' },
      burst: { type: 'string' },
      'store-rows': { type: 'string' },
      channels: { type: 'string' },
      client: { type: 'string', default: 'h2' },
      'server-log-level': { type: 'string', default: 'warn' },
      profile: { type: 'boolean', default: false },
      pin: { type: 'boolean', default: false },
      'server-cpus': { type: 'string' },
      'no-cfssl': { type: 'boolean', default: false },
      'server-args': { type: 'string' },
      ab: { type: 'string' },
      'ab-rounds': { type: 'string' },
      'ab-server-args': { type: 'string' },
      'ab-server-env': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const quick = Boolean(values.quick);
  const num = (/** @type {string | undefined} */ v, /** @type {number} */ fallback, /** @type {string} */ name) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
    return n;
  };
  const scenarios = values.scenarios
    ? values.scenarios
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : values.ab
      ? ['ab-c32']
      : DEFAULT_SCENARIOS;
  const unknown = scenarios.filter((s) => !ALL_SCENARIOS.includes(s));
  if (unknown.length) throw new Error(`unknown scenario(s) ${unknown.join(', ')}; choose from ${ALL_SCENARIOS.join(', ')}`);
  const abCli = values.ab ? resolve(values.ab, 'dist', 'cli.js') : undefined;
  if (scenarios.includes('ab-c32') && !abCli) throw new Error('ab-c32 needs --ab DIR: another meshca checkout with dist/ built');
  if (abCli && !existsSync(abCli)) throw new Error(`--ab: ${abCli} is missing: run "npm ci && npm run build" in that checkout`);
  return {
    quick,
    workloads: Math.round(num(values.workloads, 1000, 'workloads')),
    durationS: num(values.duration, quick ? 3 : 10, 'duration'),
    scenarios: ALL_SCENARIOS.filter((s) => scenarios.includes(s)),
    out: values.out ?? join(ROOT, 'bench', 'results'),
    defaultOut: values.out === undefined,
    burst: Math.round(num(values.burst, quick ? 1000 : 5000, 'burst')),
    storeRows: Math.round(num(values['store-rows'], quick ? 100_000 : 1_000_000, 'store-rows')),
    channels: Math.round(num(values.channels, 4, 'channels')),
    client: /** @type {'h2' | 'grpc-js'} */ (clientKind(values.client)),
    serverLogLevel: /** @type {string} */ (values['server-log-level']),
    profile: Boolean(values.profile),
    pin: Boolean(values.pin),
    serverCpus: values['server-cpus'],
    cfssl: !values['no-cfssl'],
    serverArgs: values['server-args'] ? values['server-args'].split(/\s+/).filter(Boolean) : [],
    abCli,
    abRounds: Math.round(num(values['ab-rounds'], 5, 'ab-rounds')),
    abServerArgs: values['ab-server-args'] ? values['ab-server-args'].split(/\s+/).filter(Boolean) : [],
    abServerEnv: Object.fromEntries(
      (values['ab-server-env'] ?? '')
        .split(/\s+/)
        .filter(Boolean)
        .map((pair) => [pair.slice(0, Math.max(0, pair.indexOf('='))), pair.slice(pair.indexOf('=') + 1)]),
    ),
  };
}

/** @param {string | undefined} value */
function clientKind(value) {
  if (value !== 'h2' && value !== 'grpc-js') throw new Error(`--client must be h2 or grpc-js, got ${value}`);
  return value;
}

/** @typedef {ReturnType<typeof options>} Options */

// ---------------------------------------------------------------------------------------------
// load generators

class LoadgenPool {
  /** @param {import('node:child_process').ChildProcess[]} procs */
  constructor(procs) {
    this.procs = procs;
    this.pids = procs.map((p) => /** @type {number} */ (p.pid));
    this.nextId = 0;
    /** @type {Map<import('node:child_process').ChildProcess, { type: string, id?: string, resolve: (m: any) => void, reject: (e: Error) => void }[]>} */
    this.waiters = new Map(procs.map((p) => [p, []]));
    for (const proc of procs) {
      proc.on('message', (/** @type {any} */ message) => {
        const waiters = /** @type {any[]} */ (this.waiters.get(proc));
        if (message.type === 'fatal') {
          for (const w of waiters.splice(0)) w.reject(new Error(`load generator ${proc.pid} failed: ${message.error}`));
          return;
        }
        const i = waiters.findIndex((w) => w.type === message.type && (w.id === undefined || w.id === message.id));
        if (i >= 0) waiters.splice(i, 1)[0].resolve(message);
      });
      proc.on('exit', (code, signal) => {
        const waiters = /** @type {any[]} */ (this.waiters.get(proc));
        for (const w of waiters.splice(0)) w.reject(new Error(`load generator ${proc.pid} exited (${describeExit({ code, signal })})`));
      });
    }
  }

  /** @param {number} n */
  static start(n) {
    const procs = Array.from({ length: n }, (_, part) => {
      const proc = fork(join(ROOT, 'bench', 'loadgen.mjs'), [], {
        env: { ...process.env, LOADGEN_PART: String(part), LOADGEN_PARTS: String(n) },
        serialization: 'advanced',
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.add(proc);
      return proc;
    });
    return new LoadgenPool(procs);
  }

  /**
   * @param {import('node:child_process').ChildProcess} proc
   * @param {Record<string, unknown>} message
   * @param {string} reply
   * @returns {Promise<any>}
   */
  ask(proc, message, reply) {
    return new Promise((resolve, reject) => {
      /** @type {any[]} */ (this.waiters.get(proc)).push({
        type: reply,
        id: /** @type {string | undefined} */ (message.id),
        resolve,
        reject,
      });
      proc.send(message);
    });
  }

  /** (Re)connects every load generator's channels, trusting `rootsPem`. */
  async connect(
    /** @type {string} */ grpcAddress,
    /** @type {string} */ rootsPem,
    /** @type {number} */ channels,
    /** @type {'h2' | 'grpc-js'} */ client,
  ) {
    await Promise.all(this.procs.map((p) => this.ask(p, { type: 'init', grpcAddress, rootsPem, channels, client }, 'ready')));
  }

  /**
   * Prepares the run in every process (untimed), then starts them together and measures the
   * server's and load generators' CPU and the server's peak RSS over the window.
   * @param {Record<string, any>} spec
   * @param {number} serverPid
   */
  async run(spec, serverPid) {
    const id = `run-${++this.nextId}`;
    const n = this.procs.length;
    const shares = this.procs.map((_, k) => Math.floor((spec.concurrency ?? 0) / n) + (k < (spec.concurrency ?? 0) % n ? 1 : 0));
    await Promise.all(this.procs.map((p, k) => this.ask(p, { type: 'prepare', id, ...spec, concurrency: shares[k] }, 'prepared')));
    const window = new ResourceWindow({ server: serverPid, loadgens: this.pids });
    const startAt = performance.timeOrigin + performance.now() + 100;
    const results = await Promise.all(this.procs.map((p) => this.ask(p, { type: 'go', id, startAt }, 'result')));
    return { results, usage: window.finish() };
  }

  async close() {
    await Promise.all(
      this.procs.map((p) => {
        if (p.exitCode !== null || p.signalCode !== null) return undefined;
        const exited = new Promise((r) => p.once('exit', r));
        p.send({ type: 'close' });
        return exited;
      }),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// scenarios

/**
 * @typedef {object} Context
 * @property {Options} opts
 * @property {MaterialCache} material
 * @property {LoadgenPool} pool
 * @property {string} runDir
 * @property {string} kek
 * @property {string} jwksFile
 * @property {Record<string, import('./lib/material.mjs').MaterialFile>} files
 * @property {import('./lib/report.mjs').ScenarioResult[]} results
 * @property {{ server: string, load: string } | undefined} pin CPU sets with --pin (when taskset works)
 * @property {Record<string, unknown>} [cfssl] the comparison's outcome (or why it was skipped)
 * @property {{ a: string, b: string, medianRatio: number, windows: { a: import('./lib/report.mjs').PairSide, b: import('./lib/report.mjs').PairSide, ratio: number }[] }} [ab] the paired A/B comparison's windows and median ratio
 * @property {Record<string, any>} [cfsslPair] meshca and cfssl measured at the same time (cfssl-pair-c32): windows, median ratio, or why skipped
 */

/** @param {Context} ctx @param {string} label @param {string} dataDir @param {string[]} [extraArgs] @param {string} [cli] another build's dist/cli.js @param {Record<string, string>} [env] more environment */
async function startServer(ctx, label, dataDir, extraArgs = [], cli = CLI, env = {}) {
  const started = performance.now();
  const server = await ServerProcess.start({
    cli,
    dataDir,
    kek: ctx.kek,
    jwksFile: ctx.jwksFile,
    jwtIssuer: JWT_ISSUER,
    logFile: join(TMP, `server-${label}.log`),
    logLevel: ctx.opts.serverLogLevel,
    nodeArgs: ctx.opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${PROFILES}`] : [],
    cpus: ctx.pin?.server,
    extraArgs: [...(ctx.opts.serverArgs ?? []), ...extraArgs],
    env,
  });
  servers.add(server);
  server.exited.then((exit) => {
    servers.delete(server);
    if (!server.stopping)
      process.stderr.write(
        `\nbench: meshca (${label}) exited unexpectedly (${describeExit(exit)}); its last lines:\n${server.lastLines(40)}\n`,
      );
  });
  await ctx.pool.connect(server.addresses.grpc, server.bundlePem(), ctx.opts.channels, ctx.opts.client);
  return { server, startupSeconds: (performance.now() - started) / 1000 };
}

/** @param {ServerProcess} server @param {string} [label] names the CPU profile summary (with --profile) */
async function stopServer(server, label) {
  const exit = await server.stop();
  if (exit.code !== 0) process.stderr.write(`bench: meshca did not stop cleanly (${describeExit(exit)}):\n${server.lastLines(20)}\n`);
  if (label && existsSync(PROFILES)) {
    // node names them CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is the main thread.
    const files = readdirSync(PROFILES)
      .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(server.pid))
      .sort((a, b) => Number(a.split('.')[4]) - Number(b.split('.')[4]));
    if (files.length) {
      // The summary and breakdown cover one measured window: steady-c32 if it ran on this server, else the last one.
      const windows = measuredWindows.get(server) ?? [];
      const measured = windows.find((w) => w.name === 'steady-c32' || w.name === 'large-store') ?? windows.at(-1);
      const summary = files
        .map((f, i) =>
          summarizeProfile(
            join(PROFILES, f),
            i === 0 ? 25 : 5,
            `${i === 0 ? 'main thread' : `worker thread ${f.split('.')[4]}`}${measured ? ` during ${measured.name}` : ''}`,
            measured?.window,
          ),
        )
        .join('\n');
      const threads = files.map((f, i) => ({ file: join(PROFILES, f), thread: i === 0 ? 'main' : `worker ${f.split('.')[4]}` }));
      const stages = measured && measured.certificates > 0 ? stageBreakdown(threads, measured) : undefined;
      if (stages && measured)
        profileStages.push({
          server: label,
          scenario: measured.name,
          certificates: measured.certificates,
          cpuMsPerCert: measured.cpuMsPerCert,
          mainThreadCpuMsPerCert: measured.mainThreadCpuMsPerCert,
          rows: stages.rows,
        });
      writeFileSync(join(PROFILES, `${label}.txt`), `${summary}\n${stages?.text ?? ''}\n`);
      log(
        `\nserver CPU profile (${label}; ${relative(process.cwd(), PROFILES)}/${files[0]} and its worker threads):\n${summary}\n${stages?.text ?? ''}`,
      );
    } else {
      log(`bench: no CPU profile found for server pid ${server.pid} in ${PROFILES}`);
    }
  }
  return exit;
}

/** Work on the steady identities: token j (of `tokens`) with identity j % workloads's CSR from `csrs`. */
function work(/** @type {Context} */ ctx, /** @type {string} */ csrs, /** @type {string} */ tokens, count = ctx.opts.workloads) {
  return { csrFile: ctx.files[csrs].path, tokenFile: ctx.files[tokens].path, identities: ctx.opts.workloads, count };
}

/**
 * Every warm token presented once (concurrency 32), so the steady scenarios measure warm tokens.
 * With `settle`, load continues (untimed) for a few seconds more: a fresh server and fresh load
 * generators are ~40 % slower until V8 has optimised their hot paths, which would otherwise
 * penalise whichever scenario comes first after a start.
 * @param {Context} ctx @param {ServerProcess} server @param {{ settle: boolean }} options
 */
async function warmUp(ctx, server, { settle }) {
  const run = await ctx.pool.run(
    {
      kind: 'closed',
      concurrency: 32,
      durationMs: 300_000,
      deadlineMs: REQUEST_DEADLINE_MS,
      cycle: false,
      work: work(ctx, 'ecCsrs', 'warmTokens'),
    },
    server.pid,
  );
  const r = summarize('warm-up', '', run, undefined);
  log(
    `  warm-up: ${r.ok} certificates in ${r.wallSeconds.toFixed(1)} s (${Math.round(r.throughput)}/s)${errorTotal(r.errors) ? `, errors: ${JSON.stringify(r.errors)} ${JSON.stringify(r.errorSamples)}` : ''}`,
  );
  if (r.ok === 0) throw new Error(`the warm-up issued no certificate: ${JSON.stringify(r.errorSamples)}\n${server.lastLines(20)}`);
  if (!settle) return;
  const seconds = ctx.opts.quick ? 3 : 5;
  const more = summarize(
    'settle',
    '',
    await ctx.pool.run(
      {
        kind: 'closed',
        concurrency: 32,
        durationMs: seconds * 1000,
        deadlineMs: REQUEST_DEADLINE_MS,
        cycle: true,
        work: work(ctx, 'ecCsrs', 'warmTokens'),
      },
      server.pid,
    ),
    undefined,
  );
  log(`  settle: ${more.ok} more in ${more.wallSeconds.toFixed(1)} s (${Math.round(more.throughput)}/s)`);
}

/**
 * @param {Context} ctx
 * @param {ServerProcess} server
 * @param {{ name: string, description: string, concurrency: number, work: object, cycle: boolean, during?: (done: Promise<unknown>) => Promise<void> }} s
 */
async function closedScenario(ctx, server, s) {
  const before = await scrape(server);
  const running = ctx.pool.run(
    {
      kind: 'closed',
      concurrency: s.concurrency,
      durationMs: ctx.opts.durationS * 1000,
      deadlineMs: REQUEST_DEADLINE_MS,
      cycle: s.cycle,
      work: s.work,
    },
    server.pid,
  );
  const during = s.during ? s.during(running) : Promise.resolve();
  const run = await running;
  await during;
  const r = summarize(s.name, s.description, run, metricsDelta(before, await scrape(server), run.usage.wallSeconds));
  r.concurrency = s.concurrency;
  rememberWindow(server, r, run);
  if (run.results.some((x) => x.exhausted)) r.notes.push(`ran out of pre-generated tokens after ${r.wallSeconds.toFixed(1)} s`);
  return r;
}

/**
 * @param {string} name
 * @param {string} description
 * @param {{ results: any[], usage: ReturnType<ResourceWindow['finish']> }} run
 * @param {{ rowsPerCommit?: number, commitMs?: number, issuanceMs?: number, gcPercent?: number } | undefined} server
 * @returns {import('./lib/report.mjs').ScenarioResult}
 */
function summarize(name, description, run, server) {
  const active = run.results.filter((x) => Number.isFinite(x.start));
  const sorted = mergeSorted(run.results.map((x) => x.latencies));
  const errors = mergeCounts(run.results.map((x) => x.errors));
  const start = Math.min(...active.map((x) => x.start));
  const end = Math.max(...active.map((x) => x.lastEnd));
  const wallSeconds = active.length && end > start ? (end - start) / 1000 : 0;
  /** @type {string[]} */
  const notes = [];
  if (server?.rowsPerCommit !== undefined) notes.push(`${server.rowsPerCommit.toFixed(1)} rows/commit`);
  if (server?.gcPercent !== undefined) notes.push(`server GC ${server.gcPercent.toFixed(0)} % of wall time`);
  const ok = sorted.length;
  const { serverCpuSeconds, serverMainThreadCpuSeconds } = run.usage;
  return {
    name,
    description,
    requests: sorted.length + errorTotal(errors),
    ok: sorted.length,
    errors,
    errorSamples: Object.assign({}, ...run.results.map((x) => x.errorSamples)),
    wallSeconds,
    throughput: wallSeconds ? sorted.length / wallSeconds : 0,
    latencyMs: latencySummary(sorted),
    serverCpuPercent: run.usage.serverCpuPercent,
    loadgenCpuPercent: run.usage.loadgenCpuPercent,
    otherCpuPercent: run.usage.otherCpuPercent,
    serverPeakRssMb: run.usage.serverPeakRssMb,
    serverCpuMsPerCert: ok ? (1000 * serverCpuSeconds) / ok : NaN,
    serverMainThreadCpuMsPerCert: ok ? (1000 * serverMainThreadCpuSeconds) / ok : NaN,
    certsPerCore: serverCpuSeconds > 0 ? ok / serverCpuSeconds : NaN,
    serverThreads: run.usage.serverThreads.slice(0, 12).map((t) => ({ tid: t.tid, cpuMsPerCert: ok ? (1000 * t.cpuSeconds) / ok : NaN })),
    server: server ?? {},
    notes,
  };
}

/** @param {ServerProcess} server */
async function scrape(server) {
  try {
    return parseMetricTotals(await server.metrics());
  } catch {
    return new Map();
  }
}

/** Averages over one window from /metrics counters (absent metrics are left out). */
function metricsDelta(/** @type {Map<string, number>} */ a, /** @type {Map<string, number>} */ b, /** @type {number} */ seconds) {
  const d = (/** @type {string} */ k) => (b.has(k) ? (b.get(k) ?? 0) - (a.get(k) ?? 0) : NaN);
  const ratio = (/** @type {number} */ x, /** @type {number} */ y) => (Number.isFinite(x) && y > 0 ? x / y : undefined);
  const commits = d('meshca_store_commit_rows_count');
  const issued = d('meshca_issuance_duration_seconds_count');
  const commitS = ratio(d('meshca_store_commit_duration_seconds_sum'), d('meshca_store_commit_duration_seconds_count'));
  const issuanceS = ratio(d('meshca_issuance_duration_seconds_sum'), issued);
  const gc = d('nodejs_gc_duration_seconds_sum');
  return {
    rowsPerCommit: ratio(d('meshca_store_commit_rows_sum'), commits),
    commitMs: commitS === undefined ? undefined : commitS * 1000,
    issuanceMs: issuanceS === undefined ? undefined : issuanceS * 1000,
    gcPercent: Number.isFinite(gc) && seconds > 0 ? (100 * gc) / seconds : undefined,
  };
}

/** Scenarios on one fresh server: steady-cN, rsa-c32, cold-tokens-c32, then rotation-burst. */
async function mainServer(/** @type {Context} */ ctx) {
  const want = (/** @type {string} */ s) => ctx.opts.scenarios.includes(s);
  const { server, startupSeconds } = await startServer(ctx, 'main', join(ctx.runDir, 'data-main'));
  log(`meshca started in ${startupSeconds.toFixed(1)} s (pid ${server.pid}, gRPC ${server.addresses.grpc})`);
  await warmUp(ctx, server, { settle: true });

  for (const c of [1, 8, 32, 128]) {
    if (!want(`steady-c${c}`)) continue;
    report(
      ctx,
      await closedScenario(ctx, server, {
        name: `steady-c${c}`,
        description: `closed loop, ${c} in flight, ECDSA P-256 CSRs, warm tokens`,
        concurrency: c,
        cycle: true,
        work: work(ctx, 'ecCsrs', 'warmTokens'),
      }),
    );
    await sleep(300);
  }
  if (want('rsa-c32')) {
    report(
      ctx,
      await closedScenario(ctx, server, {
        name: 'rsa-c32',
        description: 'closed loop, 32 in flight, RSA-2048 CSRs, warm tokens',
        concurrency: 32,
        cycle: true,
        work: work(ctx, 'rsaCsrs', 'warmTokens'),
      }),
    );
    await sleep(300);
  }
  if (want('cold-tokens-c32')) {
    // Enough unseen tokens for the whole window, with room for cold runs faster than the warm one.
    const steady = ctx.results.find((r) => r.name === 'steady-c32');
    const rate = Math.max(steady?.throughput ?? 3000, 2000) * 1.5;
    const count = Math.min(300_000, Math.ceil(rate * ctx.opts.durationS) + 1000);
    ctx.files.coldTokens = await ctx.material.tokens({ name: 'cold', count, identity: benchIdentity, identities: ctx.opts.workloads });
    const r = await closedScenario(ctx, server, {
      name: 'cold-tokens-c32',
      description: 'closed loop, 32 in flight, every token presented for the first time',
      concurrency: 32,
      cycle: false,
      work: work(ctx, 'ecCsrs', 'coldTokens', count),
    });
    if (steady) r.notes.unshift(`${pct(r.throughput, steady.throughput)} throughput vs warm steady-c32`);
    report(ctx, r);
    await sleep(300);
  }
  if (want('rotation-burst')) report(ctx, await rotationBurst(ctx, server));
  await stopServer(server, ctx.opts.profile ? 'main' : undefined);
}

/**
 * Paired A/B: this build (A) and another (B, --ab DIR) serve the same c32 load at the same time,
 * pinned to the same CPUs, each from its own load generators. On a shared VM whose CPU capacity
 * drifts from minute to minute, two builds measured side by side see the same drift, so the ratio
 * of their CPU per certificate is far steadier than that of two runs one after the other.
 * @param {Context} ctx
 */
async function pairedComparison(ctx) {
  const cliB = /** @type {string} */ (ctx.opts.abCli);
  const poolB = LoadgenPool.start(LOADGENS);
  if (ctx.pin) for (const pid of poolB.pids) pinProcess(pid, ctx.pin.load);
  const ctxB = { ...ctx, pool: poolB };
  try {
    const [a, b] = await Promise.all([
      startServer(ctx, 'ab-a', join(ctx.runDir, 'data-ab-a')),
      startServer(ctxB, 'ab-b', join(ctx.runDir, 'data-ab-b'), ctx.opts.abServerArgs, cliB, ctx.opts.abServerEnv),
    ]);
    const bEnv = Object.entries(ctx.opts.abServerEnv).map(([k, v]) => ` ${k}=${v}`);
    const bArgs = [...bEnv, ...ctx.opts.abServerArgs.map((arg) => ` ${arg}`)].join('');
    log(`A/B: A = ${relative(process.cwd(), CLI)} (pid ${a.server.pid}), B = ${cliB}${bArgs} (pid ${b.server.pid}), both serving at once`);
    await Promise.all([warmUp(ctx, a.server, { settle: true }), warmUp(ctxB, b.server, { settle: true })]);
    // Sharing the CPUs, each server gets half the certificates of a solo warm-up: settle both for
    // two windows more (unmeasured), or the first windows still measure V8 optimising the hot path.
    const settle = (/** @type {Context} */ c, /** @type {ServerProcess} */ server) =>
      c.pool.run(
        {
          kind: 'closed',
          concurrency: 32,
          durationMs: 2 * ctx.opts.durationS * 1000,
          deadlineMs: REQUEST_DEADLINE_MS,
          cycle: true,
          work: work(ctx, 'ecCsrs', 'warmTokens'),
        },
        server.pid,
      );
    await Promise.all([settle(ctx, a.server), settle(ctxB, b.server)]);
    const spec = (/** @type {string} */ name) => ({
      name,
      description: 'closed loop, 32 in flight, ECDSA P-256 CSRs, warm tokens, beside the other build',
      concurrency: 32,
      cycle: true,
      work: work(ctx, 'ecCsrs', 'warmTokens'),
    });
    const { windows, median } = await pairedWindows(
      ctx,
      'ab-c32',
      () => closedScenario(ctx, a.server, spec('ab-c32-a')),
      () => closedScenario(ctxB, b.server, spec('ab-c32-b')),
    );
    const cheaper = windows.filter((w) => w.ratio < 1).length;
    log(
      `ab-c32: B costs ${median.toFixed(3)}× A's server CPU per certificate (median of ${windows.length} paired windows; B cheaper in ${cheaper}); latencies and throughput are not comparable with solo runs`,
    );
    ctx.ab = { a: CLI, b: `${cliB}${bArgs}`, windows, medianRatio: median };
    await Promise.all([stopServer(a.server), stopServer(b.server)]);
  } finally {
    await poolB.close().catch(() => undefined);
  }
}

/**
 * The measured windows of a paired scenario: A and B at the same time, `--ab-rounds` times; each
 * window's ratio is B's CPU per certificate over A's (B/A > 1: A is cheaper).
 * @param {Context} ctx
 * @param {string} name
 * @param {() => Promise<import('./lib/report.mjs').ScenarioResult>} measureA
 * @param {() => Promise<import('./lib/report.mjs').ScenarioResult>} measureB
 */
async function pairedWindows(ctx, name, measureA, measureB) {
  const windows = [];
  for (let round = 1; round <= ctx.opts.abRounds; round++) {
    const [ra, rb] = await Promise.all([measureA(), measureB()]);
    const ratio = rb.serverCpuMsPerCert / ra.serverCpuMsPerCert;
    windows.push({ a: pairSide(ra), b: pairSide(rb), ratio });
    const side = (/** @type {string} */ label, /** @type {import('./lib/report.mjs').ScenarioResult} */ r) =>
      `${label} ${r.serverCpuMsPerCert.toFixed(3)} ms/cert (main ${r.serverMainThreadCpuMsPerCert.toFixed(3)}, ${Math.round(r.throughput)} cert/s, p99 ${r.latencyMs.p99.toFixed(1)} ms${errorTotal(r.errors) ? `, errors ${JSON.stringify(r.errors)}` : ''})`;
    log(`${name} window ${round}: ${side('A', ra)}  ${side('B', rb)}  B/A ${ratio.toFixed(3)}`);
  }
  const ratios = windows.map((w) => w.ratio).sort((x, y) => x - y);
  return { windows, median: ratios[Math.floor(ratios.length / 2)] };
}

/** @param {import('./lib/report.mjs').ScenarioResult} r */
function pairSide(r) {
  return {
    cpuMsPerCert: r.serverCpuMsPerCert,
    mainThreadCpuMsPerCert: r.serverMainThreadCpuMsPerCert,
    throughput: r.throughput,
    p99Ms: r.latencyMs.p99,
  };
}

/** Root rotation through the admin API, then `burst` distinct workloads within one second. */
async function rotationBurst(/** @type {Context} */ ctx, /** @type {ServerProcess} */ server) {
  const admin = server.admin();
  const prepared = await admin.request('POST', '/v1/authorities/prepare', {});
  if (prepared.status !== 201) throw new Error(`prepare failed: ${prepared.status} ${JSON.stringify(prepared.json)}`);
  const root = prepared.json.authorities.find((/** @type {any} */ a) => a.kind === 'root');
  const intermediate = prepared.json.authorities.find((/** @type {any} */ a) => a.kind === 'intermediate');
  const activated = await admin.request('POST', `/v1/authorities/${root.id}/activate`);
  if (activated.status !== 200) throw new Error(`activate failed: ${activated.status} ${JSON.stringify(activated.json)}`);
  admin.close();
  const roots = server.bundlePem();
  // Proxies learn the new bundle and reconnect; the load generators do the same before the burst.
  await ctx.pool.connect(server.addresses.grpc, roots, ctx.opts.channels, ctx.opts.client);

  const n = ctx.opts.burst;
  const before = await scrape(server);
  const run = await ctx.pool.run(
    {
      kind: 'burst',
      windowMs: 1000,
      deadlineMs: REQUEST_DEADLINE_MS,
      work: { csrFile: ctx.files.burstCsrs.path, tokenFile: ctx.files.burstTokens.path, identities: n, count: n },
    },
    server.pid,
  );
  const r = summarize(
    'rotation-burst',
    `${n} distinct workloads (unseen tokens) starting within 1 s after a root rotation`,
    run,
    metricsDelta(before, await scrape(server), run.usage.wallSeconds),
  );
  const start = Math.min(...run.results.map((x) => x.start));
  const lastStart = Math.max(...run.results.map((x) => x.lastStart));
  const fingerprint = String(intermediate.sha256Fingerprint).replace(/:/g, '').toLowerCase();
  const perIntermediate = mergeCounts(run.results.map((x) => x.intermediates));
  const rootsInBundle = mergeCounts(run.results.map((x) => x.rootsInBundle));
  const onNew = perIntermediate[fingerprint] ?? 0;
  r.notes.unshift(
    `${r.ok}/${n} served, all answered ${(r.wallSeconds).toFixed(2)} s after the first request (last request sent at +${((lastStart - start) / 1000).toFixed(2)} s)`,
    `${onNew === r.ok ? 'all' : `${onNew} of ${r.ok}`} chained to the new intermediate; roots in the bundle element: ${Object.entries(
      rootsInBundle,
    )
      .map(([k, v]) => `${k} (×${v})`)
      .join(', ')}`,
    `admin prepare ${prepared.ms.toFixed(0)} ms, activate ${activated.ms.toFixed(0)} ms`,
  );
  r.details = {
    served: r.ok,
    total: n,
    rootsInBundle,
    onNewIntermediate: onNew,
    lastStartOffsetMs: lastStart - start,
    prepareMs: prepared.ms,
    activateMs: activated.ms,
  };
  return r;
}

/**
 * steady-c32 against `serve --workers 1` and `--workers N` (N = cores, at least 2), each on a fresh
 * SQLite store shared by its workers: throughput, and server CPU (primary and workers) per certificate.
 * @param {Context} ctx
 */
async function workersScenario(ctx) {
  const n = Math.max(2, os.cpus().length);
  const results = [];
  for (const workers of [1, n]) {
    const name = `workers-${workers}`;
    const { server } = await startServer(ctx, name, join(ctx.runDir, `data-${name}`), ['--workers', String(workers)]);
    await warmUp(ctx, server, { settle: true });
    const r = await closedScenario(ctx, server, {
      name,
      description: `steady-c32 against serve --workers ${workers} (SQLite file shared by the workers)`,
      concurrency: 32,
      cycle: true,
      work: work(ctx, 'ecCsrs', 'warmTokens'),
    });
    await stopServer(server);
    const cpuMsPerCert = r.ok ? ((r.serverCpuPercent / 100) * r.wallSeconds * 1000) / r.ok : NaN;
    r.notes.unshift(
      `${cpuMsPerCert.toFixed(2)} server CPU ms per certificate (all ${workers > 1 ? `${workers} workers and the primary` : 'of the process'})`,
    );
    r.details = { workers, cpuMsPerCert };
    if (results.length) r.notes.unshift(`${pct(r.throughput, results[0].throughput)} throughput vs --workers 1`);
    results.push(r);
  }
  return results;
}

/** steady-c32 against a store pre-filled with `storeRows` rows, with admin queries during and after. */
async function largeStore(/** @type {Context} */ ctx) {
  const dataDir = join(ctx.runDir, 'data-large');
  const first = await startServer(ctx, 'large-store', dataDir);
  await warmUp(ctx, first.server, { settle: false }); // issues the certificates whose DER the pre-filled rows copy
  await stopServer(first.server);
  const rows = ctx.opts.storeRows;
  const fill = prefillStore(join(dataDir, 'meshca.db'), rows);
  log(
    `  pre-filled ${rows.toLocaleString('en-US')} rows in ${fill.seconds.toFixed(1)} s (database ${(fill.dbBytes / 2 ** 20).toFixed(0)} MB)`,
  );

  const { server, startupSeconds } = await startServer(ctx, 'large-store', dataDir);
  log(`  restarted on the pre-filled store in ${startupSeconds.toFixed(1)} s`);
  await warmUp(ctx, server, { settle: true }); // a new process: empty token cache, unoptimised code
  const admin = server.admin();
  const query = async () => {
    const id = storeSpiffeId(Math.floor(Math.random() * STORE_IDENTITIES));
    const res = await admin.request('GET', `/v1/certificates?spiffeId=${encodeURIComponent(id)}&limit=100`);
    if (res.status !== 200) throw new Error(`GET /v1/certificates: ${res.status} ${JSON.stringify(res.json).slice(0, 300)}`);
    return { ms: res.ms, items: res.json.items.length };
  };
  /** @type {{ ms: number, items: number }[]} */
  const underLoad = [];
  const r = await closedScenario(ctx, server, {
    name: 'large-store',
    description: `steady-c32 with ${rows.toLocaleString('en-US')} existing rows; admin queries by SPIFFE ID during and after`,
    concurrency: 32,
    cycle: true,
    work: work(ctx, 'ecCsrs', 'warmTokens'),
    during: async (done) => {
      // QUERIES queries spread evenly over the run, one at a time (a slow answer delays the next).
      let finished = false;
      const finish = () => (finished = true);
      done.then(finish, finish);
      const interval = (ctx.opts.durationS * 1000) / QUERIES;
      const t0 = performance.now();
      while (!finished && underLoad.length < QUERIES) {
        await sleep(Math.max(0, t0 + (underLoad.length + 0.5) * interval - performance.now()));
        if (!finished) underLoad.push(await query());
      }
    },
  });
  /** @type {{ ms: number, items: number }[]} */
  const idle = [];
  for (let i = 0; i < QUERIES; i++) idle.push(await query());
  admin.close();
  await stopServer(server, ctx.opts.profile ? 'large-store' : undefined);

  const stat = (/** @type {{ ms: number }[]} */ qs) => latencySummary(Float64Array.from(qs.map((q) => q.ms)).sort());
  const loaded = stat(underLoad);
  const quiet = stat(idle);
  const steady = ctx.results.find((x) => x.name === 'steady-c32');
  r.notes.unshift(
    ...(steady ? [`${pct(r.throughput, steady.throughput)} throughput vs empty-store steady-c32`] : []),
    `GET /v1/certificates?spiffeId=…&limit=100 (${Math.round(idle.reduce((a, q) => a + q.items, 0) / idle.length)} items): p50 ${loaded.p50.toFixed(1)} / p99 ${loaded.p99.toFixed(1)} ms under load (${underLoad.length} queries), p50 ${quiet.p50.toFixed(1)} / p99 ${quiet.p99.toFixed(1)} ms idle (${idle.length})`,
    `restart on the full store took ${startupSeconds.toFixed(1)} s`,
  );
  r.details = {
    rows,
    prefillSeconds: fill.seconds,
    dbMb: fill.dbBytes / 2 ** 20,
    restartSeconds: startupSeconds,
    queryUnderLoadMs: loaded,
    queryIdleMs: quiet,
  };
  return r;
}

/**
 * `cfssl serve` with a fresh certdb on the server CPUs, and the closed-loop c32 load spec for it
 * (the same CSRs as meshca's scenarios); or, when it is not on PATH, why it was skipped and how
 * to install it.
 * @param {Context} ctx
 * @param {string} scenario
 */
async function startCfssl(ctx, scenario) {
  const version = cfsslVersion();
  if (!ctx.opts.cfssl || !version) {
    const why = ctx.opts.cfssl
      ? `cfssl is not on PATH, so the side-by-side comparison is skipped; ${CFSSL_INSTALL_HINT}`
      : 'skipped (--no-cfssl)';
    log(`\n${scenario}: ${why}`);
    return { skipped: why };
  }
  log(`\n${scenario}: cfssl side by side (${version}):`);
  const dir = join(ctx.runDir, scenario);
  mkdirSync(dir, { recursive: true });
  const files = prepareCfssl(dir);
  const csrs = JSON.parse(readFileSync(ctx.files.ecCsrs.path, 'utf8')).items;
  const [port] = await freePorts(1);
  const server = await CfsslServer.start({
    files,
    port,
    logFile: join(TMP, `server-${scenario}.log`),
    cpus: ctx.pin?.server,
    probeCsr: csrs[0],
  });
  children.add(server.child);
  const spec = (/** @type {number} */ seconds) => ({
    kind: 'closed',
    concurrency: 32,
    durationMs: seconds * 1000,
    deadlineMs: REQUEST_DEADLINE_MS,
    cycle: true,
    cfsslUrl: server.url,
    work: work(ctx, 'ecCsrs', 'warmTokens'),
  });
  return { version, server, files, spec };
}

/**
 * cfssl side by side: the same closed-loop c32 load, CSRs and load generators (and, with --pin,
 * the same CPU sets) against `cfssl serve` with a SQLite certdb, after meshca's steady-c32.
 * @param {Context} ctx
 */
async function cfsslComparison(ctx) {
  const cfssl = await startCfssl(ctx, 'cfssl-c32');
  if (!cfssl.server) {
    ctx.cfssl = { skipped: cfssl.skipped };
    return;
  }
  const { version, server, files, spec } = cfssl;
  try {
    const settle = summarize('settle', '', await ctx.pool.run(spec(ctx.opts.quick ? 3 : 5), server.pid), undefined);
    log(
      `  settle: ${settle.ok} certificates in ${settle.wallSeconds.toFixed(1)} s (${Math.round(settle.throughput)}/s)${errorTotal(settle.errors) ? `, errors ${JSON.stringify(settle.errorSamples)}` : ''}`,
    );
    const rowsBefore = certdbRows(files.db);
    const r = summarize(
      'cfssl-c32',
      `cfssl serve (${version}), SQLite certdb, POST /api/v1/cfssl/sign over HTTP/1.1 keep-alive, 32 in flight, the same ECDSA P-256 CSRs`,
      await ctx.pool.run(spec(ctx.opts.durationS), server.pid),
      undefined,
    );
    r.concurrency = 32;
    const recorded = certdbRows(files.db) - rowsBefore;
    r.notes.push(`${recorded} of ${r.ok} certificates found in the certdb`);
    const meshca = ctx.results.find((x) => x.name === 'steady-c32');
    if (meshca) {
      const ratio = meshca.certsPerCore / r.certsPerCore;
      r.notes.unshift(
        `meshca steady-c32 vs cfssl: ${ratio.toFixed(2)}× the certificates/s per core (${int(meshca.certsPerCore)} vs ${int(r.certsPerCore)}), server CPU per certificate ${meshca.serverCpuMsPerCert.toFixed(3)} vs ${r.serverCpuMsPerCert.toFixed(3)} ms, p99 ${meshca.latencyMs.p99.toFixed(1)} vs ${r.latencyMs.p99.toFixed(1)} ms`,
      );
      ctx.cfssl = { version, certsPerCoreRatio: ratio, cpuMsPerCertRatio: meshca.serverCpuMsPerCert / r.serverCpuMsPerCert };
    } else {
      r.notes.unshift('no steady-c32 in this run to compare with (add it to --scenarios)');
      ctx.cfssl = { version };
    }
    report(ctx, r);
  } finally {
    await server.stop();
  }
}

/**
 * meshca and cfssl at the same time: both on the server CPUs (with --pin), each from its own two
 * load generators, the same CSRs and c32 closed loop, measured in the same windows. Sequential
 * runs on a VM whose CPU capacity drifts by tens of percent from minute to minute (see
 * docs/performance.md) give a ratio that moves with the drift; two servers measured side by side
 * see the same drift, as in ab-c32.
 * @param {Context} ctx
 */
async function pairedCfssl(ctx) {
  const cfssl = await startCfssl(ctx, 'cfssl-pair-c32');
  if (!cfssl.server) {
    ctx.cfsslPair = { skipped: cfssl.skipped };
    return;
  }
  const { version, server: peer, files, spec } = cfssl;
  const poolB = LoadgenPool.start(LOADGENS);
  if (ctx.pin) for (const pid of poolB.pids) pinProcess(pid, ctx.pin.load);
  try {
    const { server } = await startServer(ctx, 'pair', join(ctx.runDir, 'data-pair'));
    log(`  meshca (pid ${server.pid}) and cfssl (pid ${peer.pid}) serving at once`);
    const settleSeconds = ctx.opts.quick ? 3 : 5;
    await Promise.all([warmUp(ctx, server, { settle: true }), poolB.run(spec(settleSeconds), peer.pid)]);
    // Sharing the CPUs, each side gets half its solo warm-up: two more windows together, unmeasured.
    const meshcaLoad = {
      concurrency: 32,
      cycle: true,
      work: work(ctx, 'ecCsrs', 'warmTokens'),
    };
    await Promise.all([
      ctx.pool.run(
        { kind: 'closed', durationMs: 2 * ctx.opts.durationS * 1000, deadlineMs: REQUEST_DEADLINE_MS, ...meshcaLoad },
        server.pid,
      ),
      poolB.run(spec(2 * ctx.opts.durationS), peer.pid),
    ]);
    const rowsBefore = certdbRows(files.db);
    let served = 0;
    const { windows, median } = await pairedWindows(
      ctx,
      'cfssl-pair-c32',
      () =>
        closedScenario(ctx, server, {
          name: 'cfssl-pair-c32-meshca',
          description: 'closed loop, 32 in flight, beside cfssl',
          ...meshcaLoad,
        }),
      async () => {
        const r = summarize(
          'cfssl-pair-c32-cfssl',
          'cfssl serve beside meshca',
          await poolB.run(spec(ctx.opts.durationS), peer.pid),
          undefined,
        );
        served += r.ok;
        return r;
      },
    );
    const recorded = certdbRows(files.db) - rowsBefore;
    log(
      `cfssl-pair-c32: meshca serves ${median.toFixed(2)}× cfssl's certificates per second of server CPU (median of ${windows.length} paired windows; cfssl cheaper in ${windows.filter((w) => w.ratio < 1).length}); ${recorded} of cfssl's ${served} measured certificates found in its certdb; latencies and throughput are of two servers sharing the CPUs`,
    );
    ctx.cfsslPair = {
      version,
      a: 'meshca',
      b: `cfssl serve (${version})`,
      windows,
      medianRatio: median,
      cfsslRecorded: recorded,
      cfsslServed: served,
    };
    await stopServer(server);
  } finally {
    await peer.stop();
    await poolB.close().catch(() => undefined);
  }
}

const int = (/** @type {number} */ v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');

// ---------------------------------------------------------------------------------------------
// main

/** @param {Context} ctx @param {import('./lib/report.mjs').ScenarioResult} r */
function report(ctx, r) {
  ctx.results.push(r);
  process.stdout.write(summaryLine(r) + '\n');
}

const pct = (/** @type {number} */ x, /** @type {number} */ base) => `${x >= base ? '+' : ''}${(((x - base) / base) * 100).toFixed(0)} %`;
const log = (/** @type {string} */ message) => process.stderr.write(`${message}\n`);

function checkBuild() {
  if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run "npm run build" first');
  const built = statSync(CLI).mtimeMs;
  const newest = (/** @type {string} */ dir) =>
    readdirSync(dir, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile() && e.name.endsWith('.ts'))
      .reduce((m, e) => Math.max(m, statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs), 0);
  if (newest(join(ROOT, 'src')) > built) log('bench: warning: src/ has changes newer than dist/; run "npm run build" to benchmark them');
}

function machine() {
  const git = (/** @type {string[]} */ args) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return '';
    }
  };
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.versions.node,
    kernel: os.release(),
    commit: git(['rev-parse', '--short', 'HEAD']) || 'unknown',
    // Tracked files only: the results of earlier runs (untracked until committed) change no code.
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
    loadAverageAtStart: os.loadavg().map((v) => Number(v.toFixed(2))),
  };
}

/**
 * What one durable commit costs on this disk, at least: 4 KiB write + fdatasync, 100 times. Context
 * for the latency at low concurrency, where every request waits for its own commit.
 * @param {string} dir
 */
function fsyncProbe(dir) {
  const path = join(dir, 'fsync-probe');
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(4096, 1);
  const samples = [];
  try {
    for (let i = 0; i < 100; i++) {
      const t = performance.now();
      writeSync(fd, block, 0, block.length, i * block.length);
      fdatasyncSync(fd);
      samples.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  const summary = latencySummary(Float64Array.from(samples).sort());
  return { p50Ms: Number(summary.p50.toFixed(2)), p99Ms: Number(summary.p99.toFixed(2)) };
}

/** The data dir's file system: tmpfs would make fsync free and the durability cost invisible. */
function fileSystemOf(/** @type {string} */ dir) {
  const TMPFS_MAGIC = 0x01021994;
  try {
    return statfsSync(dir).type === TMPFS_MAGIC ? 'tmpfs (fsync is free: durability cost NOT measured)' : 'a disk-backed file system';
  } catch {
    return 'an unknown file system';
  }
}

/** CPU sets for --pin, or undefined (with the reason on stderr) when pinning is not possible here. */
function choosePinning(/** @type {Options} */ opts) {
  const cpus = os.availableParallelism();
  const plan = pinningPlan(cpus);
  if ('unavailable' in plan) {
    log(`bench: --pin: cannot pin (${plan.unavailable}); running unpinned`);
    return undefined;
  }
  if (!opts.serverCpus) return plan;
  const all = Array.from({ length: cpus }, (_, i) => i);
  const chosen = new Set(expandCpuList(opts.serverCpus));
  const rest = all.filter((c) => !chosen.has(c));
  if (chosen.size === 0 || rest.length === 0 || [...chosen].some((c) => c >= cpus))
    throw new Error(`--server-cpus ${opts.serverCpus}: need a non-empty subset of 0-${cpus - 1} that leaves a CPU for the load`);
  return { server: [...chosen].join(','), load: rest.join(',') };
}

/** "0-2,5" → [0, 1, 2, 5] @param {string} list */
function expandCpuList(list) {
  return list.split(',').flatMap((part) => {
    const [a, b] = part.split('-').map(Number);
    return Number.isInteger(a) ? Array.from({ length: (Number.isInteger(b) ? b : a) - a + 1 }, (_, i) => a + i) : [];
  });
}

async function main() {
  const opts = options();
  checkBuild();
  const wallStart = performance.now();
  mkdirSync(TMP, { recursive: true });
  const runDir = mkdtempSync(join(TMP, 'run-'));
  tempDirs.add(runDir);
  /** @type {ReturnType<typeof machine> & { fsync4k: { p50Ms: number, p99Ms: number }, busyBeforeStartPercent?: number }} */
  const host = { ...machine(), fsync4k: fsyncProbe(runDir) };

  log(
    `meshca bench${opts.quick ? ' --quick' : ''}${opts.pin ? ' --pin' : ''}: ${opts.scenarios.join(', ')}; ${opts.workloads} workloads, ${opts.durationS} s per steady scenario`,
  );
  const busyBefore = machineBusySeconds();
  await sleep(2000);
  host.busyBeforeStartPercent = Math.round((100 * (machineBusySeconds() - busyBefore)) / 2);
  log(
    `  ${host.cpus} CPUs, ${host.busyBeforeStartPercent} % of a core busy before the start (load average ${host.loadAverageAtStart.join(' ')}); data disk 4 KiB fdatasync p50 ${host.fsync4k.p50Ms} ms, p99 ${host.fsync4k.p99Ms} ms`,
  );
  if (host.busyBeforeStartPercent > 25)
    log('  bench: warning: other processes are using the CPU; the results will be noisy (see the "other CPU" column)');
  const material = new MaterialCache(join(TMP, 'material'));
  const jwksFile = join(runDir, 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify(material.signer().jwks));
  const needs = (/** @type {string[]} */ names) => names.some((s) => opts.scenarios.includes(s));
  const N = opts.workloads;
  /** @type {Record<string, import('./lib/material.mjs').MaterialFile>} */
  const files = {
    ecCsrs: await material.csrs({ name: 'bench', count: N, identity: benchIdentity, keyType: 'ec-p256' }),
    warmTokens: await material.tokens({ name: 'warm', count: N, identity: benchIdentity, identities: N }),
  };
  if (needs(['rsa-c32']))
    files.rsaCsrs = await material.csrs({ name: 'bench', count: N, identity: benchIdentity, keyType: 'rsa-2048', rsaKeys: 8 });
  if (needs(['rotation-burst'])) {
    files.burstCsrs = await material.csrs({ name: 'burst', count: opts.burst, identity: burstIdentity, keyType: 'ec-p256' });
    files.burstTokens = await material.tokens({ name: 'burst', count: opts.burst, identity: burstIdentity, identities: opts.burst });
  }

  const pin = opts.pin ? choosePinning(opts) : undefined;
  // Load generators told to close right after they start can trip Node's IPC; start none for nothing.
  const nothingToLoad = opts.scenarios.every((s) => s.startsWith('cfssl-')) && !(opts.cfssl && cfsslVersion());
  const pool = nothingToLoad ? new LoadgenPool([]) : LoadgenPool.start(LOADGENS);
  if (pin) for (const pid of [...pool.pids, process.pid]) pinProcess(pid, pin.load);
  /** @type {Context} */
  const ctx = { opts, material, pool, runDir, kek: randomBytes(32).toString('base64'), jwksFile, files, results: [], pin };
  try {
    if (opts.scenarios.some((s) => !OWN_SERVER.includes(s))) await mainServer(ctx);
    if (opts.scenarios.includes('large-store')) report(ctx, await largeStore(ctx));
    if (opts.scenarios.includes('cfssl-c32')) await cfsslComparison(ctx);
    if (opts.scenarios.includes('cfssl-pair-c32')) await pairedCfssl(ctx);
    if (opts.scenarios.includes('workers')) for (const r of await workersScenario(ctx)) report(ctx, r);
    if (opts.scenarios.includes('ab-c32')) await pairedComparison(ctx);
  } finally {
    await pool.close().catch(() => undefined);
  }

  const date = new Date().toLocaleDateString('sv-SE'); // YYYY-MM-DD, local time
  const run = {
    date,
    quick: opts.quick,
    machine: host,
    settings: {
      workloads: N,
      durationS: opts.durationS,
      burst: opts.burst,
      storeRows: opts.storeRows,
      loadgens: LOADGENS,
      channels: opts.channels,
      client: opts.client,
      requestDeadlineMs: REQUEST_DEADLINE_MS,
      serverLogLevel: opts.serverLogLevel,
      serverArgs: opts.serverArgs,
      caKeyType: 'ec-p256 (server default)',
      dataFs: fileSystemOf(runDir),
      profiled: opts.profile,
      pinned: pin ? { serverCpus: pin.server, loadCpus: pin.load } : opts.pin ? 'requested but unavailable' : false,
      scenarios: opts.scenarios,
    },
    goals: GOALS,
    cfssl: ctx.cfssl,
    cfsslPair: ctx.cfsslPair,
    ab: ctx.ab,
    stages: profileStages,
    totalSeconds: (performance.now() - wallStart) / 1000,
    scenarios: ctx.results,
  };
  mkdirSync(opts.out, { recursive: true });
  // Quick, partial and profiled runs never overwrite the day's full results; partial and profiled
  // ones carry the time too, so that they do not overwrite each other either.
  const partial = opts.scenarios.join() !== DEFAULT_SCENARIOS.join();
  const time = new Date().toTimeString().slice(0, 8).replace(/:/g, '');
  const base = join(
    opts.out,
    `${date}${opts.quick ? '-quick' : ''}${partial ? '-partial' : ''}${opts.profile ? '-profiled' : ''}${pin ? '-pinned' : ''}${partial || opts.profile ? `-${time}` : ''}`,
  );
  writeFileSync(`${base}.json`, JSON.stringify(run, null, 2) + '\n');
  writeFileSync(`${base}.md`, markdownReport(run));
  writeFileSync(`${base}.svg`, svgChart(run, GOALS));
  log(`\nwrote ${relative(process.cwd(), base)}.{json,md,svg} (${run.totalSeconds.toFixed(0)} s in all)`);
  if (!opts.quick && !opts.profile && !partial && opts.defaultOut) updateReadme(run, date);
}

/** Replaces the "latest results" section of bench/README.md after a full run. */
function updateReadme(/** @type {any} */ run, /** @type {string} */ base) {
  if (!existsSync(README)) return;
  const text = readFileSync(README, 'utf8');
  const start = '<!-- latest-results:start -->';
  const end = '<!-- latest-results:end -->';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) return;
  const m = run.machine;
  const body = [
    start,
    `Full run of ${run.date} on ${m.cpus} × ${m.cpuModel}, Node ${m.node}, commit ${m.commit}${m.dirty ? ' (with uncommitted changes)' : ''} — details in [results/${base}.md](results/${base}.md):`,
    '',
    markdownTable(run),
    '',
    ...run.scenarios.flatMap((/** @type {any} */ r) => (r.notes.length ? [`- **${r.name}**: ${r.notes.join('; ')}.`] : [])),
    '',
    `![throughput and p99 against concurrency](results/${base}.svg)`,
    end,
  ].join('\n');
  writeFileSync(README, text.slice(0, i) + body + text.slice(j + end.length));
  log(`updated the latest results in ${relative(process.cwd(), README)}`);
}

main().then(
  () => {
    cleanupSync();
  },
  (error) => {
    process.stderr.write(`\nbench failed: ${error?.stack ?? error}\n`);
    cleanupSync();
    process.exitCode = 1;
  },
);
