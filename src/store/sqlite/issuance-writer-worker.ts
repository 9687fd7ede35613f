/**
 * The issuance writer thread: its own connection inserts each batch in one transaction and
 * COMMITs with synchronous=FULL, so the fsync happens off the event loop (it was a quarter of the
 * main thread's time under load).
 */
import Database from 'better-sqlite3';
import { workerData } from 'node:worker_threads';
import { serveRequests } from '../../workers/rpc.js';
import { DENIED_ROW, configureWriter, sqliteCode } from './connection.js';
import { SQL_INSERT_ISSUED } from './statements.js';
import type { BatchResult, IssuedRow, RowFailure, WriterSettings } from './issuance-writer.js';

const settings = workerData as WriterSettings;
const db = new Database(settings.path, { fileMustExist: true });
configureWriter(db, settings.cacheKib);
if (settings.noAutocheckpoint) db.pragma('wal_autocheckpoint = 0');
const insert = db.prepare(SQL_INSERT_ISSUED);

/** A constraint failure or a denied identity undoes only its own row; anything else (I/O, disk full) fails the batch. */
function insertRow(row: IssuedRow): RowFailure {
  try {
    const { changes } = insert.run({ ...row, der: Buffer.from(row.der.buffer, row.der.byteOffset, row.der.byteLength) });
    return changes === 0 ? { code: DENIED_ROW, message: `${row.spiffeId} is on the deny-list` } : undefined;
  } catch (error) {
    const code = sqliteCode(error);
    if (!code.startsWith('SQLITE_CONSTRAINT')) throw error;
    return { code, message: (error as Error).message };
  }
}

function writeBatch(rows: readonly IssuedRow[]): BatchResult {
  const started = process.hrtime.bigint();
  try {
    db.exec('BEGIN IMMEDIATE');
    const outcomes = rows.map(insertRow);
    db.exec('COMMIT');
    return { outcomes, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
  } catch (error) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw error;
  }
}

serveRequests(writeBatch, () => db.close());
