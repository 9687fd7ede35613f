import { randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MeshcaError, UsageError } from '../errors.js';
import { parseKek } from '../pki/keys.js';

/** Thrown when the data dir or a secret file is unsafe to use; the message says how to fix it. */
export class DataDirError extends MeshcaError<'ERR_DATA_DIR'> {
  override readonly name = 'DataDirError';
  constructor(message: string) {
    super('ERR_DATA_DIR', message);
  }
}

/** Creates the data dir 0700, or refuses one that group/others can read (unless in dev mode, where it is fixed). */
export function prepareDataDir(dir: string, dev: boolean): void {
  try {
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    throw unusableDataDir(dir, error);
  }
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  if (dev) return chmodSync(dir, 0o700);
  throw new DataDirError(`data dir ${dir} is accessible by group/others (mode ${mode.toString(8)}); run: chmod 700 ${dir}`);
}

/** A data dir meshca cannot create or write, said without a stack trace and with the way out. */
function unusableDataDir(dir: string, error: unknown): DataDirError {
  const code = (error as { code?: string }).code;
  const why =
    code === 'EACCES' || code === 'EPERM'
      ? 'permission denied'
      : code === 'EROFS'
        ? 'read-only file system'
        : code === 'ENOTDIR'
          ? 'a path component is not a directory'
          : (error as Error).message;
  return new DataDirError(
    `cannot use ${dir} as the data dir (${why}): pass a --data-dir this user can write, or give it this user (chown) with mode 700`,
  );
}

export interface KekSource {
  readonly kek: Buffer;
  /** Where it came from, for the log (never the key). */
  readonly origin: string;
  readonly generated: boolean;
}

interface KekOptions {
  readonly kekFile?: string;
  readonly env: NodeJS.ProcessEnv;
}

/** --kek-file, else MESHCA_KEK, else `devFile` when given; undefined when none is configured. */
function configuredKek(options: KekOptions, devFile: string | undefined): KekSource | undefined {
  if (options.kekFile) return { kek: readSecretFile(options.kekFile, parseKek), origin: options.kekFile, generated: false };
  const fromEnv = options.env.MESHCA_KEK;
  if (fromEnv) return { kek: parseKek(fromEnv), origin: 'MESHCA_KEK', generated: false };
  return devFile ? { kek: readSecretFile(devFile, parseKek), origin: devFile, generated: false } : undefined;
}

/**
 * The server's key-encryption key: --kek-file, else MESHCA_KEK, else (dev mode only) <data-dir>/kek,
 * generated on first use. Production must bring its own KEK so keys at rest mean something.
 */
export function loadKek(options: KekOptions & { readonly dataDir: string; readonly dev: boolean }): KekSource {
  const devFile = join(options.dataDir, 'kek');
  const found = configuredKek(options, options.dev && existsSync(devFile) ? devFile : undefined);
  if (found) return found;
  if (!options.dev) throw new DataDirError(NO_KEK);
  writeFileSync(devFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  return { kek: readSecretFile(devFile, parseKek), origin: devFile, generated: true };
}

/** The KEK for offline tools (crl, verify, kek rotate, ...): as the server finds it, plus an existing dev KEK; never generates one. */
export function offlineKek(options: KekOptions & { readonly dataDir?: string }): KekSource | undefined {
  const devFile = options.dataDir === undefined ? undefined : join(options.dataDir, 'kek');
  return configuredKek(options, devFile && existsSync(devFile) ? devFile : undefined);
}

/** offlineKek, or a DataDirError saying how to provide one. */
export function requireOfflineKek(options: KekOptions & { readonly dataDir?: string }): KekSource {
  const found = offlineKek(options);
  if (!found) throw new DataDirError(NO_KEK);
  return found;
}

const NO_KEK =
  'no key-encryption key: create one with `openssl rand -base64 32 > kek && chmod 600 kek` and pass --kek-file kek (or set MESHCA_KEK); --dev generates one for local use';

/** Reads a secret file, refusing one readable by group/others. */
export function readSecretFile<T>(path: string, parse: (text: string) => T): T {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    throw new DataDirError(`cannot read ${path}: the file does not exist`);
  }
  if ((mode & 0o077) !== 0)
    throw new DataDirError(`${path} is readable by group/others (mode ${mode.toString(8)}); run: chmod 600 ${path}`);
  return parse(readFileSync(path, 'utf8'));
}

/** Reads or creates (0600) a random secret such as the admin token; returns it and whether it was created. */
export function ensureSecretFile(path: string, create: () => string): { value: string; created: boolean } {
  if (existsSync(path)) return { value: readSecretFile(path, (t) => t.trim()), created: false };
  writeFileSync(path, create() + '\n', { mode: 0o600, flag: 'wx' });
  return { value: readSecretFile(path, (t) => t.trim()), created: true };
}

export function databasePath(dataDir: string): string {
  return join(dataDir, 'meshca.db');
}

/** The database path of a data dir, refusing a dir without one (a typo in --data-dir must not look "empty"). */
export function existingDatabase(dataDir: string): string {
  const path = databasePath(dataDir);
  if (!existsSync(path)) throw new UsageError(`no meshca database at ${path}: check --data-dir (start "meshca serve" once to create one)`);
  return path;
}

/**
 * Writes a private key or other secret: a new file created 0600 (O_EXCL, O_NOFOLLOW) next to the
 * target, then renamed over it. Whatever was at the target — a file another user can read, or a
 * symlink pointing elsewhere — is replaced, never written through.
 */
export function writePrivateFile(path: string, content: string): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}
