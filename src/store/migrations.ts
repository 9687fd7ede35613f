import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from 'better-sqlite3';
import { StoreError } from './errors.js';

/** The repo's migrations/ folder: two levels up from both src/store/ (vitest) and dist/store/ (tsc). */
export const DEFAULT_MIGRATIONS_DIR: string = fileURLToPath(new URL('../../migrations/', import.meta.url));

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  readonly sha256: string;
}

export interface AppliedRow {
  version: number;
  name: string;
  sha256: string;
}

export interface RecordedMigration {
  readonly version: number;
  readonly name: string;
  readonly sha256: string;
  readonly appliedAt: Date;
}

const FILE_NAME = /^(\d{3,})_([A-Za-z0-9_-]+)\.sql$/;

/**
 * Brings the schema up to date: numbered `NNN_name.sql` files, in order, each in its own
 * transaction, recorded with their sha256. Refuses (ERR_STORE_MIGRATION) a database that recorded
 * a migration whose file changed or vanished, or one that is newer than this build.
 * Returns the versions applied now.
 */
export function applyMigrations(db: Database, dir: string = DEFAULT_MIGRATIONS_DIR): number[] {
  const migrations = readMigrations(dir);
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL, sha256 TEXT NOT NULL)`);
  verifyApplied(appliedMigrations(db), migrations);
  return migrations.filter((m) => applyOne(db, m)).map((m) => m.version);
}

export function readMigrations(dir: string): Migration[] {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch (error) {
    throw new StoreError('ERR_STORE_MIGRATION', `cannot read the migrations folder ${dir}; it ships with meshca next to dist/`, {
      cause: error,
    });
  }
  const migrations = files.flatMap((file) => {
    const [, version, name] = FILE_NAME.exec(file) ?? [];
    if (version === undefined || name === undefined) return [];
    const sql = readFileSync(join(dir, file), 'utf8');
    return [{ version: Number(version), name, sql, sha256: createHash('sha256').update(sql).digest('hex') }];
  });
  migrations.sort((a, b) => a.version - b.version);
  migrations.forEach((m, i) => {
    if (migrations[i - 1]?.version === m.version)
      throw new StoreError('ERR_STORE_MIGRATION', `two migrations have version ${m.version} in ${dir}`);
  });
  if (migrations.length === 0) throw new StoreError('ERR_STORE_MIGRATION', `no NNN_name.sql migrations in ${dir}`);
  return migrations;
}

/** What schema_migrations says was applied, oldest first (for ops and tests). */
export function recordedMigrations(db: Database): RecordedMigration[] {
  return db
    .prepare<[], AppliedRow & { applied_at: number }>('SELECT version, name, sha256, applied_at FROM schema_migrations ORDER BY version')
    .all()
    .map((row) => ({ version: row.version, name: row.name, sha256: row.sha256, appliedAt: new Date(row.applied_at) }));
}

function appliedMigrations(db: Database): AppliedRow[] {
  return db.prepare<[], AppliedRow>('SELECT version, name, sha256 FROM schema_migrations ORDER BY version').all();
}

export function verifyApplied(applied: readonly AppliedRow[], known: readonly Migration[]): void {
  const latest = known.at(-1)?.version ?? 0;
  for (const row of applied) {
    if (row.version > latest) {
      throw new StoreError(
        'ERR_STORE_MIGRATION',
        `the database has schema version ${row.version} (${row.name}), newer than this meshca knows (${latest}); run a newer meshca or restore a backup`,
      );
    }
    const file = known.find((m) => m.version === row.version);
    if (!file) throw new StoreError('ERR_STORE_MIGRATION', `migration ${row.version} (${row.name}) was applied but its file is missing`);
    if (file.sha256 !== row.sha256) {
      throw new StoreError(
        'ERR_STORE_MIGRATION',
        `migration ${row.version}_${row.name}.sql changed after it was applied (sha256 differs); restore the original file and add a new migration instead`,
      );
    }
  }
}

/** Applies one migration unless it is recorded; re-checked inside the write lock in case another process raced us. */
function applyOne(db: Database, migration: Migration): boolean {
  const apply = db.transaction((): boolean => {
    const recorded = db
      .prepare<[number], AppliedRow>('SELECT version, name, sha256 FROM schema_migrations WHERE version = ?')
      .get(migration.version);
    if (recorded) {
      verifyApplied([recorded], [migration]);
      return false;
    }
    db.exec(migration.sql);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at, sha256) VALUES (?, ?, ?, ?)').run(
      migration.version,
      migration.name,
      Date.now(),
      migration.sha256,
    );
    return true;
  });
  try {
    return apply.immediate();
  } catch (error) {
    if (error instanceof StoreError) throw error;
    throw new StoreError(
      'ERR_STORE_MIGRATION',
      `migration ${migration.version}_${migration.name}.sql failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
