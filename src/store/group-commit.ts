/**
 * Group commit of issuance records, engine-independent: one transaction (one fsync) for many
 * certificates. One batch is in flight at a time; whatever arrives meanwhile forms the next one. A
 * caller's promise settles only after its batch's COMMIT returned durably.
 */
import { StoreError } from './errors.js';
import type { IssuedCertificateRecord } from './types.js';

interface PendingIssue {
  readonly record: IssuedCertificateRecord;
  resolve(): void;
  reject(error: StoreError): void;
}

/** Writes one batch in one transaction; per-record failures (duplicate serial) come back in place. */
export type BatchWriter = (records: readonly IssuedCertificateRecord[]) => Promise<(StoreError | undefined)[]>;

export class GroupCommitQueue {
  private queue: PendingIssue[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  /**
   * @param windowMs how long the first queued record waits for batch-mates; 0 flushes on the next event-loop turn
   * @param maxRows a batch never exceeds this many rows, which bounds how long one commit takes
   */
  constructor(
    private readonly write: BatchWriter,
    private readonly windowMs: number,
    private readonly maxRows: number,
  ) {}

  enqueue(record: IssuedCertificateRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ record, resolve, reject });
      this.schedule();
    });
  }

  /** Commits everything queued, now (close). */
  async flushAll(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.inFlight || this.queue.length > 0) await (this.inFlight ?? this.flushBatch());
  }

  private schedule(): void {
    if (this.inFlight || this.timer) return;
    if (this.queue.length >= this.maxRows || this.windowMs <= 0) void this.flushBatch();
    else this.timer = setTimeout(() => void this.flushBatch(), this.windowMs);
  }

  private flushBatch(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue.splice(0, this.maxRows);
    this.inFlight = this.commit(batch).finally(() => {
      this.inFlight = undefined;
      if (this.queue.length > 0) this.schedule();
    });
    return this.inFlight;
  }

  private async commit(batch: readonly PendingIssue[]): Promise<void> {
    let outcomes: (StoreError | undefined)[];
    try {
      outcomes = await this.write(batch.map((p) => p.record));
    } catch (error) {
      const failure =
        error instanceof StoreError
          ? error
          : new StoreError('ERR_STORE_UNAVAILABLE', `recording issued certificates failed: ${(error as Error).message}`, { cause: error });
      for (const pending of batch) pending.reject(failure);
      return;
    }
    batch.forEach((pending, i) => {
      const failure = outcomes[i];
      if (failure) pending.reject(failure);
      else pending.resolve();
    });
  }
}
