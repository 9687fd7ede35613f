import { describe, expect, it } from 'vitest';
// Plain ESM shared with `npm run chaos`; it drives dist/ (built by the vitest global setup).
import { runChaos } from '../scripts/chaos.mjs';

interface ChaosResult {
  ok: boolean;
  violations: { label: string; problems: string[] }[];
  stats: { kills: number; restarts: number; received: number; checks: number; maxBundleSequence: number; adminOps: Record<string, number> };
}

describe('crash safety (short chaos run; `npm run chaos` runs the long one)', () => {
  it('SIGKILLs meshca under load and admin rotations at seeded moments; after every restart the invariants hold', async () => {
    const result = (await runChaos({
      iterations: 6,
      seed: 20261123,
      workers: 4,
      minUpMs: 400,
      maxUpMs: 1400,
      earlyKillRate: 0.25,
    })) as ChaosResult;
    const report = result.violations.map((v) => `${v.label}:\n${v.problems.join('\n')}`).join('\n\n');
    expect(report).toBe('');
    expect(result.ok).toBe(true);
    expect(result.stats.kills).toBe(6);
    expect(result.stats.restarts).toBe(5);
    // initial start + 5 restarts + the final restart
    expect(result.stats.checks).toBe(7);
    expect(result.stats.received).toBeGreaterThan(50);
    expect(Object.values(result.stats.adminOps).reduce((a, b) => a + b, 0)).toBeGreaterThan(3);
    expect(result.stats.maxBundleSequence).toBeGreaterThanOrEqual(1);
  }, 120_000);
});
