// @ts-check
// Summarises V8 .cpuprofile files (written by the server under `node --cpu-prof`, i.e. `--profile`;
// one file per thread): where a thread spent its time, by package/file and by function (self time).

import { readFileSync } from 'node:fs';

/**
 * @typedef {{ id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }} ProfileNode
 */

/**
 * Self time of the main thread, grouped by where the code lives.
 * @param {string} path a .cpuprofile file
 * @param {number} [top] how many functions to list
 * @param {string} [thread] which thread the profile is of
 * @param {{ start: number, end: number }} [window] only samples in this CLOCK_MONOTONIC µs window
 * @returns {string} a plain-text report
 */
export function summarizeProfile(path, top = 25, thread = 'main thread', window = undefined) {
  /** @type {{ nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }} */
  const profile = JSON.parse(readFileSync(path, 'utf8'));
  /** @type {Map<number, ProfileNode>} */
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  /** @type {Map<number, number>} µs per node */
  const self = new Map();
  let t = profile.startTime;
  profile.samples.forEach((id, i) => {
    t += profile.timeDeltas[i] ?? 0;
    if (window && (t < window.start || t > window.end)) return;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);

  /** @type {Map<string, number>} */
  const byArea = new Map();
  /** @type {Map<string, number>} */
  const byFunction = new Map();
  for (const [id, us] of self) {
    const frame = /** @type {ProfileNode} */ (nodes.get(id)).callFrame;
    const area = areaOf(frame.url, frame.functionName);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
    const where = frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '';
    const key = `${frame.functionName || '(anonymous)'} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  const pct = (/** @type {number} */ us) => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
  const busy = total - (byArea.get('(idle)') ?? 0);
  const lines = [
    `${thread}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / total).toFixed(0)} %)`,
    '',
    'self time by area:',
    ...[...byArea]
      .sort((a, b) => b[1] - a[1])
      .slice(0, Math.min(20, top + 3))
      .map(([k, us]) => `  ${pct(us)}  ${k}`),
    '',
    `top ${top} functions by self time:`,
    ...[...byFunction]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => `  ${pct(us)}  ${k}`),
  ];
  return lines.join('\n') + '\n';
}

/** @param {string} url @param {string} fn */
function areaOf(url, fn) {
  if (!url) return fn.startsWith('(') ? fn : '(native / builtins)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith('node:')) return `node: ${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const own = /\/dist\/(.+)$/.exec(url);
  if (own) return `meshca ${own[1]}`;
  return shortUrl(url);
}

/** @param {string} url */
function shortUrl(url) {
  return url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/');
}

/**
 * The issuance pipeline's stages, recognised by where a profiled frame's code lives. A sample
 * counts for the innermost frame on its stack that matches a stage, so a Buffer builtin called
 * from the CSR parser is CSR parsing and a grpc-js frame calling the handler is not "gRPC" for the
 * handler's own work.
 * @type {{ stage: string, test: (url: string, fn: string) => boolean }[]}
 */
const STAGE_RULES = [
  { stage: 'token check (JWT, cache)', test: (url) => url.includes('/dist/authn/') || url.includes('node_modules/jose/') },
  {
    stage: 'key import + signature verify',
    test: (url, fn) =>
      url.includes('/dist/pki/verify-pool.js') ||
      url.includes('/dist/pki/verify-worker.js') ||
      (url.includes('/dist/pki/csr.js') && /^(verificationKey|signatureCheck|ecPublicPoint|verifyCsrSignature|exactCopy)$/.test(fn)) ||
      (url === 'node:internal/crypto/sig' && /^verify/.test(fn)) ||
      url === 'node:internal/crypto/keys' ||
      // The verifier thread's WebCrypto raw-point import (EC keys).
      url === 'node:internal/crypto/ec' ||
      url === 'node:internal/crypto/webcrypto',
  },
  {
    stage: 'CSR parse (PEM + DER)',
    test: (url, fn) =>
      url.includes('/dist/pki/csr.js') ||
      (url.includes('/dist/pki/der.js') &&
        /^(DerReader|top|sequence|children|elementAt|oid|bitString|string|integer|smallInteger|raw|expect|inner|octetString|null)$/.test(
          fn,
        )) ||
      (url.includes('/dist/pki/pem.js') && fn !== 'pemEncode'),
  },
  { stage: 'policy', test: (url) => url.includes('/dist/authority/policy.js') },
  {
    stage: 'signing (TBS DER + ECDSA call)',
    test: (url) =>
      url.includes('/dist/pki/leaf.js') ||
      url.includes('/dist/pki/der.js') ||
      url.includes('/dist/pki/serial.js') ||
      url.includes('/dist/authority/signer.js') ||
      url === 'node:internal/crypto/sig',
  },
  { stage: 'PEM encode', test: (url, fn) => url.includes('/dist/pki/pem.js') && fn === 'pemEncode' },
  { stage: 'store', test: (url) => url.includes('/dist/store/') || url.includes('node_modules/better-sqlite3/') },
  { stage: 'issuance pipeline (glue)', test: (url) => url.includes('/dist/authority/') },
  {
    stage: 'handler: logs and metrics',
    test: (url) =>
      url.includes('node_modules/pino') || url.includes('node_modules/prom-client/') || url.includes('node_modules/sonic-boom/'),
  },
  // meshca's HTTP/2 layer (dist/grpc/h2/) is transport; the rest of dist/grpc/ is the handler.
  { stage: 'handler (metadata, status)', test: (url) => url.includes('/dist/grpc/') && !url.includes('/dist/grpc/h2/') },
  {
    stage: 'gRPC / HTTP/2 / TLS',
    test: (url) =>
      url.includes('/dist/grpc/h2/') ||
      url.includes('node_modules/@grpc/') ||
      url.includes('node_modules/protobufjs/') ||
      url.includes('node_modules/@protobufjs/') ||
      /^node:(internal\/)?(http2|tls|_tls|net|stream|internal\/streams|internal\/http2|internal\/tls)/.test(url),
  },
  { stage: 'garbage collection', test: (_url, fn) => fn === '(garbage collector)' },
];

/**
 * Busy time of one thread's profile by pipeline stage (µs), idle excluded, counting only samples
 * inside `window` (CLOCK_MONOTONIC µs, the clock of the profile's timestamps).
 * @param {string} path a .cpuprofile file
 * @param {{ start: number, end: number }} window
 * @returns {{ busyUs: number, stages: Map<string, number> }}
 */
export function stageTimes(path, window) {
  /** @type {{ nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number }} */
  const profile = JSON.parse(readFileSync(path, 'utf8'));
  /** @type {Map<number, ProfileNode>} */
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  /** @type {Map<number, number>} */
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  /** @type {Map<number, string>} stage per node, memoised */
  const stageOf = new Map();
  const classify = (/** @type {number} */ id) => {
    const path = [];
    /** @type {string | undefined} */
    let found;
    for (let at = /** @type {number | undefined} */ (id); at !== undefined; at = parent.get(at)) {
      const known = stageOf.get(at);
      if (known !== undefined) {
        found = known;
        break;
      }
      path.push(at);
      const frame = /** @type {ProfileNode} */ (nodes.get(at)).callFrame;
      const rule = STAGE_RULES.find((r) => r.test(frame.url, frame.functionName));
      if (rule) {
        found = rule.stage;
        break;
      }
    }
    // Everything below a match (and the match itself) belongs to it; an unmatched stack is "other".
    const stage = found ?? 'other (event loop, timers, Node internals)';
    for (const at of path) stageOf.set(at, stage);
    return stage;
  };
  const stages = new Map();
  let busyUs = 0;
  let t = profile.startTime;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    t += us;
    if (t < window.start || t > window.end) return;
    const fn = /** @type {ProfileNode} */ (nodes.get(id)).callFrame.functionName;
    if (fn === '(idle)' || fn === '(root)') return;
    busyUs += us;
    const stage = fn === '(program)' ? 'native (V8/Node C++ not attributed to JS)' : classify(id);
    stages.set(stage, (stages.get(stage) ?? 0) + us);
  });
  return { busyUs, stages };
}

/**
 * The per-stage table for one measured window (e.g. steady-c32): every profiled thread's busy time
 * by stage, per certificate issued in the window. Profiled "busy" time is wall time spent in code,
 * so a thread blocked in a system call (the writer thread in fsync) counts as busy; the measured
 * CPU per certificate of the main thread and of the whole process (from /proc) come with it.
 * Threads without a JS profile (libuv's pool, V8's GC helpers)
 * show up only in the difference between the process and the profiled JS threads.
 * @param {{ file: string, thread: string }[]} profiles main thread first
 * @param {{ name: string, window: { start: number, end: number }, certificates: number, cpuMsPerCert: number, mainThreadCpuMsPerCert: number }} measured
 * @returns {{ rows: { stage: string, thread: string, usPerCert: number }[], text: string }}
 */
export function stageBreakdown(profiles, measured) {
  /** @type {{ stage: string, thread: string, usPerCert: number }[]} */
  const rows = [];
  for (const { file, thread } of profiles) {
    const { stages } = stageTimes(file, measured.window);
    // Node names every thread "node"; a worker is named after what it mostly does (verifier, writer, checkpointer).
    const top = [...stages]
      .filter(([stage]) => !stage.startsWith('other') && !stage.startsWith('native') && stage !== 'garbage collection')
      .sort((a, b) => b[1] - a[1])[0];
    const name = thread === 'main' || !top ? thread : `${thread}: ${top[0]}`;
    for (const [stage, us] of stages) rows.push({ stage, thread: name, usPerCert: us / measured.certificates });
  }
  rows.sort((a, b) => b.usPerCert - a.usPerCert);
  const sum = (/** @type {'main' | 'workers'} */ which) =>
    rows.filter((r) => (r.thread === 'main') === (which === 'main')).reduce((a, r) => a + r.usPerCert, 0);
  const text = [
    `per-stage breakdown of ${measured.name} (${measured.certificates.toLocaleString('en-US')} certificates; profiled busy time, with profiler overhead):`,
    ...rows.filter((r) => r.usPerCert >= 0.5).map((r) => `  ${r.usPerCert.toFixed(1).padStart(7)} µs/cert  ${r.stage} [${r.thread}]`),
    `  measured CPU (/proc): main thread ${(1000 * measured.mainThreadCpuMsPerCert).toFixed(0)} µs/cert (profiled busy ${sum('main').toFixed(0)}); all threads ${(1000 * measured.cpuMsPerCert).toFixed(0)} µs/cert, of which other threads ${(1000 * (measured.cpuMsPerCert - measured.mainThreadCpuMsPerCert)).toFixed(0)} (profiled JS workers busy ${sum('workers').toFixed(0)}, incl. fsync waits; the rest is libuv's pool and V8 helpers)`,
  ].join('\n');
  return { rows, text };
}
