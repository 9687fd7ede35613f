import type { Logger } from 'pino';
import type { SingletonGate } from '../store/fence.js';
import type { Store } from '../store/types.js';
import type { RevocationService } from './revocation.js';

export interface HousekeepingOptions {
  readonly store: Store;
  readonly revocation: RevocationService;
  readonly logger: Logger;
  readonly retentionMs: number;
  /** Audit events older than this are deleted. */
  readonly auditRetentionMs: number;
  readonly crlValidityMs: number;
  /** Rows deleted per transaction; small so issuance commits are never blocked for long. */
  readonly pruneBatch?: number;
  readonly intervalMs?: number;
  /** Replicas on a shared store: only the lease holder re-signs CRLs, prunes and expires pending CSRs. */
  readonly singleton?: SingletonGate;
  /** Deletes pending authorities whose CSR was never answered; returns their ids. */
  readonly expirePending?: () => Promise<string[]>;
}

export interface Housekeeping {
  /** One full pass now (also what the timer runs). */
  runOnce(): Promise<{ pruned: number; auditPruned: number }>;
  stop(): void;
}

/** Background upkeep: keep CRLs fresh before nextUpdate, prune long-expired certificate rows and old audit events in batches, drop expired pending CSRs. */
export function startHousekeeping(options: HousekeepingOptions): Housekeeping {
  const batch = options.pruneBatch ?? 500;
  let stopped = false;
  const inBatches = async (prune: (batch: number) => Promise<number>) => {
    let total = 0;
    for (;;) {
      const n = await prune(batch);
      total += n;
      if (n < batch || stopped) return total;
      await new Promise((resolve) => setImmediate(resolve)); // let issuance run between batches
    }
  };
  const pass = async () => {
    await options.revocation.refreshAll();
    const expiredBefore = new Date(Date.now() - options.retentionMs);
    const pruned =
      (await inBatches((n) => options.store.pruneExpired(expiredBefore, n))) +
      (await inBatches((n) => options.store.pruneJwtSvids(expiredBefore, n)));
    if (pruned > 0) options.logger.info({ pruned }, 'pruned expired certificate and JWT-SVID records');
    const expired = (await options.expirePending?.()) ?? [];
    if (expired.length > 0)
      options.logger.warn(
        { pending: expired },
        'deleted pending authorities whose certificate never came back; request a new CSR if still needed',
      );
    const auditPruned = await inBatches((n) => options.store.pruneAudit(new Date(Date.now() - options.auditRetentionMs), n));
    if (auditPruned > 0) options.logger.info({ auditPruned }, 'pruned audit events older than --audit-retention');
    return { pruned, auditPruned };
  };
  const runOnce = async () => (options.singleton ? ((await options.singleton(pass)) ?? { pruned: 0, auditPruned: 0 }) : pass());
  const interval = options.intervalMs ?? Math.min(options.crlValidityMs / 4, 15 * 60_000);
  const timer = setInterval(
    () => void runOnce().catch((error: unknown) => options.logger.warn({ err: error }, 'housekeeping pass failed')),
    interval,
  );
  timer.unref();
  return {
    runOnce,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
