// @ts-check
// Latency statistics over exact samples (a sorted Float64Array: fine up to a few million samples).

/**
 * @param {Float64Array[]} parts latencies in ms from each load generator
 * @returns {Float64Array} all of them, ascending
 */
export function mergeSorted(parts) {
  const all = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    all.set(p, offset);
    offset += p.length;
  }
  return all.sort();
}

/**
 * Nearest-rank percentile of an ascending array.
 * @param {Float64Array | number[]} sorted
 * @param {number} p 0 < p <= 100
 */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * @param {Float64Array | number[]} sorted ascending latencies in ms
 * @returns {{ p50: number, p90: number, p99: number, max: number, mean: number }}
 */
export function latencySummary(sorted) {
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
  };
}

/**
 * Adds up per-code error counts.
 * @param {Record<string, number>[]} parts
 */
export function mergeCounts(parts) {
  /** @type {Record<string, number>} */
  const total = {};
  for (const part of parts) for (const [k, v] of Object.entries(part)) total[k] = (total[k] ?? 0) + v;
  return total;
}

/** @param {Record<string, number>} errors */
export const errorTotal = (errors) => Object.values(errors).reduce((a, b) => a + b, 0);
