/**
 * Group commit of issuance records, engine-independent: one transaction (one fsync) for many
 * certificates. One batch is in flight at a time; whatever arrives meanwhile forms the next one. A
 * caller's promise settles only after its batch's COMMIT returned durably.
 *
 * Issuances announce themselves before their CSR check and signing (expect()); a batch that is
 * ready waits for announced records up to `lingerMs` (the idea of PostgreSQL's commit_delay with
 * commit_siblings), so under load a commit carries more rows and costs less per certificate,
 * while a lone request, with nothing announced behind it, is committed at once.
 */
import { StoreError } from './errors.js';
import type { IssuedCertificateRecord } from './types.js';

/** The default linger (docs/performance.md: about twice the rows per commit at 32 callers, at most a few ms of latency). */
export const DEFAULT_LINGER_MS = 3;

/** An issuance on its way to the queue, announced by GroupCommitQueue.expect(). */
export interface ExpectedRecord {
  /** The issuance ended without a record (refused, failed): stop waiting for it. Idempotent. */
  cancel(): void;
}

class Announcement implements ExpectedRecord {
  private settled = false;

  constructor(private readonly onSettle: (cancelled: boolean) => void) {}

  settle(cancelled: boolean): void {
    if (this.settled) return;
    this.settled = true;
    this.onSettle(cancelled);
  }

  cancel(): void {
    this.settle(true);
  }
}

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
  /** Announced records not yet enqueued or cancelled. */
  private expected = 0;

  /**
   * @param windowMs how long the first queued record waits for batch-mates, whatever is announced; 0 = no fixed window
   * @param maxRows a batch never exceeds this many rows, which bounds how long one commit takes
   * @param lingerMs with no fixed window: how long a ready batch waits for announced records (0 = never)
   */
  constructor(
    private readonly write: BatchWriter,
    private readonly windowMs: number,
    private readonly maxRows: number,
    private readonly lingerMs = 0,
  ) {}

  /** Announces a record that enqueue() will receive soon, or that the returned handle cancels. */
  expect(): ExpectedRecord {
    this.expected++;
    return new Announcement((cancelled) => {
      this.expected--;
      if (cancelled) this.schedule();
    });
  }

  /** Queues a record for the next batch; `announced` is its expect() handle, if it had one. */
  enqueue(record: IssuedCertificateRecord, announced?: ExpectedRecord): Promise<void> {
    if (announced instanceof Announcement) announced.settle(false);
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
    if (this.inFlight || this.queue.length === 0) return;
    const lingering = this.windowMs <= 0;
    if (this.queue.length >= this.maxRows || (lingering && (this.expected === 0 || this.lingerMs <= 0))) {
      void this.flushBatch();
      return;
    }
    this.timer ??= setTimeout(() => void this.flushBatch(), lingering ? this.lingerMs : this.windowMs);
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
