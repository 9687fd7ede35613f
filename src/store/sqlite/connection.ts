/** Opening SQLite connections the way every part of the store needs them, and mapping engine errors. */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Database as Connection } from 'better-sqlite3';
import { StoreError } from '../errors.js';

/**
 * 8 MiB: the pages inserts touch in a million-row table (the rightmost pages of the time-ordered
 * indexes, one identity-index leaf per active identity) stay hot. Not larger: every commit that
 * split a B-tree page walks the whole page cache (balance_nonroot renumbers pages through a
 * temporary page number past the end of the file, and the commit truncates the cache back to the
 * file's size), so a 32 MiB cache cost ~4 % more CPU per certificate (docs/performance.md).
 */
export const CACHE_KIB = 8 * 1024;

const REQUIRED_TABLES = ['authorities', 'issued_certificates', 'meta', 'schema_migrations', 'denied_identities'];

/** The writer's connection: creates the file (0600) and its directory (0700) if needed. */
export function openWriterConnection(path: string): Connection {
  const dir = dirname(path);
  try {
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
    // Create the file 0600 before SQLite does: the -wal and -shm files copy its mode.
    closeSync(openSync(path, 'a', 0o600));
    chmodSync(path, 0o600);
    const db = new Database(path);
    configureWriter(db);
    return db;
  } catch (error) {
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Settings of every connection that writes (the store's and its worker threads'). */
export function configureWriter(db: Connection, cacheKib = CACHE_KIB): void {
  const mode = db.pragma('journal_mode = WAL', { simple: true });
  if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, WAL is required`);
  // FULL: every commit (an authority change or an issuance batch) is fsynced before it is acknowledged.
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.pragma(`cache_size = -${cacheKib}`);
  // After a burst, shrink the WAL back once it has been checkpointed and restarted.
  db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
}

/**
 * A connection that never writes data. A data dir's live database gets a normal connection with
 * `query_only` (so it can recover the WAL after a crash, and runs beside a live server); a lone
 * file such as a backup is opened read-only by the engine. Refuses a file that is not a meshca database.
 */
export function openReaderConnection(path: string, file: boolean): Connection {
  let db: Connection;
  try {
    db = new Database(path, { readonly: file, fileMustExist: true, timeout: 5000 });
  } catch (error) {
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    if (!file) db.pragma('query_only = ON');
    const tables = new Set(
      db
        .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
        .all()
        .map((r) => r.name),
    );
    const missing = REQUIRED_TABLES.filter((t) => !tables.has(t));
    if (missing.length > 0)
      throw new StoreError('ERR_STORE_MIGRATION', `${path} is not a meshca database (missing tables: ${missing.join(', ')})`);
    return db;
  } catch (error) {
    db.close();
    if (error instanceof StoreError) throw error;
    throw new StoreError('ERR_STORE_UNAVAILABLE', `${path} is not a readable SQLite database: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

export function restrictFiles(path: string): void {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(file)) chmodSync(file, 0o600);
}

/**
 * Throws unless this process can take the database's exclusive lock, i.e. no server (or other tool)
 * has it open. Offline operations (KEK rotation, restore over an existing database) call it first.
 */
export function assertNotInUse(path: string, what: string): void {
  let db: Connection | undefined;
  try {
    db = new Database(path, { fileMustExist: true, timeout: 200 });
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
  } catch (error) {
    const code = sqliteCode(error);
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
      throw new StoreError(
        'ERR_STORE_UNAVAILABLE',
        `${path} is in use (is "meshca serve" running on this data dir?); stop the server before ${what}`,
        { cause: error },
      );
    }
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  } finally {
    db?.close();
  }
}

export function sqliteCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** The code of an issuance row SQL_INSERT_ISSUED did not insert because its identity is denied. */
export const DENIED_ROW = 'MESHCA_IDENTITY_DENIED';

export function deniedRecord(what: string): StoreError {
  return new StoreError('ERR_STORE_DENIED', `${what} is for an identity on the deny-list`);
}

/** Engine errors become StoreErrors; `what` names the record for constraint failures. */
export function toStoreError(error: unknown, what = 'the record'): StoreError {
  if (error instanceof StoreError) return error;
  const code = sqliteCode(error);
  const message = error instanceof Error ? error.message : String(error);
  if (code === DENIED_ROW) return deniedRecord(what);
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    return new StoreError('ERR_STORE_DUPLICATE', `${what} is already stored (${message})`, { cause: error });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY')
    return new StoreError('ERR_STORE_NOT_FOUND', `${what} refers to an authority that is not stored`, { cause: error });
  return new StoreError('ERR_STORE_UNAVAILABLE', `the store failed: ${message}`, { cause: error });
}
