import { WorkerClient, workerModule } from '../../workers/rpc.js';
import type { issuedParams } from './statements.js';

/** One row as the worker inserts it (the named parameters of the INSERT); the DER as an exact-size copy. */
export type IssuedRow = Omit<ReturnType<typeof issuedParams>, 'der'> & { readonly der: Uint8Array };

/** Per-row outcome: undefined = stored; otherwise the SQLite error of that row only (constraint). */
export type RowFailure = { readonly code: string; readonly message: string } | undefined;

export interface BatchResult {
  readonly outcomes: readonly RowFailure[];
  readonly seconds: number;
}

export interface WriterSettings {
  readonly path: string;
  readonly noAutocheckpoint: boolean;
  readonly cacheKib: number;
}

/** The issuance writer thread (issuance-writer-worker.ts); the store falls back to inline writes when it is not healthy. */
export function startIssuanceWriter(settings: WriterSettings): WorkerClient<readonly IssuedRow[], BatchResult> {
  return new WorkerClient(workerModule(import.meta.url, './issuance-writer-worker.js'), { name: 'issuance writer', workerData: settings });
}
