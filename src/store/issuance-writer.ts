import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** One row as the worker inserts it (the named parameters of the INSERT). */
export type IssuedRow = Readonly<Record<string, string | number | Uint8Array>>;

/** Per-row outcome: undefined = stored; otherwise the SQLite error of that row only (constraint). */
export type RowFailure = { readonly code: string; readonly message: string } | undefined;

export interface BatchResult {
  readonly outcomes: readonly RowFailure[];
  readonly seconds: number;
}

/**
 * The issuance writer thread: its own connection inserts each batch in one transaction and
 * COMMITs with synchronous=FULL, so the fsync happens off the event loop (it was a quarter of the
 * main thread's time under load). The caller acknowledges certificates only after this resolves.
 */
const WRITER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('synchronous = FULL');
db.pragma('foreign_keys = ON');
db.pragma('busy_timeout = 5000');
// The same page cache as the main connection: index inserts into a large store must not re-read pages.
db.pragma('cache_size = -' + workerData.cacheKib);
if (workerData.noAutocheckpoint) db.pragma('wal_autocheckpoint = 0');
const insert = db.prepare(workerData.insertSql);
function rowFailure(error) {
  const code = typeof (error && error.code) === 'string' ? error.code : '';
  if (!code.startsWith('SQLITE_CONSTRAINT')) throw error;
  return { code, message: String(error.message) };
}
parentPort.on('message', (message) => {
  if (message === 'stop') { db.close(); parentPort.close(); return; }
  const started = process.hrtime.bigint();
  try {
    db.exec('BEGIN IMMEDIATE');
    const outcomes = message.rows.map((row) => {
      row.der = Buffer.from(row.der.buffer, row.der.byteOffset, row.der.byteLength);
      try { insert.run(row); return undefined; } catch (error) { return rowFailure(error); }
    });
    db.exec('COMMIT');
    parentPort.postMessage({ id: message.id, outcomes, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
  } catch (error) {
    if (db.inTransaction) db.exec('ROLLBACK');
    parentPort.postMessage({ id: message.id, error: { code: String((error && error.code) || ''), message: String(error && error.message) } });
  }
});
`;

interface Reply {
  readonly id: number;
  readonly outcomes?: RowFailure[];
  readonly seconds?: number;
  readonly error?: { readonly code: string; readonly message: string };
}

export class IssuanceWriterThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve(result: BatchResult): void; reject(error: Error): void }>();
  private nextId = 1;
  private failure: Error | undefined;

  constructor(path: string, insertSql: string, noAutocheckpoint: boolean, cacheKib: number) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WRITER_SOURCE, { eval: true, workerData: { driver, path, insertSql, noAutocheckpoint, cacheKib } });
    this.worker.on('message', (reply: Reply) => this.settle(reply));
    this.worker.on('error', (error) => this.fail(error));
    this.worker.on('exit', (code) => this.fail(new Error(`the issuance writer thread exited (code ${code})`)));
  }

  /** Whether the thread can still take batches (the store falls back to inline writes if not). */
  get healthy(): boolean {
    return this.failure === undefined;
  }

  write(rows: readonly IssuedRow[]): Promise<BatchResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, rows });
    });
  }

  async stop(): Promise<void> {
    if (this.failure) return;
    this.failure = new Error('the issuance writer thread is stopped');
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage('stop');
    await exited;
  }

  private settle(reply: Reply): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (!waiter) return;
    if (reply.error) waiter.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }));
    else waiter.resolve({ outcomes: reply.outcomes ?? [], seconds: reply.seconds ?? 0 });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }
}
