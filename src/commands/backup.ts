import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';
import { assertNotInUse, backupDatabase, openStoreForReading } from '../app/context.js';
import { databasePath, existingDatabase, offlineKek, prepareDataDir } from '../app/data-dir.js';
import { checkInvariants, formatInvariantReport } from '../authority/invariants.js';
import { bool, requireStr, str, UsageError, type FlagValues } from '../flags.js';
import { DATA_DIR_FLAG, JSON_FLAG, KEK_FILE_FLAG, type Command } from './types.js';

const KEK_NOTE =
  'The KEK is not in the backup: keep it (and any --admin-token-file / --jwks-file) in your secret store. A backup opens only with the KEK that was in use when it was taken.';

interface Summary {
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly schemaVersion: number;
  readonly authorities: number;
  readonly certificates: number;
  readonly bundleSequence: number;
}

/** `meshca backup`: SQLite's online backup API, consistent and safe while the server is serving. */
export const backupCommand: Command = {
  usage: 'meshca backup --data-dir DIR --out FILE [--force] [--json]',
  description:
    "Back up the database online (safe while serving). Writes a consistent copy with SQLite's backup API, checks it with integrity_check, and prints its size and sha256. The KEK is not in the backup: keep it separately.",
  flags: [
    DATA_DIR_FLAG,
    { name: 'out', kind: 'string', value: 'FILE', help: 'where to write the backup (mode 0600)' },
    { name: 'force', kind: 'boolean', help: 'overwrite FILE if it exists' },
    JSON_FLAG,
  ],
  run: async (values) => {
    const path = existingDatabase(requireStr(values, 'data-dir'));
    const out = resolve(requireStr(values, 'out'));
    if (existsSync(out) && !bool(values, 'force')) throw new UsageError(`${out} exists; pass --force to overwrite it`);
    if (!existsSync(dirname(out))) throw new UsageError(`the directory ${dirname(out)} does not exist`);
    await backupDatabase(path, out);
    chmodSync(out, 0o600);
    const summary = await summarize(out);
    print(values, summary, `backup written: ${out}`, KEK_NOTE);
  },
};

/** `meshca restore`: checks a backup, then installs it as the data dir's database. */
export const restoreCommand: Command = {
  usage: 'meshca restore --from FILE --data-dir DIR [--force] [--kek-file PATH] [--json]',
  description:
    'Install a backup as the database of a data dir. The backup must pass integrity_check and the store invariants first (the key check too when a KEK is given). Refuses a non-empty data dir unless --force, which moves the existing database aside; the server must be stopped.',
  flags: [
    { name: 'from', kind: 'string', value: 'FILE', help: 'a file written by "meshca backup"' },
    DATA_DIR_FLAG,
    {
      name: 'force',
      kind: 'boolean',
      help: 'restore into a non-empty data dir (its database is moved to meshca.db.before-restore-<time>; other files are kept)',
    },
    { ...KEK_FILE_FLAG, help: 'also check that every key in the backup opens with this KEK (or MESHCA_KEK)' },
    JSON_FLAG,
  ],
  run: async (values) => {
    const from = resolve(requireStr(values, 'from'));
    const dataDir = requireStr(values, 'data-dir');
    if (!existsSync(from)) throw new UsageError(`${from} does not exist`);
    await checkBackup(from, values);

    const existing = existsSync(dataDir) ? readdirSync(dataDir) : [];
    if (existing.length > 0 && !bool(values, 'force')) {
      throw new UsageError(
        `${dataDir} is not empty (${existing.slice(0, 5).join(', ')}${existing.length > 5 ? ', …' : ''}); restore into an empty or new directory, or pass --force to replace its database`,
      );
    }
    prepareDataDir(dataDir, false);
    const target = databasePath(dataDir);
    if (resolve(target) === from) throw new UsageError("--from is the data dir's own database");
    if (existsSync(target)) assertNotInUse(target, 'restoring over its database');

    const staged = `${target}.restoring`;
    rmSync(staged, { force: true });
    await backupDatabase(from, staged);
    chmodSync(staged, 0o600);
    const moved = existsSync(target) ? moveAside(target) : undefined;
    renameSync(staged, target);
    syncDir(dataDir);
    const summary = await summarize(target);
    print(
      values,
      { ...summary, ...(moved ? { previousDatabase: moved } : {}) },
      `restored ${from} into ${target}${moved ? ` (the previous database is now ${moved})` : ''}`,
      'Start "meshca serve" on this data dir with the KEK that was in use when the backup was taken.',
    );
  },
};

/** Refuses a backup that is damaged, from a newer meshca, or breaks an invariant. */
async function checkBackup(file: string, values: FlagValues): Promise<void> {
  const kek = offlineKek({ kekFile: str(values, 'kek-file'), env: process.env });
  const store = openStoreForReading({ dataDir: dirname(file), file });
  try {
    const integrity = await store.integrityCheck();
    if (integrity !== 'ok') throw new Error(`${file} fails integrity_check (${integrity.split('\n')[0]}); nothing was restored`);
    const report = await checkInvariants(store, { kek: kek?.kek, skipIntegrity: true });
    if (!report.ok) {
      process.stderr.write(formatInvariantReport(report));
      throw new Error(`${file} violates the store invariants (above); nothing was restored`);
    }
  } finally {
    await store.close();
  }
}

function moveAside(target: string): string {
  const aside = `${target}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  // The WAL belongs to its database: it moves with it (SQLite finds it by name), the -shm is a cache.
  renameSync(target, aside);
  if (existsSync(`${target}-wal`)) renameSync(`${target}-wal`, `${aside}-wal`);
  rmSync(`${target}-shm`, { force: true });
  return aside;
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function summarize(file: string): Promise<Summary> {
  const store = openStoreForReading({ dataDir: dirname(file), file });
  try {
    const integrity = await store.integrityCheck();
    if (integrity !== 'ok') throw new Error(`${file} fails integrity_check: ${integrity.split('\n')[0]}`);
    return {
      file,
      bytes: statSync(file).size,
      sha256: await sha256File(file),
      schemaVersion: (await store.schema()).version,
      authorities: (await store.loadAuthorities()).length,
      certificates: await store.certificateCount(),
      bundleSequence: await store.bundleSequence(),
    };
  } finally {
    await store.close();
  }
}

function sha256File(file: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const hash = createHash('sha256');
    createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolvePromise(hash.digest('hex')));
  });
}

function print(values: FlagValues, summary: Summary & { previousDatabase?: string }, headline: string, note: string): void {
  if (bool(values, 'json')) {
    process.stdout.write(JSON.stringify({ ...summary, note }, null, 2) + '\n');
    return;
  }
  const lines = [
    headline,
    `  size             ${summary.bytes} bytes`,
    `  sha256           ${summary.sha256}`,
    `  schema version   ${summary.schemaVersion}`,
    `  authorities      ${summary.authorities}`,
    `  certificates     ${summary.certificates}`,
    `  bundle sequence  ${summary.bundleSequence}`,
    '',
    note,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}
