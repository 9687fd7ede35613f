import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = join(import.meta.dirname, '..', '..');
const POSTGRES_BINARIES = '/usr/lib/postgresql';

function newestSource(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((newest, entry) => {
    const path = join(dir, entry.name);
    return Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }, 0);
}

/** Tests that spawn `meshca` as a process need dist/; `npm test` builds first, a bare `vitest` may not have. */
function buildIfStale(): void {
  const cli = join(ROOT, 'dist', 'cli.js');
  if (existsSync(cli) && statSync(cli).mtimeMs >= newestSource(join(ROOT, 'src'))) return;
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'inherit' });
}

/**
 * The PostgreSQL store's tests need a real server. Unless MESHCA_TEST_POSTGRES_URL names one, a
 * throwaway cluster is started for this run through scripts/ci-postgres.sh (initdb in a temp dir,
 * loopback only) when PostgreSQL's binaries are installed; the script removes it when the holder
 * process below exits, which it does when vitest closes its stdin or dies.
 */
async function startThrowawayPostgres(): Promise<ChildProcess | undefined> {
  if (process.env.MESHCA_TEST_POSTGRES_URL || !existsSync(POSTGRES_BINARIES)) return undefined;
  const holder =
    "console.log('MESHCA_TEST_POSTGRES_URL=' + process.env.MESHCA_TEST_POSTGRES_URL); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));";
  const child = spawn('bash', [join(ROOT, 'scripts', 'ci-postgres.sh'), process.execPath, '-e', holder], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const url = await new Promise<string | undefined>((resolve) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => line.startsWith('MESHCA_TEST_POSTGRES_URL=') && resolve(line.slice('MESHCA_TEST_POSTGRES_URL='.length)));
    child.once('exit', () => resolve(undefined));
  });
  if (!url) return undefined;
  // Forked test workers inherit the environment of this process.
  process.env.MESHCA_TEST_POSTGRES_URL = url;
  return child;
}

export default async function setup(): Promise<() => Promise<void>> {
  buildIfStale();
  const postgres = await startThrowawayPostgres();
  return async () => {
    if (!postgres || postgres.exitCode !== null) return;
    const exited = new Promise((resolve) => postgres.once('exit', resolve));
    postgres.stdin?.end();
    await exited;
  };
}
