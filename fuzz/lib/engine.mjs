// @ts-check
// The fuzz loop shared by `npm test` (test/fuzz.test.ts) and `npm run fuzz` (fuzz/run.mjs).
//
// A target is { name, timeBoundMs, hangMs, retime, generate(rng, index), execute(input), describe(input) }.
// `execute` resolves { outcome, violations, ms? } where a violation is a string or { message, stack }
// and `ms`, when given, is the time spent in the code under test (oracle work excluded).
// The engine adds two invariants of its own: a case never takes longer than `hangMs` (a hang),
// and never longer than `timeBoundMs` (re-timed when `retime` is set, so one GC pause or a busy
// neighbour does not count as a slow input).

import { performance } from 'node:perf_hooks';
import { caseSeed, Rng } from './rng.mjs';

const HANG = Symbol('hang');

function withDeadline(promise, ms) {
  let timer;
  const deadline = new Promise((resolve) => {
    timer = setTimeout(() => resolve(HANG), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Digits collapsed, so "offset 17" and "offset 23" are one kind of violation. */
function kindOf(message) {
  return message.replace(/\d+/g, 'N').slice(0, 160);
}

/**
 * One reported violation: enough to replay the case (seed, index) and to read what went wrong.
 * @typedef {{ target: string, seed: number, index: number, kind: string, message: string, stack?: string, input: string, note: string, ms?: number }} Violation
 */

/**
 * Runs `iterations` cases of `target`; case i uses Rng(caseSeed(seed, target.name, i)), so any
 * case replays alone with { only: i }.
 */
export async function runFuzz(target, options) {
  const { seed, iterations, only, maxExamplesPerKind = 3, onProgress, knownIssues = [] } = options;
  const known = knownIssues.filter((k) => k.target === target.name);
  const report = {
    target: target.name,
    seed,
    cases: 0,
    elapsedMs: 0,
    maxCaseMs: 0,
    slowestCase: -1,
    outcomes: {},
    violations: /** @type {Violation[]} */ ([]),
    violationKinds: {},
    /** Known-issue id -> { count, first: violation record }. */
    known: {},
  };
  const started = performance.now();
  const indices = only === undefined ? { from: 0, to: iterations } : { from: only, to: only + 1 };
  for (let index = indices.from; index < indices.to; index++) {
    const input = await target.generate(new Rng(caseSeed(seed, target.name, index)), index);
    let result = await timeCase(target, input);
    if (result.ms > target.timeBoundMs && target.retime && result.value !== HANG) {
      // Confirm on quiet re-runs: the fastest of up to three more must still exceed the bound (a GC
      // pause or a busy neighbour is not a slow input). Stop early once clearly fast.
      for (let i = 0; i < 3 && result.ms > target.timeBoundMs / 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        const again = await timeCase(target, input);
        if (again.ms < result.ms) result = { ...again, value: result.value };
      }
    }
    report.cases++;
    if (result.ms > report.maxCaseMs) {
      report.maxCaseMs = result.ms;
      report.slowestCase = index;
    }
    const found = [];
    let outcome;
    if (result.value === HANG) {
      outcome = 'hang';
      found.push({ message: `no answer within ${target.hangMs} ms (hang)` });
    } else if (result.error !== undefined) {
      outcome = 'harness-error';
      found.push({ message: `the harness itself threw: ${result.error?.message ?? result.error}`, stack: result.error?.stack });
    } else {
      outcome = result.value.outcome;
      for (const v of result.value.violations) found.push(typeof v === 'string' ? { message: v } : v);
      if (result.ms > target.timeBoundMs)
        found.push({ message: `took ${result.ms.toFixed(1)} ms, over the ${target.timeBoundMs} ms bound` });
    }
    report.outcomes[outcome] = (report.outcomes[outcome] ?? 0) + 1;
    if (options.trace) (report.trace ??= []).push({ index, outcome, ms: result.ms, ...target.describe(input) });
    for (const v of found) {
      const issue = known.find((k) => k.match.test(v.message));
      if (issue) {
        const entry = (report.known[issue.id] ??= { count: 0, summary: issue.summary, first: undefined });
        entry.count++;
        entry.first ??= { index, message: v.message, ...target.describe(input) };
        continue;
      }
      const kind = kindOf(v.message);
      const count = (report.violationKinds[kind] = (report.violationKinds[kind] ?? 0) + 1);
      if (count <= maxExamplesPerKind) {
        const { base64, note } = target.describe(input);
        report.violations.push({
          target: target.name,
          seed,
          index,
          kind,
          message: v.message,
          stack: v.stack,
          input: base64,
          note,
          ms: Math.round(result.ms * 10) / 10,
        });
      }
    }
    onProgress?.(report, index);
  }
  report.elapsedMs = performance.now() - started;
  return report;
}

async function timeCase(target, input) {
  const t0 = performance.now();
  try {
    const value = await withDeadline(
      Promise.resolve().then(() => target.execute(input)),
      target.hangMs,
    );
    return { value, ms: value !== HANG && typeof value.ms === 'number' ? value.ms : performance.now() - t0 };
  } catch (error) {
    return { error, ms: performance.now() - t0 };
  }
}

/** One line per violation kind plus examples; empty string when clean. */
export function formatViolations(report) {
  if (report.violations.length === 0) return '';
  const lines = [
    `${report.target}: ${Object.values(report.violationKinds).reduce((a, b) => a + b, 0)} violation(s) in ${report.cases} cases (seed ${report.seed})`,
  ];
  for (const v of report.violations) {
    lines.push(`  case ${v.index}: ${v.message}`);
    if (v.note) lines.push(`    input: ${v.note}`);
    lines.push(`    base64: ${v.input.length > 400 ? v.input.slice(0, 400) + `... (${v.input.length} chars)` : v.input}`);
    if (v.stack) lines.push(`    ${v.stack.split('\n').slice(0, 6).join('\n    ')}`);
  }
  return lines.join('\n');
}

/** "TypeError: message" plus the stack, for a violation record. */
export function describeError(error) {
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack };
  return { name: typeof error, message: String(error), stack: undefined };
}

/** A violation for an error of the wrong class. */
export function wrongError(where, error, expected) {
  const e = describeError(error);
  return { message: `${where} threw ${e.name} (expected only ${expected}): ${e.message.slice(0, 200)}`, stack: e.stack };
}
