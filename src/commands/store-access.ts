/**
 * How the read-only operator commands (verify, status, bundle) pick their store: a shared
 * PostgreSQL with --store (read-only transactions, beside live replicas), else the data dir's
 * SQLite database (or, for verify, a backup file).
 */
import { existsSync } from 'node:fs';
import { openPostgresForReading, openStoreForReading } from '../app/context.js';
import { existingDatabase } from '../app/data-dir.js';
import { requireStr, str, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { checkPostgresUrl } from '../config/store.js';
import type { StoreInspection } from '../store/inspection.js';

export const STORE_FLAGS: readonly FlagSpec[] = [
  {
    name: 'store',
    kind: 'string',
    value: 'URL',
    help: 'read the PostgreSQL store at this postgres:// URL instead of the data dir (read-only transactions; replicas may keep serving)',
  },
  { name: 'store-password-file', kind: 'string', value: 'PATH', help: 'file holding the PostgreSQL password (else PGPASSWORD)' },
];

export interface ReadOnlyStore {
  readonly store: StoreInspection;
  /** What was opened, for the report: the database file, or the URL without credentials. */
  readonly location: string;
  /** The data dir, when the store is one (its dev KEK may be read); undefined for PostgreSQL and backup files. */
  readonly dataDir: string | undefined;
}

/** --store, else --file (when the command has it), else <data-dir>/meshca.db. */
export async function openReadOnlyStore(values: FlagValues): Promise<ReadOnlyStore> {
  const url = str(values, 'store');
  if (url) {
    checkPostgresUrl(url);
    const { store, description } = await openPostgresForReading(url, str(values, 'store-password-file'));
    return { store, location: description, dataDir: undefined };
  }
  const dataDir = requireStr(values, 'data-dir');
  const file = str(values, 'file');
  if (file !== undefined) {
    if (!existsSync(file)) throw new UsageError(`${file} does not exist`);
    return { store: openStoreForReading({ dataDir, file }), location: file, dataDir: undefined };
  }
  return { store: openStoreForReading({ dataDir }), location: existingDatabase(dataDir), dataDir };
}
