import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Pool } from 'pg';
import { runFenced, type LeaseFence, type SingletonGate } from '../fence.js';

export interface LeaseOptions {
  readonly name: string;
  /** How long a holder keeps the lease without renewing (database clock). */
  readonly ttlMs?: number;
  readonly logger?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

const DEFAULT_TTL_MS = 15_000;

/**
 * Acquires or renews in one statement, judged by the database's clock (replicas' clocks may
 * disagree): the holder renews; anyone takes an expired lease, and a takeover bumps the epoch, so a
 * stalled former holder's fenced writes are refused.
 */
const ACQUIRE = `INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
  ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    epoch = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.epoch ELSE leases.epoch + 1 END,
    expires_at = EXCLUDED.expires_at
  WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
  RETURNING epoch`;

const RELEASE = "UPDATE leases SET expires_at = now() - interval '1 millisecond' WHERE name = $1 AND holder = $2";

/** A lease row shared by the replicas on one PostgreSQL; renewed in the background while held. */
export class PostgresLease {
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  private epoch: number | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly ttlMs: number;
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly options: LeaseOptions,
  ) {
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.timer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
    void this.renew();
  }

  /** The epoch while this process holds the lease. */
  get heldEpoch(): number | undefined {
    return this.epoch;
  }

  /** Runs the job (fenced) if this process holds the lease after trying to acquire it now. */
  readonly gate: SingletonGate = Object.assign(
    async <T>(job: () => Promise<T>): Promise<T | undefined> => {
      const epoch = await this.renew();
      if (epoch === undefined) return undefined;
      const fence: LeaseFence = { name: this.options.name, holder: this.holder, epoch };
      return runFenced(fence, job);
    },
    { held: () => this.epoch !== undefined },
  );

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.epoch === undefined) return;
    this.epoch = undefined;
    await this.pool.query(RELEASE, [this.options.name, this.holder]).catch(() => undefined);
  }

  private async renew(): Promise<number | undefined> {
    if (this.stopped) return undefined;
    let epoch: number | undefined;
    try {
      const { rows } = await this.pool.query<{ epoch: number }>(ACQUIRE, [this.options.name, this.holder, this.ttlMs]);
      epoch = rows[0]?.epoch;
    } catch (error) {
      // Unreachable database: assume the lease lost (another replica may take it once it expires).
      if (this.epoch !== undefined)
        this.options.logger?.warn({ err: error, lease: this.options.name }, 'cannot renew the singleton lease; stepping down');
      epoch = undefined;
    }
    if (epoch !== this.epoch && !this.stopped) {
      this.options.logger?.info(
        { lease: this.options.name, holder: this.holder, epoch: epoch ?? null },
        epoch === undefined ? 'lost the singleton-jobs lease' : 'holding the singleton-jobs lease',
      );
    }
    if (!this.stopped) this.epoch = epoch;
    return this.epoch;
  }
}
