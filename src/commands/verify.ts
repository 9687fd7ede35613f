import { existsSync } from 'node:fs';
import { checkInvariants, formatInvariantReport } from '../authority/invariants.js';
import { offlineKek } from '../data-dir.js';
import { bool, requireStr, str, UsageError, type FlagSpec, type FlagValues } from '../flags.js';
import { databasePath } from '../server.js';
import { inspectSqliteStore, type StoreInspection } from '../store/verify.js';
import { inspectPostgresStore } from '../store/postgres/inspection.js';
import { redactedUrl } from '../store/postgres/connection.js';
import { readSecretFile } from '../data-dir.js';
import { DATA_DIR_FLAG, JSON_FLAG, type Command } from './types.js';

export const KEK_FILE_FLAG: FlagSpec = {
  name: 'kek-file',
  kind: 'string',
  value: 'PATH',
  help: 'key-encryption key file (or MESHCA_KEK); without either, <data-dir>/kek is used if it exists (--dev data dirs)',
};

/** The KEK for offline tools: --kek-file, MESHCA_KEK, else a dev data dir's <data-dir>/kek, else none. */
export function optionalKek(values: FlagValues, dataDir: string | undefined): { kek: Buffer; origin: string } | undefined {
  return offlineKek({ kekFile: str(values, 'kek-file'), env: process.env, dataDir });
}

/** The database path of a data dir, refusing a dir without one (a typo in --data-dir must not look "empty"). */
export function existingDatabase(dataDir: string): string {
  const path = databasePath(dataDir);
  if (!existsSync(path)) throw new UsageError(`no meshca database at ${path}: check --data-dir (start "meshca serve" once to create one)`);
  return path;
}

/** `meshca verify`: the crash-safety invariants, read-only, on a data dir (server running or not) or a backup file. */
export const verifyCommand: Command = {
  usage:
    'meshca verify --data-dir DIR [--kek-file PATH] [--sample N] [--json]\n       meshca verify --file BACKUP [--kek-file PATH]\n       meshca verify --store postgres://USER@HOST/DB --kek-file PATH',
  description:
    'Check the store invariants (read-only). integrity_check, exactly one active intermediate whose key matches its certificate under a trusted root, authority chains, bundle sequence, and that every stored certificate verifies against a stored authority. Exits 1 when one is violated.',
  flags: [
    DATA_DIR_FLAG,
    KEK_FILE_FLAG,
    { name: 'file', kind: 'string', value: 'PATH', help: 'check this database file (e.g. a backup) instead of <data-dir>/meshca.db' },
    { name: 'store', kind: 'string', value: 'URL', help: 'check the PostgreSQL store at this postgres:// URL (read-only transactions; replicas may keep serving)' },
    { name: 'store-password-file', kind: 'string', value: 'PATH', help: 'file holding the PostgreSQL password (else PGPASSWORD)' },
    { name: 'sample', kind: 'string', value: 'N|all', default: 'all', help: 'verify the signatures of N random certificates instead of all' },
    { name: 'min-bundle-sequence', kind: 'string', value: 'N', help: 'fail if the bundle sequence is below N (the last one you saw)' },
    { name: 'skip-integrity', kind: 'boolean', help: 'skip PRAGMA integrity_check (it reads the whole file)' },
    JSON_FLAG,
  ],
  run: async (values) => {
    const { store, path, kek } = openInspection(values);
    try {
      const report = await checkInvariants(store, {
        kek: kek?.kek,
        sample: sampleSize(str(values, 'sample')),
        minBundleSequence: optionalInt(values, 'min-bundle-sequence'),
        skipIntegrity: bool(values, 'skip-integrity'),
      });
      if (bool(values, 'json')) process.stdout.write(JSON.stringify({ database: path, kek: kek?.origin ?? null, ...report }, null, 2) + '\n');
      else process.stdout.write(`meshca verify: ${path}${kek ? ` (KEK from ${kek.origin})` : ''}\n\n${formatInvariantReport(report)}`);
      if (!report.ok) {
        const failed = report.results.filter((r) => r.status === 'failed').map((r) => r.name);
        throw new Error(`invariants violated: ${failed.join(', ')}`);
      }
    } finally {
      store.close();
    }
  },
};

/** --store (PostgreSQL), else --file, else <data-dir>/meshca.db. */
function openInspection(values: FlagValues): { store: StoreInspection; path: string; kek: { kek: Buffer; origin: string } | undefined } {
  const url = str(values, 'store');
  if (url) {
    const passwordFile = str(values, 'store-password-file');
    const password = passwordFile === undefined ? undefined : readSecretFile(passwordFile, (text) => text.replace(/\r?\n$/, ''));
    return { store: inspectPostgresStore({ url, password }), path: redactedUrl(url), kek: optionalKek(values, undefined) };
  }
  const dataDir = requireStr(values, 'data-dir');
  const file = str(values, 'file');
  const path = file ?? existingDatabase(dataDir);
  if (file && !existsSync(file)) throw new UsageError(`${file} does not exist`);
  return { store: inspectSqliteStore(path, { readonly: file !== undefined }), path, kek: optionalKek(values, file ? undefined : dataDir) };
}

function sampleSize(value: string | undefined): number | undefined {
  if (value === undefined || value === 'all') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError('--sample must be a whole number or "all"');
  return n;
}

function optionalInt(values: FlagValues, name: string): number | undefined {
  const value = str(values, name);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number`);
  return n;
}
