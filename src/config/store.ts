/** `meshca serve` flags choosing and tuning the store, and the number of worker processes. */

import { cpus } from 'node:os';
import { str, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { DEFAULT_LINGER_MS } from '../store/group-commit.js';
import { isPostgresUrl } from '../store/postgres/connection.js';
import { durationFlag } from './values.js';

export type StoreConfig = (
  | { readonly engine: 'sqlite' }
  | {
      readonly engine: 'postgres';
      readonly url: string;
      readonly passwordFile: string | undefined;
      readonly poolSize: number;
      readonly statementTimeoutMs: number;
    }
) & {
  /** How long a ready group commit waits for issuances already being checked and signed. */
  readonly commitLingerMs: number;
};

export const STORE_FLAGS: readonly FlagSpec[] = [
  {
    name: 'store',
    kind: 'string',
    value: 'URL',
    help: 'postgres://USER@HOST:PORT/DB[?sslmode=verify-full&sslrootcert=PATH] to share one PostgreSQL among replicas (no password in it); default: SQLite in --data-dir',
  },
  {
    name: 'store-password-file',
    kind: 'string',
    value: 'PATH',
    help: 'file holding the PostgreSQL password (else PGPASSWORD or ~/.pgpass)',
  },
  {
    name: 'store-pool-size',
    kind: 'string',
    value: 'N',
    default: '10',
    help: 'PostgreSQL connections per process (plus one for change notifications)',
  },
  {
    name: 'workers',
    kind: 'string',
    value: 'N|auto',
    default: '1',
    help: 'processes sharing the listeners (node:cluster), each a replica of the same store; auto = one per core',
  },
  {
    name: 'commit-linger',
    kind: 'string',
    value: 'DURATION',
    default: `${DEFAULT_LINGER_MS}ms`,
    help: 'how long a ready commit of issued certificates waits for requests already being signed (more rows per fsync under load; a lone request is not delayed); 0ms = commit at once',
  },
  {
    name: 'store-statement-timeout',
    kind: 'string',
    value: 'DURATION',
    default: '5s',
    help: 'PostgreSQL statements taking longer fail (the request gets UNAVAILABLE)',
  },
];

export function buildStoreConfig(values: FlagValues): StoreConfig {
  const commitLingerMs = durationFlag(values, 'commit-linger');
  if (commitLingerMs > 1000) throw new UsageError('--commit-linger must be at most 1s: every request under load may wait this long');
  const url = str(values, 'store');
  if (url === undefined || url === '') return { engine: 'sqlite', commitLingerMs };
  checkPostgresUrl(url);
  const poolSize = Number(str(values, 'store-pool-size'));
  if (!Number.isInteger(poolSize) || poolSize < 2) throw new UsageError('--store-pool-size must be an integer ≥ 2');
  const statementTimeoutMs = durationFlag(values, 'store-statement-timeout');
  return { engine: 'postgres', url, passwordFile: str(values, 'store-password-file'), poolSize, statementTimeoutMs, commitLingerMs };
}

/**
 * A --store value (serve and the read-only commands alike): a postgres:// URL that parses and
 * carries no password, since flag values show in `ps` and in logs.
 */
export function checkPostgresUrl(url: string): void {
  if (!isPostgresUrl(url)) throw new UsageError('--store must be a postgres:// URL (leave it unset for SQLite in --data-dir)');
  let password: string;
  try {
    password = new URL(url).password;
  } catch {
    throw new UsageError('--store is not a valid URL: postgres://USER@HOST:PORT/DB[?sslmode=…]');
  }
  if (password !== '')
    throw new UsageError('--store must not contain a password (ps and logs show it): use --store-password-file or PGPASSWORD');
}

/** --workers: a positive integer, or auto (one per core). */
export function buildWorkers(values: FlagValues): number {
  const raw = str(values, 'workers') ?? '1';
  if (raw === 'auto') return Math.max(1, cpus().length);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError('--workers must be auto or an integer from 1 to 256');
  return n;
}
