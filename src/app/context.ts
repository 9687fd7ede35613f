/**
 * The application context: the only code that opens a data dir. It opens the store in `read` mode
 * (operator tools: no migrations, no worker threads, every write refused; safe beside a live
 * server) or `write` mode (the server, and the offline tools that record something), finds the
 * KEK, and loads the CA for tools that sign. Commands and the server get what they need from here.
 */
import { pino } from 'pino';
import { CertificateAuthority } from '../authority/lifecycle.js';
import { UsageError } from '../errors.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite.js';
import { databasePath, existingDatabase, requireOfflineKek } from './data-dir.js';

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

/** Write mode for the server: created if new, migrated, with the issuance writer and checkpointer threads. */
export function openServerStore(
  dataDir: string,
  hooks: Pick<Parameters<typeof openSqliteStore>[0], 'logger' | 'onCommit' | 'minFreeDisk'>,
): SqliteStore {
  return openSqliteStore({ path: databasePath(dataDir), ...hooks });
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
