/** The WAL checkpointer thread: copies the WAL into the database file from its own connection. */
import Database from 'better-sqlite3';
import { workerData } from 'node:worker_threads';
import { serveRequests } from '../../workers/rpc.js';

const db = new Database((workerData as { path: string }).path, { fileMustExist: true });
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');

// PASSIVE never blocks the writer; it copies what no reader still needs.
serveRequests<'checkpoint', void>(
  () => void db.pragma('wal_checkpoint(PASSIVE)'),
  () => db.close(),
);
