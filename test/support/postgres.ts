import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, it } from 'vitest';

/** A PostgreSQL server for tests: scripts/ci-postgres.sh starts a throwaway one and sets this. */
export const POSTGRES_URL: string | undefined = process.env.MESHCA_TEST_POSTGRES_URL || undefined;

const created: string[] = [];

/**
 * Registers a test that fails in CI (CI set) when no PostgreSQL is configured, so PostgreSQL
 * coverage cannot silently vanish there; locally it shows up as skipped with the reason.
 */
export function requirePostgresInCi(): void {
  if (POSTGRES_URL) return;
  describe('PostgreSQL availability', () => {
    const reason =
      'MESHCA_TEST_POSTGRES_URL is not set: run the tests through scripts/ci-postgres.sh (e.g. scripts/ci-postgres.sh npx vitest run)';
    if (process.env.CI)
      it('has a PostgreSQL server', () => {
        throw new Error(reason);
      });
    else it.skip(`PostgreSQL tests skipped: ${reason}`, () => undefined);
  });
}

/** A new, empty database on the test server; returns its URL. Dropped by dropTestDatabases(). */
export async function createTestDatabase(): Promise<string> {
  if (!POSTGRES_URL) throw new Error('MESHCA_TEST_POSTGRES_URL is not set');
  const name = `meshca_t_${randomBytes(6).toString('hex')}`;
  await admin(`CREATE DATABASE ${name}`);
  created.push(name);
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops the databases this test file created (connections still open are terminated). */
export async function dropTestDatabases(): Promise<void> {
  for (const name of created.splice(0)) await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
