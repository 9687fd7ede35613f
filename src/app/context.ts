/**
 * The application context: the only code that opens a data dir. It opens the store in `read` mode
 * (operator tools: no migrations, no worker threads, every write refused; safe beside a live
 * server) or `write` mode (the server, and the offline tools that record something), finds the
 * KEK, and loads the CA for tools that sign. Commands and the server get what they need from here.
 */
import { pino } from 'pino';
import { CertificateAuthority } from '../authority/lifecycle.js';
import { UsageError } from '../errors.js';
import type { StoreConfig } from '../config/store.js';
import type { StoreInspection } from '../store/inspection.js';
import { openSqliteStore, type SqliteStore, type SqliteStoreOptions } from '../store/sqlite.js';
import type { Store } from '../store/types.js';
import { databasePath, existingDatabase, readSecretFile, requireOfflineKek } from './data-dir.js';

export type AccessMode = 'read' | 'write';

export interface StoreLocation {
  /** The data dir whose database is opened (it must exist, except for the server's write mode). */
  readonly dataDir: string;
  /** A database file (a backup) instead of the data dir's; read mode only. */
  readonly file?: string;
}

/** Read mode: an existing database, query-only. Nothing is created, migrated or started. */
export function openStoreForReading(location: StoreLocation): SqliteStore {
  if (location.file !== undefined) return openSqliteStore({ path: location.file, mode: 'read', file: true });
  return openSqliteStore({ path: existingDatabase(location.dataDir), mode: 'read' });
}

/** Write mode for an offline tool: an existing database, migrated, committing inline (no worker threads). */
export function openStoreForOfflineWrites(dataDir: string): SqliteStore {
  return openSqliteStore({ path: existingDatabase(dataDir), writerThread: false, backgroundCheckpoint: false });
}

/** What the server's store reports to the composition root. */
export interface ServerStoreHooks {
  readonly logger: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  readonly onCommit: (rows: number, seconds: number) => void;
  /** SQLite only: a remote PostgreSQL's volume cannot be measured from here. */
  readonly minFreeDisk?: SqliteStoreOptions['minFreeDisk'];
}

export interface ServerStore {
  readonly store: Store;
  /** For logs: the SQLite file, or the PostgreSQL URL without credentials. */
  readonly description: string;
}

/**
 * Write mode for the server: SQLite in the data dir (created if new, migrated, with the issuance
 * writer and checkpointer threads), or the PostgreSQL that replicas share.
 */
export async function openServerStore(config: StoreConfig, dataDir: string, hooks: ServerStoreHooks): Promise<ServerStore> {
  if (config.engine === 'sqlite') {
    const path = databasePath(dataDir);
    return { store: openSqliteStore({ path, groupCommitLingerMs: config.commitLingerMs, ...hooks }), description: path };
  }
  const { minFreeDisk, ...common } = hooks;
  if ((minFreeDisk?.minFreeRatio ?? 0) > 0) {
    hooks.logger.warn(
      {},
      "--min-free-disk does not apply to a PostgreSQL store (its disk is the database server's): monitor free space there",
    );
  }
  // Loaded only when used: SQLite deployments and the offline tools never load the PostgreSQL driver.
  const [{ openPostgresStore }, { redactedUrl }] = await Promise.all([
    import('../store/postgres/store.js'),
    import('../store/postgres/connection.js'),
  ]);
  const store = await openPostgresStore({
    url: config.url,
    password: postgresPassword(config.passwordFile),
    poolSize: config.poolSize,
    statementTimeoutMs: config.statementTimeoutMs,
    groupCommitLingerMs: config.commitLingerMs,
    ...common,
  });
  return { store, description: redactedUrl(config.url) };
}

/** The PostgreSQL password from a file (never a flag value, which `ps` shows); else PGPASSWORD or ~/.pgpass. */
export function postgresPassword(passwordFile: string | undefined): string | undefined {
  return passwordFile === undefined ? undefined : readSecretFile(passwordFile, (text) => text.replace(/\r?\n$/, ''));
}

/** Read mode on a shared PostgreSQL store (`meshca verify --store`): read-only transactions beside live replicas. */
export async function openPostgresForReading(
  url: string,
  passwordFile: string | undefined,
): Promise<{ store: StoreInspection; description: string }> {
  const [{ inspectPostgresStore }, { redactedUrl }] = await Promise.all([
    import('../store/postgres/inspection.js'),
    import('../store/postgres/connection.js'),
  ]);
  return { store: inspectPostgresStore({ url, password: postgresPassword(passwordFile) }), description: redactedUrl(url) };
}

export interface OfflineAuthority {
  readonly store: SqliteStore;
  readonly ca: CertificateAuthority;
  readonly kek: Buffer;
  close(): Promise<void>;
}

/**
 * The CA of a data dir for tools that sign with it directly (meshca crl, meshca istiod-cert): the
 * existing authorities, loaded with the KEK the server uses. It never creates authorities.
 */
export async function openOfflineAuthority(options: {
  readonly dataDir: string;
  readonly kekFile: string | undefined;
  readonly env: NodeJS.ProcessEnv;
}): Promise<OfflineAuthority> {
  const store = openStoreForOfflineWrites(options.dataDir);
  try {
    if ((await store.loadAuthorities()).length === 0)
      throw new UsageError('the data dir has no authorities yet: start "meshca serve" once first');
    const kek = requireOfflineKek({ kekFile: options.kekFile, env: options.env, dataDir: options.dataDir }).kek;
    const ca = await CertificateAuthority.load({ store, kek, logger: pino({ level: 'silent' }) });
    return { store, ca, kek, close: () => store.close() };
  } catch (error) {
    await store.close();
    throw error;
  }
}

/** Online backup and the exclusive-use check of the offline tools, on a database file. */
export { assertNotInUse, backupSqliteStore as backupDatabase } from '../store/sqlite.js';
