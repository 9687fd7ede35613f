import type { AuditEventInput } from '../store/types.js';

/** Longest route kept in an audit row: enough to see what was probed, not a 6 KB attacker path. */
export const AUDITED_ROUTE_CHARS = 200;
const MAX_SOURCES = 10_000;
const MAX_ROUTES_PER_SOURCE = 5;

interface Tally {
  count: number;
  first: Date;
  last: Date;
  readonly routes: Set<string>;
  readonly reasons: Set<string>;
}

/**
 * Failed admin authentications, aggregated: at most one audit row per source per window (default a
 * minute) with a count, instead of one row per attempt. Successful actions are audited elsewhere, unchanged.
 */
export class FailedAuthAudit {
  private tallies = new Map<string, Tally>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly append: (event: AuditEventInput) => Promise<void>,
    private readonly onError: (error: unknown) => void,
    windowMs = 60_000,
  ) {
    this.timer = setInterval(() => void this.flush(), windowMs);
    this.timer.unref();
  }

  note(source: string, route: string, reason: string, at = new Date()): void {
    const key = this.tallies.has(source) || this.tallies.size < MAX_SOURCES ? source : 'other';
    const tally = this.tallies.get(key) ?? { count: 0, first: at, last: at, routes: new Set<string>(), reasons: new Set<string>() };
    tally.count++;
    tally.last = at;
    if (tally.routes.size < MAX_ROUTES_PER_SOURCE) tally.routes.add(route.slice(0, AUDITED_ROUTE_CHARS));
    if (tally.reasons.size < MAX_ROUTES_PER_SOURCE) tally.reasons.add(reason);
    this.tallies.set(key, tally);
  }

  /** Writes one row per source seen since the last flush. */
  async flush(): Promise<void> {
    const tallies = this.tallies;
    this.tallies = new Map();
    await Promise.all(
      [...tallies].map(([source, t]) =>
        this.append({
          actor: source === 'other' ? 'ip:other' : `ip:${source}`,
          action: 'admin.authenticate',
          target: [...t.routes][0]!,
          result: 'denied',
          details: {
            count: t.count,
            from: t.first.toISOString(),
            to: t.last.toISOString(),
            routes: [...t.routes],
            reasons: [...t.reasons],
          },
          at: t.last,
        }).catch(this.onError),
      ),
    );
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
