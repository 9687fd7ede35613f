import type { Logger } from 'pino';
import type { Store } from '../store/types.js';
import type { RevocationService } from './revocation.js';

export interface HousekeepingOptions {
  readonly store: Store;
  readonly revocation: RevocationService;
  readonly logger: Logger;
  readonly retentionMs: number;
  readonly crlValidityMs: number;
  /** Rows deleted per transaction; small so issuance commits are never blocked for long. */
  readonly pruneBatch?: number;
  readonly intervalMs?: number;
  /** Deletes pending authorities whose CSR was never answered; returns their ids. */
  readonly expirePending?: () => Promise<string[]>;
}

export interface Housekeeping {
  /** One full pass now (also what the timer runs). */
  runOnce(): Promise<{ pruned: number }>;
  stop(): void;
}

/** Background upkeep: keep CRLs fresh before nextUpdate, prune long-expired certificate rows in batches, drop expired pending CSRs. */
export function startHousekeeping(options: HousekeepingOptions): Housekeeping {
  const batch = options.pruneBatch ?? 500;
  let stopped = false;
  const runOnce = async () => {
    await options.revocation.refreshAll();
    let pruned = 0;
    for (;;) {
      const n = await options.store.pruneExpired(new Date(Date.now() - options.retentionMs), batch);
      pruned += n;
      if (n < batch || stopped) break;
      await new Promise((resolve) => setImmediate(resolve)); // let issuance run between batches
    }
    const expiredBefore = new Date(Date.now() - options.retentionMs);
    for (let n = batch; n === batch && !stopped; ) pruned += n = await options.store.pruneJwtSvids(expiredBefore, batch);
    if (pruned > 0) options.logger.info({ pruned }, 'pruned expired certificate and JWT-SVID records');
    const expired = (await options.expirePending?.()) ?? [];
    if (expired.length > 0) options.logger.warn({ pending: expired }, 'deleted pending authorities whose certificate never came back; request a new CSR if still needed');
    return { pruned };
  };
  const interval = options.intervalMs ?? Math.min(options.crlValidityMs / 4, 15 * 60_000);
  const timer = setInterval(() => void runOnce().catch((error: unknown) => options.logger.warn({ err: error }, 'housekeeping pass failed')), interval);
  timer.unref();
  return {
    runOnce,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
