import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { StoreError } from './errors.js';

export interface DiskGuardOptions {
  /** The database file; its volume is the one watched. */
  readonly path: string;
  /** Fraction (0..1) of the volume that must stay free; 0 turns the guard off. */
  readonly minFreeRatio: number;
  /** Called on every sample (free fraction) and whenever the guard starts or stops refusing. */
  readonly onSample?: (freeRatio: number, low: boolean, changed: boolean) => void;
  /** How long one statfs sample is reused (default 1 s): cheap enough for every issuance. */
  readonly sampleMs?: number;
  readonly now?: () => number;
}

/**
 * Refuses new issuance records while the data volume is almost full. SQLite survives ENOSPC, but a
 * full volume also stops WAL checkpoints and admin changes; stopping early keeps room for those.
 */
export class DiskGuard {
  private sampledAt = -Infinity;
  private low = false;
  private freeRatio = 1;
  private readonly now: () => number;

  constructor(private readonly options: DiskGuardOptions) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Throws StoreError ERR_STORE_DISK_LOW while free space is under the threshold. */
  check(): void {
    if (this.options.minFreeRatio <= 0) return;
    if (this.now() - this.sampledAt >= (this.options.sampleMs ?? 1000)) this.sample();
    if (this.low) {
      throw new StoreError(
        'ERR_STORE_DISK_LOW',
        `only ${(this.freeRatio * 100).toFixed(1)}% of the data volume is free (--min-free-disk ${(this.options.minFreeRatio * 100).toFixed(1)}%); new certificates are refused until space is freed`,
      );
    }
  }

  private sample(): void {
    this.sampledAt = this.now();
    const stats = statfsSync(dirname(this.options.path));
    this.freeRatio = stats.blocks > 0 ? stats.bavail / stats.blocks : 1;
    const low = this.freeRatio < this.options.minFreeRatio;
    const changed = low !== this.low;
    this.low = low;
    this.options.onSample?.(this.freeRatio, low, changed);
  }
}
