import { offlineKek } from '../app/data-dir.js';
import { checkInvariants, formatInvariantReport } from '../authority/invariants.js';
import { bool, str, UsageError, type FlagValues } from '../flags.js';
import { openReadOnlyStore, STORE_FLAGS } from './store-access.js';
import { DATA_DIR_FLAG, JSON_FLAG, KEK_FILE_FLAG, type Command } from './types.js';

/** The KEK for offline tools: --kek-file, MESHCA_KEK, else a dev data dir's <data-dir>/kek, else none. */
export function optionalKek(values: FlagValues, dataDir: string | undefined): { kek: Buffer; origin: string } | undefined {
  return offlineKek({ kekFile: str(values, 'kek-file'), env: process.env, dataDir });
}

/** `meshca verify`: the crash-safety invariants, read-only, on a data dir (server running or not) or a backup file. */
export const verifyCommand: Command = {
  usage:
    'meshca verify --data-dir DIR [--kek-file PATH] [--sample N] [--json]\n       meshca verify --file BACKUP [--kek-file PATH]\n       meshca verify --store postgres://USER@HOST/DB [--store-password-file PATH] --kek-file PATH',
  description:
    'Check the store invariants (read-only). integrity_check, exactly one active intermediate whose key matches its certificate under a trusted root, authority chains, bundle sequence, and that every stored certificate verifies against a stored authority. Exits 1 when one is violated.',
  flags: [
    DATA_DIR_FLAG,
    KEK_FILE_FLAG,
    { name: 'file', kind: 'string', value: 'PATH', help: 'check this database file (e.g. a backup) instead of <data-dir>/meshca.db' },
    ...STORE_FLAGS,
    {
      name: 'sample',
      kind: 'string',
      value: 'N|all',
      default: 'all',
      help: 'verify the signatures of N random certificates instead of all',
    },
    { name: 'min-bundle-sequence', kind: 'string', value: 'N', help: 'fail if the bundle sequence is below N (the last one you saw)' },
    { name: 'skip-integrity', kind: 'boolean', help: 'skip PRAGMA integrity_check (it reads the whole file)' },
    JSON_FLAG,
  ],
  run: async (values) => {
    const { store, location: path, dataDir } = await openReadOnlyStore(values);
    const kek = optionalKek(values, dataDir);
    try {
      const report = await checkInvariants(store, {
        kek: kek?.kek,
        sample: sampleSize(str(values, 'sample')),
        minBundleSequence: optionalInt(values, 'min-bundle-sequence'),
        skipIntegrity: bool(values, 'skip-integrity'),
      });
      if (bool(values, 'json'))
        process.stdout.write(JSON.stringify({ database: path, kek: kek?.origin ?? null, ...report }, null, 2) + '\n');
      else process.stdout.write(`meshca verify: ${path}${kek ? ` (KEK from ${kek.origin})` : ''}\n\n${formatInvariantReport(report)}`);
      if (!report.ok) {
        const failed = report.results.filter((r) => r.status === 'failed').map((r) => r.name);
        throw new Error(`invariants violated: ${failed.join(', ')}`);
      }
    } finally {
      await store.close();
    }
  },
};

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
