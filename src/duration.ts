/** Go-style durations as Istio and Kubernetes users write them: "90s", "24h", "1h30m", plus "d" and "y". */
const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  y: 365 * 86_400_000,
};

const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d|y)/y;

/** Milliseconds for a duration string; throws with an example of the accepted form. */
export function parseDuration(input: string): number {
  const text = input.trim();
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    PART_RE.lastIndex = pos;
    const m = PART_RE.exec(text);
    const unitMs = UNIT_MS[m?.[2] ?? ''];
    if (!m || unitMs === undefined) break;
    total += Number(m[1]) * unitMs;
    pos = PART_RE.lastIndex;
  }
  if (text.length === 0 || pos !== text.length || !Number.isFinite(total)) {
    throw new Error(`invalid duration "${input}": use e.g. 90s, 30m, 24h, 1h30m, 7d or 10y`);
  }
  return Math.round(total);
}
