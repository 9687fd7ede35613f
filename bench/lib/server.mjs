// @ts-check
// The server under test: a real `node dist/cli.js serve` child process, its admin API, its metrics,
// and its CPU and memory as the kernel accounts them (/proc/<pid>).

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

/**
 * @typedef {object} ServerOptions
 * @property {string} cli path of dist/cli.js
 * @property {string} dataDir
 * @property {string} kek base64 of 32 bytes (MESHCA_KEK)
 * @property {string} jwksFile
 * @property {string} jwtIssuer
 * @property {string} logFile the server's stdout and stderr are appended here
 * @property {string} logLevel
 * @property {string[]} [extraArgs] more `meshca serve` flags
 * @property {string[]} [nodeArgs] flags for node itself (e.g. --cpu-prof)
 * @property {string} [cpus] run the server (every thread) on these CPUs (`taskset -c` list), e.g. "0"
 * @property {Record<string, string>} [env] more environment for the server process (e.g. GLIBC_TUNABLES)
 */

export class ServerProcess {
  /**
   * @param {import('node:child_process').ChildProcess & { tail: string[] }} child from spawnLogged
   * @param {{ grpc: string, admin: string, monitoring: string }} addresses
   * @param {ServerOptions} options
   */
  constructor(child, addresses, options) {
    this.child = child;
    this.pid = /** @type {number} */ (child.pid);
    this.addresses = addresses;
    this.options = options;
    /** @type {string[]} the last lines the server wrote, for error reports */
    this.tail = child.tail;
    /** @type {{ code: number | null, signal: string | null } | undefined} */
    this.exit = undefined;
    /** set once the benchmark asks it to stop, so that its exit is not reported as a crash */
    this.stopping = false;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve((this.exit = { code, signal }))));
  }

  /**
   * Spawns the server on free loopback ports and waits until /readyz answers 200.
   * (The "meshca is serving" line is logged at info; the benchmark runs the server at warn, so it
   * picks the ports itself rather than reading them from the log.)
   * @param {ServerOptions} options
   */
  static async start(options) {
    const [grpcPort, adminPort, monitoringPort] = await freePorts(3);
    const addresses = { grpc: `127.0.0.1:${grpcPort}`, admin: `https://127.0.0.1:${adminPort}`, monitoring: `127.0.0.1:${monitoringPort}` };
    const args = [
      ...(options.nodeArgs ?? []),
      options.cli,
      'serve',
      '--data-dir',
      options.dataDir,
      '--grpc-listen',
      addresses.grpc,
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--monitoring-listen',
      addresses.monitoring,
      '--jwks-file',
      options.jwksFile,
      '--jwt-issuer',
      options.jwtIssuer,
      '--log-level',
      options.logLevel,
      // The benchmark measures throughput: one load generator plays thousands of identities from a
      // few connections, so the per-identity limit is off and each connection may multiplex many
      // calls (istio-agent uses one stream per request; the production defaults are sized for it).
      '--rate-limit-per-identity',
      '0',
      '--max-concurrent-streams',
      '256',
      ...(options.extraArgs ?? []),
    ];
    const server = new ServerProcess(
      spawnLogged({
        program: process.execPath,
        args,
        cpus: options.cpus,
        env: { ...process.env, ...options.env, MESHCA_KEK: options.kek },
        logFile: options.logFile,
        tail: [],
      }),
      addresses,
      options,
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await server.ready())) {
      if (server.exit) throw new Error(`meshca exited during startup (${describeExit(server.exit)}):\n${server.lastLines(30)}`);
      if (Date.now() > deadline) {
        server.kill();
        throw new Error(`meshca was not ready within ${READY_TIMEOUT_MS / 1000} s:\n${server.lastLines(30)}`);
      }
      await sleep(50);
    }
    return server;
  }

  async ready() {
    if (this.exit) return false;
    try {
      return (await httpGet(`http://${this.addresses.monitoring}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }

  /** @param {number} n */
  lastLines(n) {
    return this.tail
      .slice(-n)
      .map((line) => `    | ${line}`)
      .join('\n');
  }

  /** PEM roots of the trust bundle, read by `meshca bundle` from the data dir or the server's --store. */
  bundlePem() {
    const extra = this.options.extraArgs ?? [];
    const store = extra.indexOf('--store');
    const source = store >= 0 && extra[store + 1] ? ['--store', extra[store + 1]] : ['--data-dir', this.options.dataDir];
    const result = spawnSync(process.execPath, [this.options.cli, 'bundle', ...source], {
      encoding: 'utf8',
      env: { ...process.env, MESHCA_KEK: this.options.kek },
    });
    if (result.status !== 0) throw new Error(`meshca bundle failed: ${result.stderr}`);
    return result.stdout;
  }

  /** An admin API client trusting the current bundle (the admin listener serves meshca's own chain). */
  admin() {
    const token = readFileSync(join(this.options.dataDir, 'admin-token'), 'utf8').trim();
    return new AdminClient(this.addresses.admin, token, this.bundlePem());
  }

  /** Prometheus text from /metrics. */
  async metrics() {
    return (await httpGet(`http://${this.addresses.monitoring}/metrics`)).body;
  }

  /** SIGTERM (drain, commit, close), then SIGKILL if it does not exit in time. */
  async stop() {
    this.stopping = true;
    if (this.exit) return this.exit;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.kill(), STOP_TIMEOUT_MS);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  kill() {
    if (!this.exit) this.child.kill('SIGKILL');
  }
}

export class AdminClient {
  /**
   * @param {string} baseUrl
   * @param {string} token
   * @param {string} caPem
   */
  constructor(baseUrl, token, caPem) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.agent = new Agent({ keepAlive: true, ca: caPem, servername: 'localhost' });
  }

  /**
   * @param {'GET' | 'POST'} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<{ status: number, json: any, ms: number }>}
   */
  request(method, path, body) {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        new URL(path, this.baseUrl),
        {
          method,
          agent: this.agent,
          servername: 'localhost',
          headers: {
            authorization: `Bearer ${this.token}`,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks = /** @type {Buffer[]} */ ([]);
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            const ms = performance.now() - started;
            const text = Buffer.concat(chunks).toString('utf8');
            let json;
            try {
              json = JSON.parse(text);
            } catch {
              json = text;
            }
            resolve({ status: res.statusCode ?? 0, json, ms });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  close() {
    this.agent.destroy();
  }
}

/**
 * Sum and count of Prometheus histograms/summaries, by metric name.
 * @param {string} text
 * @returns {Map<string, number>}
 */
export function parseMetricTotals(text) {
  const totals = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*_(?:sum|count))(?:\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m) totals.set(m[1], (totals.get(m[1]) ?? 0) + Number(m[2]));
  }
  return totals;
}

// ---- /proc accounting ----

let clockTicks = 0;
function ticksPerSecond() {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/**
 * CPU of a process and its live descendants (serve --workers forks worker processes; a single
 * server has none, so this equals cpuSeconds).
 * @param {number} pid
 * @returns {number}
 */
export function treeCpuSeconds(pid) {
  let children = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // no children file (old kernel) or the process is gone
  }
  return children.reduce((sum, child) => sum + (treeCpuSeconds(child) || 0), cpuSeconds(pid));
}

/**
 * User + system CPU seconds a process has consumed (all its threads: the event loop, the libuv pool
 * doing crypto and SQLite, V8's GC helpers).
 * @param {number} pid
 */
export function cpuSeconds(pid) {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/**
 * CPU seconds of one thread (/proc/<pid>/task/<tid>/stat); the main thread's tid is the pid.
 * @param {number} pid @param {number} tid
 */
export function threadCpuSeconds(pid, tid) {
  return statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
}

/**
 * CPU seconds of every live thread of a process, by tid. Node names all its threads "node", so
 * they are told apart by tid only; a thread that exits mid-window keeps counting in the process total.
 * @param {number} pid
 * @returns {Map<number, number>}
 */
export function threadsCpuSeconds(pid) {
  const out = new Map();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) out.set(Number(tid), statCpuSeconds(`/proc/${pid}/task/${tid}/stat`));
  } catch {
    // the process is gone
  }
  return out;
}

/** utime + stime of a /proc stat file, in seconds. @param {string} path */
function statCpuSeconds(path) {
  try {
    const stat = readFileSync(path, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond(); // utime, stime
  } catch {
    return NaN;
  }
}

/**
 * Pins a running process and all its threads to a CPU set (`taskset -a -p -c`).
 * @param {number} pid @param {string} cpus
 */
export function pinProcess(pid, cpus) {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/**
 * How the benchmark can pin: the server on the first CPU(s), the load on the rest, when `taskset`
 * exists and the machine has at least 2 CPUs the process may use.
 * @param {number} cpuCount
 * @returns {{ server: string, load: string } | { unavailable: string }}
 */
export function pinningPlan(cpuCount) {
  if (cpuCount < 2) return { unavailable: `only ${cpuCount} CPU available` };
  const probe = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) return { unavailable: 'taskset is not available (Debian/Ubuntu: apt-get install util-linux)' };
  const serverCpus = Math.max(1, Math.floor(cpuCount / 2));
  const range = (/** @type {number} */ a, /** @type {number} */ b) => (a === b ? String(a) : `${a}-${b}`);
  return { server: range(0, serverCpus - 1), load: range(serverCpus, cpuCount - 1) };
}

/**
 * @param {number} pid
 * @param {'VmRSS' | 'VmHWM'} field
 * @returns {number} bytes
 */
export function memoryBytes(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds the whole machine spent busy (every core; /proc/stat: all but idle and iowait).
 */
export function machineBusySeconds() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = fields;
    return (user + nice + system + irq + softirq + steal) / ticksPerSecond();
  } catch {
    return NaN;
  }
}

/**
 * Measures one scenario window: CPU % (100 % = one core) of the server, of the load generators, and
 * of everything else on the machine (this orchestrator included: other work shows up as noise), and
 * the server's peak RSS.
 * The peak comes from VmHWM after resetting it (clear_refs "5") at the start, cross-checked by
 * sampling VmRSS every 50 ms in case the kernel refuses the reset.
 */
export class ResourceWindow {
  /** @param {{ server: number, loadgens: number[] }} pids */
  constructor(pids) {
    this.pids = pids;
    this.started = performance.now();
    /** CLOCK_MONOTONIC in µs, the clock of V8 CPU profiles' timestamps (to cut a profile to this window) */
    this.monotonicStartUs = Number(process.hrtime.bigint() / 1000n);
    this.cpuStart = {
      server: treeCpuSeconds(pids.server),
      serverThreads: threadsCpuSeconds(pids.server),
      loadgens: pids.loadgens.map(cpuSeconds),
      machine: machineBusySeconds(),
    };
    let reset = false;
    try {
      writeFileSync(`/proc/${pids.server}/clear_refs`, '5');
      reset = true;
    } catch {
      // not permitted: fall back to sampling
    }
    this.hwmReset = reset;
    this.sampledPeak = memoryBytes(pids.server, 'VmRSS');
    this.timer = setInterval(() => {
      const rss = memoryBytes(pids.server, 'VmRSS');
      if (rss > this.sampledPeak) this.sampledPeak = rss;
    }, 50);
  }

  finish() {
    clearInterval(this.timer);
    const seconds = (performance.now() - this.started) / 1000;
    const serverCpu = treeCpuSeconds(this.pids.server) - this.cpuStart.server;
    const threads = [...threadsCpuSeconds(this.pids.server)].map(([tid, s]) => ({
      tid,
      cpuSeconds: s - (this.cpuStart.serverThreads.get(tid) ?? 0),
    }));
    const mainCpu = threads.find((t) => t.tid === this.pids.server)?.cpuSeconds ?? NaN;
    const loadgenCpu = this.pids.loadgens.reduce((sum, pid, i) => sum + (cpuSeconds(pid) - this.cpuStart.loadgens[i]), 0);
    const machineCpu = machineBusySeconds() - this.cpuStart.machine;
    const hwm = this.hwmReset ? memoryBytes(this.pids.server, 'VmHWM') : NaN;
    const peak = Math.max(Number.isNaN(hwm) ? 0 : hwm, this.sampledPeak || 0);
    return {
      wallSeconds: seconds,
      monotonicUs: { start: this.monotonicStartUs, end: Number(process.hrtime.bigint() / 1000n) },
      serverCpuPercent: (100 * serverCpu) / seconds,
      serverCpuSeconds: serverCpu,
      serverMainThreadCpuSeconds: mainCpu,
      /** every server thread that used CPU in the window, busiest first (tid; Node names them all "node") */
      serverThreads: threads.filter((t) => t.cpuSeconds > 0).sort((a, b) => b.cpuSeconds - a.cpuSeconds),
      loadgenCpuPercent: (100 * loadgenCpu) / seconds,
      otherCpuPercent: Math.max(0, (100 * (machineCpu - serverCpu - loadgenCpu)) / seconds),
      serverPeakRssMb: peak / 2 ** 20,
    };
  }
}

// ---- helpers ----

/**
 * Spawns a server under test, under `taskset -c cpus` when given (taskset execs the program, so the
 * pid is the program's and every thread it starts inherits the CPU set). Its output is appended to
 * `logFile`, and its last 200 lines are kept in `child.tail` for error reports.
 * @param {{ program: string, args: string[], cpus?: string, env?: NodeJS.ProcessEnv, logFile: string, tail: string[] }} spec
 */
export function spawnLogged({ program, args, cpus, env, logFile, tail }) {
  const [command, argv] = cpus ? ['taskset', ['-c', cpus, program, ...args]] : [program, args];
  const child = Object.assign(spawn(command, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] }), { tail });
  const log = createWriteStream(logFile, { flags: 'a' });
  log.write(`\n=== ${new Date().toISOString()} ${command} ${argv.join(' ')}\n`);
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on('data', (/** @type {Buffer} */ chunk) => {
      log.write(chunk);
      tail.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (tail.length > 200) tail.splice(0, tail.length - 200);
    });
  }
  // 'close', not 'exit': output may still be in the pipes when the process exits.
  child.once('close', () => log.end());
  return child;
}

/** @param {number} n distinct free loopback TCP ports */
export async function freePorts(n) {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map(
    (s) => /** @type {import('node:net').AddressInfo} */ (/** @type {import('node:net').Server} */ (s).address()).port,
  );
  await Promise.all(servers.map((s) => new Promise((r) => /** @type {import('node:net').Server} */ (s).close(r))));
  return ports;
}

/** @param {string} url @returns {Promise<{ status: number, body: string }>} */
function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { timeout: 5000 }, (res) => {
      const chunks = /** @type {Buffer[]} */ ([]);
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** @param {{ code: number | null, signal: string | null }} exit */
export function describeExit(exit) {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
