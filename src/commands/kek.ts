import { timingSafeEqual } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { AuthorityError } from '../authority/errors.js';
import { resealAuthorityKeys } from '../authority/kek-rotation.js';
import { assertNotInUse, openStoreForOfflineWrites } from '../app/context.js';
import { existingDatabase, offlineKek, readSecretFile } from '../app/data-dir.js';
import { bool, requireStr, str, UsageError, type FlagValues } from '../flags.js';
import { parseKek } from '../pki/keys.js';
import { DATA_DIR_FLAG, JSON_FLAG, KEK_FILE_FLAG, printRows, type Command } from './types.js';

/** `meshca kek rotate`: re-seal every authority key under a new KEK in one store transaction. */
export const kekCommand: Command = {
  usage: 'meshca kek rotate --data-dir DIR --new-kek-file NEW [--kek-file OLD]',
  description:
    'Rotate the key-encryption key. Re-encrypts every authority private key under a new KEK in one transaction, working directly on the data dir. Stop the server first; start it again with the new KEK.',
  flags: [
    DATA_DIR_FLAG,
    { ...KEK_FILE_FLAG, help: 'the current KEK (or MESHCA_KEK; a --dev data dir uses <data-dir>/kek)' },
    {
      name: 'new-kek-file',
      kind: 'string',
      value: 'PATH',
      help: 'the new KEK, mode 0600 (`openssl rand -base64 32 > new.kek && chmod 600 new.kek`)',
    },
    JSON_FLAG,
  ],
  run: async (values, positionals) => {
    if (positionals[0] !== 'rotate' || positionals.length > 1)
      throw new UsageError('usage: meshca kek rotate --data-dir DIR --new-kek-file NEW [--kek-file OLD]');
    await rotate(values);
  },
};

async function rotate(values: FlagValues): Promise<void> {
  const dataDir = requireStr(values, 'data-dir');
  const path = existingDatabase(dataDir);
  const old = currentKek(values, dataDir);
  const newFile = requireStr(values, 'new-kek-file');
  const next = readSecretFile(newFile, parseKek);
  if (timingSafeEqual(old.kek, next)) throw new UsageError('the new KEK is the same as the current one');
  assertNotInUse(path, 'rotating the KEK (a running server keeps sealing new keys with the old KEK)');

  const store = openStoreForOfflineWrites(dataDir);
  try {
    const after = await resealAuthorityKeys(store, old.kek, next, actor()).catch((error: unknown) => {
      throw error instanceof AuthorityError && error.code === 'ERR_AUTHORITY_INVALID'
        ? new UsageError('the data dir holds no sealed keys: nothing to re-encrypt')
        : error;
    });

    if (old.origin === join(dataDir, 'kek')) replaceDevKek(old.origin, newFile);
    const rows = after.map((a) => ({ id: a.id, kind: a.kind, state: a.state, result: 're-encrypted' }));
    printRows(rows, ['id', 'kind', 'state', 'result'], bool(values, 'json'), { reencrypted: rows.map((r) => r.id), kekFile: newFile });
    if (!bool(values, 'json')) {
      process.stdout.write(
        `\nre-encrypted ${rows.length} keys in one transaction. Start the server with --kek-file ${newFile} (or MESHCA_KEK).\n` +
          'Keep the old KEK as long as you keep backups taken before this rotation: they can only be opened with it.\n',
      );
    }
  } finally {
    await store.close();
  }
}

function currentKek(values: FlagValues, dataDir: string): { kek: Buffer; origin: string } {
  const found = offlineKek({ kekFile: str(values, 'kek-file'), env: process.env, dataDir });
  if (!found) throw new UsageError('the current KEK is required: --kek-file OLD or MESHCA_KEK');
  return found;
}

/** A --dev data dir keeps its KEK in <data-dir>/kek, which `serve --dev` reads: it must follow the rotation. */
function replaceDevKek(devFile: string, newFile: string): void {
  const text = readSecretFile(newFile, (t) => t.trim());
  const temporary = `${devFile}.rotating`;
  writeFileSync(temporary, text + '\n', { mode: 0o600, flag: 'w' });
  renameSync(temporary, devFile);
  process.stderr.write(`note: ${devFile} (the --dev KEK) now holds the new KEK\n`);
}

function actor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}
