import pg from 'pg';
import type { PoolConfig } from 'pg';
import { StoreError } from '../errors.js';

export interface PostgresConnectionOptions {
  /** postgres://user@host:port/db?sslmode=verify-full&sslrootcert=/path — TLS settings go in the URL; a password never does. */
  readonly url: string;
  /** From --store-password-file; otherwise node-postgres reads PGPASSWORD or ~/.pgpass. */
  readonly password?: string;
  /** Connections per process (issuance batches, admin calls, jobs); LISTEN uses one more. */
  readonly poolSize?: number;
  /** Server-side statement_timeout and the client's own query timeout, in ms. */
  readonly statementTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** Shows up in pg_stat_activity. */
  readonly applicationName?: string;
}

const DEFAULT_POOL_SIZE = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/** Whether a --store value names PostgreSQL rather than a SQLite file. */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

/** The URL without credentials, for logs. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.toString();
  } catch {
    return 'postgres://(unparseable)';
  }
}

/**
 * Pool settings from validated options. A password inside the URL is refused: the URL is a flag
 * value that `ps` shows, and it ends up in logs; use --store-password-file or PGPASSWORD.
 */
export function poolConfig(options: PostgresConnectionOptions): PoolConfig {
  let parsed: URL;
  try {
    parsed = new URL(options.url);
  } catch {
    throw new StoreError('ERR_STORE_UNAVAILABLE', 'the PostgreSQL store URL does not parse; expected postgres://USER@HOST:PORT/DATABASE');
  }
  if (parsed.password !== '') {
    throw new StoreError(
      'ERR_STORE_UNAVAILABLE',
      'the PostgreSQL store URL contains a password; remove it and use --store-password-file or PGPASSWORD',
    );
  }
  const statementTimeout = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  return {
    connectionString: options.url,
    ...(options.password !== undefined ? { password: options.password } : {}),
    max: options.poolSize ?? DEFAULT_POOL_SIZE,
    statement_timeout: statementTimeout,
    // Backstop for a server that stops answering without closing the socket.
    query_timeout: statementTimeout + 2_000,
    // Also bounds the wait for a free pooled connection: under a burst, queries queue for one.
    connectionTimeoutMillis: (options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS) + statementTimeout,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: options.applicationName ?? 'meshca',
    types: BIGINT_AS_NUMBER,
  };
}

/**
 * BIGINT columns (milliseconds, ids, counters) as numbers: every value meshca stores is far below
 * 2^53, and the rows map to the same shapes as SQLite's.
 */
const BIGINT_AS_NUMBER = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};
