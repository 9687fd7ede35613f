import type { Database as Connection } from 'better-sqlite3';
import { WorkerClient, workerModule } from '../../workers/rpc.js';

const CHECKPOINT_INTERVAL_MS = 200;
/** SQLite's default, restored if the background checkpointer dies. */
const INLINE_CHECKPOINT_PAGES = 1000;

interface WarnLogger {
  warn(obj: object, msg: string): void;
}

/**
 * Background checkpoints: the writer appends to the WAL and fsyncs it; a second connection in a
 * worker thread (checkpoint-worker.ts) copies it into the database file, instead of whichever
 * commit crosses the threshold stalling the event loop. If the worker dies, the writer
 * checkpoints inline again.
 */
export class BackgroundCheckpointer {
  private readonly worker: WorkerClient<'checkpoint', void>;
  private readonly timer: NodeJS.Timeout;
  private busy = false;
  private lastError = '';

  constructor(
    private readonly db: Connection,
    path: string,
    private readonly logger: WarnLogger | undefined,
  ) {
    this.worker = new WorkerClient(workerModule(import.meta.url, './checkpoint-worker.js'), {
      name: 'WAL checkpointer',
      workerData: { path },
      unref: true,
      onFailure: (error) => this.fallBack(error),
    });
    db.pragma('wal_autocheckpoint = 0');
    this.timer = setInterval(() => this.checkpoint(), CHECKPOINT_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.worker.stop();
  }

  private checkpoint(): void {
    if (this.busy || !this.worker.healthy) return;
    this.busy = true;
    this.worker
      .call('checkpoint')
      .then(
        () => (this.lastError = ''),
        (error: Error) => {
          // One warning per distinct failure, not one every 200 ms.
          if (this.worker.healthy && error.message !== this.lastError)
            this.logger?.warn({ error: error.message }, 'background WAL checkpoint failed');
          this.lastError = error.message;
        },
      )
      .finally(() => (this.busy = false));
  }

  private fallBack(error: Error): void {
    clearInterval(this.timer);
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${INLINE_CHECKPOINT_PAGES}`);
    this.logger?.warn({ err: error }, 'the background WAL checkpointer stopped; checkpointing inline from now on');
  }
}
