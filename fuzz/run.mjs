#!/usr/bin/env node
// @ts-check
// meshca fuzz runner: `npm run fuzz -- --iterations N [--seed S] [--target csr|token|spiffe|admin|grpc|h2]`.
// Runs against the compiled code in dist/ with plain node (`npm run fuzz` builds first). See
// docs/fuzzing.md for the targets and their invariants.

import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { status as grpcStatus } from '@grpc/grpc-js';
import { pino } from 'pino';
import {
  adminTarget,
  csrTarget,
  formatViolations,
  grpcTarget,
  h2Target,
  KNOWN_ISSUES,
  loadModules,
  runFuzz,
  spiffeTarget,
  tokenTarget,
} from './index.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ALL = ['csr', 'token', 'spiffe', 'admin', 'grpc', 'h2'];
/** admin and grpc cases cost milliseconds, not microseconds: by default they run a share of N. */
const SHARE = { csr: 1, token: 1, spiffe: 1, admin: 0.25, grpc: 0.05, h2: 1 };

const HELP = `Usage: npm run fuzz -- [flags]

  --iterations N     cases per target (default 2000); unless named with --target, admin runs N/4
                     and grpc N/20 (they cost milliseconds per case)
  --seed S           32-bit seed (default: random, printed so a run can be repeated)
  --target T[,T]     any of ${ALL.join(', ')} (default: all)
  --case I           replay case I of one --target with --seed, printing the input and outcome
  --time-bound MS    per-case time bound for csr, token and spiffe (default 50)
  --json FILE        also write the full reports as JSON
`;

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '2000' },
    seed: { type: 'string' },
    target: { type: 'string', default: 'all' },
    case: { type: 'string' },
    'time-bound': { type: 'string', default: '50' },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const targets = values.target === 'all' ? ALL : values.target.split(',').map((t) => t.trim());
for (const t of targets) if (!ALL.includes(t)) fail(`unknown target "${t}"; use one of ${ALL.join(', ')}`);
const iterations = positiveInt('--iterations', values.iterations);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(values.seed) >>> 0;
if (values.seed !== undefined && !/^\d+$/.test(values.seed)) fail('--seed must be a non-negative integer');
const only = values.case === undefined ? undefined : Number(values.case);
if (only !== undefined && (targets.length !== 1 || values.seed === undefined || !Number.isInteger(only)))
  fail('--case needs exactly one --target and a --seed');
const timeBoundMs = positiveInt('--time-bound', values['time-bound']);
if (!existsSync(join(ROOT, 'dist', 'cli.js'))) fail('dist/ is missing: run "npm run build" (npm run fuzz does it for you)');
if (newestMtime(join(ROOT, 'src')) > statSync(join(ROOT, 'dist', 'cli.js')).mtimeMs) {
  process.stderr.write('fuzz: warning: src/ is newer than dist/; this run tests the old build (npm run fuzz rebuilds first)\n');
}

function newestMtime(dir) {
  return readdirSync(dir, { withFileTypes: true }).reduce(
    (newest, e) => Math.max(newest, e.isDirectory() ? newestMtime(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs),
    0,
  );
}

function fail(message) {
  process.stderr.write(`fuzz: ${message}\n\n${HELP}`);
  process.exit(2);
}

function positiveInt(flag, text) {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) fail(`${flag} must be a positive integer`);
  return n;
}

const corpus = (name) => JSON.parse(readFileSync(join(ROOT, 'fuzz', 'corpus', name), 'utf8'));
const mods = await loadModules((path) => import(pathToFileURL(join(ROOT, 'dist', `${path}.js`)).href), { pino, grpcStatus });

let unhandled = 0;
process.on('unhandledRejection', (reason) => {
  unhandled++;
  process.stderr.write(`\nunhandled rejection: ${(reason instanceof Error && reason.stack) || reason}\n`);
});

const factories = {
  csr: () => csrTarget(mods, corpus('csrs.json'), { timeBoundMs }),
  token: () => tokenTarget(mods, corpus('jwt-keys.json'), { timeBoundMs }),
  spiffe: () => spiffeTarget(mods, { timeBoundMs }),
  admin: () => adminTarget(mods, corpus('plugin-ca.json')),
  grpc: () => grpcTarget(mods, corpus('csrs.json'), corpus('jwt-keys.json')),
  h2: () => h2Target(mods, { timeBoundMs }),
};

const explicit = values.target !== 'all';
process.stdout.write(`meshca fuzz: seed ${seed}, targets ${targets.join(', ')}${only === undefined ? '' : `, case ${only}`}\n`);
const reports = [];
for (const name of targets) {
  const count = explicit ? iterations : Math.max(1, Math.round(iterations * SHARE[name]));
  const setupStarted = performance.now();
  const target = await factories[name]();
  const setupMs = performance.now() - setupStarted;
  let lastPrint = performance.now();
  const report = await runFuzz(target, {
    seed,
    iterations: count,
    only,
    knownIssues: KNOWN_ISSUES,
    trace: only !== undefined,
    onProgress: (r) => {
      if (performance.now() - lastPrint < 2000 || !process.stderr.isTTY) return;
      lastPrint = performance.now();
      process.stderr.write(
        `\r  ${name}: ${r.cases}/${count} cases, ${Object.values(r.violationKinds).reduce((a, b) => a + b, 0)} violations   `,
      );
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  const final = (await target.finalCheck?.()) ?? [];
  for (const message of final)
    report.violations.push({ target: name, seed, index: -1, kind: message, message, input: '', note: 'after the batch' });
  await target.close?.();
  report.setupMs = setupMs;
  reports.push(report);
  printReport(report, count);
  for (const t of report.trace ?? []) {
    process.stdout.write(`  case ${t.index}: ${t.outcome} in ${t.ms.toFixed(1)} ms\n    input: ${t.note}\n    base64: ${t.base64}\n`);
  }
}

function printReport(r, count) {
  const violations =
    r.violations.length === 0
      ? 0
      : Object.values(r.violationKinds).reduce((a, b) => a + b, 0) + r.violations.filter((v) => v.index === -1).length;
  const known = Object.entries(r.known)
    .map(([id, k]) => `${id}×${k.count}`)
    .join(' ');
  process.stdout.write(
    `${r.target.padEnd(7)} ${String(r.cases).padStart(7)} cases  ${(r.elapsedMs / 1000).toFixed(1).padStart(6)} s  ${Math.round(
      (r.cases / r.elapsedMs) * 1000,
    )
      .toString()
      .padStart(
        6,
      )}/s  max case ${r.maxCaseMs.toFixed(1)} ms (#${r.slowestCase})  setup ${(r.setupMs / 1000).toFixed(1)} s  violations ${violations}${known ? `  known ${known}` : ''}\n`,
  );
  const top = Object.entries(r.outcomes)
    .sort((a, b) => b[1] - a[1])
    .slice(0, only === undefined ? 8 : 1);
  process.stdout.write(`        outcomes: ${top.map(([k, n]) => `${k} ${n}`).join(', ')}\n`);
  if (only === undefined && count !== r.cases) process.stdout.write(`        (${count} planned)\n`);
  const text = formatViolations(r);
  if (text) process.stdout.write(text.replace(/^/gm, '  ') + '\n');
  for (const v of r.violations.filter((x) => x.index === -1)) process.stdout.write(`  after the batch: ${v.message}\n`);
  for (const [id, k] of Object.entries(r.known)) {
    process.stdout.write(
      `  known issue ${id} (${k.count}×): ${k.summary}\n    e.g. case ${k.first.index}: ${k.first.message.slice(0, 200)}\n`,
    );
  }
}

if (unhandled > 0) process.stdout.write(`unhandled rejections: ${unhandled}\n`);
if (values.json)
  writeFileSync(
    values.json,
    JSON.stringify({ seed, reports, unhandled }, (_key, v) => (v instanceof RegExp ? String(v) : v), 2),
  );
const failed = reports.some((r) => r.violations.length > 0) || unhandled > 0;
process.stdout.write(failed ? `FAILED (seed ${seed})\n` : `ok (seed ${seed})\n`);
// Lingering handles (gRPC channels, timers of hung cases) must not keep a finished run alive.
process.exit(failed ? 1 : 0);
