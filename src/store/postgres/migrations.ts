import { fileURLToPath } from 'node:url';
import type { Pool, PoolClient } from 'pg';
import { StoreError } from '../errors.js';
import { readMigrations, verifyApplied, type AppliedRow, type Migration } from '../migrations.js';

/** migrations/postgres/, three levels up from both src/store/postgres/ and dist/store/postgres/. */
export const POSTGRES_MIGRATIONS_DIR: string = fileURLToPath(new URL('../../../migrations/postgres/', import.meta.url));

/** pg_advisory_lock key for schema changes ("meshca" + 1): replicas starting together migrate one at a time. */
const MIGRATION_LOCK_KEY = '7227348665446771969';

/**
 * Brings the PostgreSQL schema up to date under a session advisory lock: the first replica applies
 * the missing files (each in its own transaction), the others wait and then find nothing to do.
 * Refuses (ERR_STORE_MIGRATION) a schema newer than this build or an applied file that changed.
 */
export async function applyPostgresMigrations(pool: Pool, dir: string = POSTGRES_MIGRATIONS_DIR): Promise<number[]> {
  const migrations = readMigrations(dir);
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL, sha256 TEXT NOT NULL)`);
      const applied = (await client.query<AppliedRow>('SELECT version, name, sha256 FROM schema_migrations ORDER BY version')).rows;
      verifyApplied(applied, migrations);
      const missing = migrations.filter((m) => !applied.some((a) => a.version === m.version));
      for (const migration of missing) await applyOne(client, migration);
      return missing.map((m) => m.version);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    client.release();
  }
}

async function applyOne(client: PoolClient, migration: Migration): Promise<void> {
  try {
    await client.query('BEGIN');
    await client.query(migration.sql);
    await client.query('INSERT INTO schema_migrations (version, name, applied_at, sha256) VALUES ($1, $2, $3, $4)', [
      migration.version,
      migration.name,
      Date.now(),
      migration.sha256,
    ]);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new StoreError(
      'ERR_STORE_MIGRATION',
      `PostgreSQL migration ${migration.version}_${migration.name}.sql failed: ${(error as Error).message}`,
      { cause: error },
    );
  }
}
