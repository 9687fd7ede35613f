/** `meshca serve` flags choosing and tuning the store, and how the composition root opens it. */

import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseDuration } from './duration.js';
import { readSecretFile } from './data-dir.js';
import { str, UsageError, type FlagSpec, type FlagValues } from './flags.js';
import { isPostgresUrl, redactedUrl } from './store/postgres/connection.js';
import { openPostgresStore } from './store/postgres/store.js';
import { openSqliteStore, type SqliteStoreOptions } from './store/sqlite.js';
import type { Store } from './store/types.js';

export type StoreConfig =
  | { readonly engine: 'sqlite' }
  | {
      readonly engine: 'postgres';
      readonly url: string;
      readonly passwordFile: string | undefined;
      readonly poolSize: number;
      readonly statementTimeoutMs: number;
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
    name: 'store-statement-timeout',
    kind: 'string',
    value: 'DURATION',
    default: '5s',
    help: 'PostgreSQL statements taking longer fail (the request gets UNAVAILABLE)',
  },
];

export function buildStoreConfig(values: FlagValues): StoreConfig {
  const url = str(values, 'store');
  if (url === undefined || url === '') return { engine: 'sqlite' };
  if (!isPostgresUrl(url)) throw new UsageError('--store must be a postgres:// URL (leave it unset for SQLite in --data-dir)');
  if (new URL(url).password !== '')
    throw new UsageError('--store must not contain a password (ps and logs show it): use --store-password-file or PGPASSWORD');
  const poolSize = Number(str(values, 'store-pool-size'));
  if (!Number.isInteger(poolSize) || poolSize < 2) throw new UsageError('--store-pool-size must be an integer ≥ 2');
  let statementTimeoutMs: number;
  try {
    statementTimeoutMs = parseDuration(str(values, 'store-statement-timeout')!);
  } catch (error) {
    throw new UsageError(`--store-statement-timeout: ${(error as Error).message}`);
  }
  return { engine: 'postgres', url, passwordFile: str(values, 'store-password-file'), poolSize, statementTimeoutMs };
}

/** --workers: a positive integer, or auto (one per core). */
export function buildWorkers(values: FlagValues): number {
  const raw = str(values, 'workers') ?? '1';
  if (raw === 'auto') return Math.max(1, cpus().length);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError('--workers must be auto or an integer from 1 to 256');
  return n;
}

export interface OpenedStore {
  readonly store: Store;
  /** For logs: the SQLite file or the PostgreSQL URL without credentials. */
  readonly description: string;
}

export async function openConfiguredStore(
  config: StoreConfig,
  dataDir: string,
  options: {
    readonly logger: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
    readonly onCommit: (rows: number, seconds: number) => void;
    /** SQLite only: a remote PostgreSQL's volume cannot be measured from here. */
    readonly minFreeDisk?: SqliteStoreOptions['minFreeDisk'];
  },
): Promise<OpenedStore> {
  if (config.engine === 'sqlite') {
    const path = join(dataDir, 'meshca.db');
    return { store: openSqliteStore({ path, ...options }), description: path };
  }
  const password =
    config.passwordFile === undefined ? undefined : readSecretFile(config.passwordFile, (text) => text.replace(/\r?\n$/, ''));
  const { minFreeDisk, ...common } = options;
  if ((minFreeDisk?.minFreeRatio ?? 0) > 0) {
    options.logger.warn(
      {},
      "--min-free-disk does not apply to a PostgreSQL store (its disk is the database server's): monitor free space there",
    );
  }
  const store = await openPostgresStore({
    url: config.url,
    password,
    poolSize: config.poolSize,
    statementTimeoutMs: config.statementTimeoutMs,
    ...common,
  });
  return { store, description: redactedUrl(config.url) };
}
