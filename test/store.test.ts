import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildServerConfig, SERVE_FLAGS } from '../src/config.js';
import { parseFlags, UsageError } from '../src/flags.js';
import { StoreError, type StoreErrorCode } from '../src/store/errors.js';
import { applyMigrations, DEFAULT_MIGRATIONS_DIR, readMigrations, recordedMigrations } from '../src/store/migrations.js';
import { backupSqliteStore, openSqliteStore, type SqliteStore, type SqliteStoreOptions } from '../src/store/sqlite.js';
import { POSTGRES_MIGRATIONS_DIR } from '../src/store/postgres/migrations.js';
import { openPostgresStore } from '../src/store/postgres/store.js';
import type {
  AuthorityKind,
  AuthorityRecord,
  AuthorityState,
  CertificateQuery,
  CertificateSummary,
  IssuedCertificateRecord,
  JwtAuthorityRecord,
  JwtAuthorityState,
  PendingAuthorityRecord,
  Store,
} from '../src/store/types.js';
import { createTestDatabase, dropTestDatabases, POSTGRES_URL, requirePostgresInCi } from './support/postgres.js';

const ROOT = join(import.meta.dirname, '..');
const HOUR = 3_600_000;
const NOW = new Date('2030-01-01T00:00:00Z');
const DENIED = 'spiffe://cluster.local/ns/default/sa/denied';
const DENY = { reason: 'keyCompromise', actor: 'alice', at: NOW, deny: true } as const;

// ---------------------------------------------------------------------------------------------
// Fixtures

const cleanup: string[] = [];
const openStores: Store[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'meshca-store-'));
  cleanup.push(dir);
  return dir;
}

/** What tests tune on either engine. */
type Tuning = Pick<SqliteStoreOptions, 'groupCommitWindowMs' | 'groupCommitLingerMs' | 'groupCommitMaxRows' | 'onCommit' | 'migrationsDir'>;

/** One storage engine under the same suite: where a new empty store lives, and how to open it. */
interface Backend {
  readonly name: 'sqlite' | 'postgres';
  readonly migrationsDir: string;
  /** Compiled module (under the durability test's build) and how its child opens a store. */
  readonly childOpen: string;
  location(): Promise<string>;
  open(location: string, tuning?: Tuning): Promise<Store>;
}

const SQLITE: Backend = {
  name: 'sqlite',
  migrationsDir: DEFAULT_MIGRATIONS_DIR,
  childOpen: `import { openSqliteStore } from './out/store/sqlite.js';\nconst open = (path, migrationsDir) => openSqliteStore({ path, migrationsDir });`,
  location: async () => join(tempDir(), 'meshca.db'),
  open: async (path, tuning) => openSqliteStore({ path, ...tuning }),
};

const POSTGRES: Backend = {
  name: 'postgres',
  migrationsDir: POSTGRES_MIGRATIONS_DIR,
  childOpen: `import { openPostgresStore } from './out/store/postgres/store.js';\nconst open = (url, migrationsDir) => openPostgresStore({ url, migrationsDir });`,
  location: createTestDatabase,
  open: (url, tuning) => openPostgresStore({ url, ...tuning }),
};

const BACKENDS: Backend[] = POSTGRES_URL ? [SQLITE, POSTGRES] : [SQLITE];

async function openTracked<S extends Store>(opening: Promise<S>): Promise<S> {
  const store = await opening;
  openStores.push(store);
  return store;
}

function openSqlite(path: string, options: Partial<SqliteStoreOptions> = {}): SqliteStore {
  const store = openSqliteStore({ path, ...options });
  openStores.push(store);
  return store;
}

afterEach(async () => {
  await Promise.all(openStores.splice(0).map((s) => s.close()));
});

afterAll(async () => {
  await dropTestDatabases();
  for (const dir of cleanup) rmSync(dir, { recursive: true, force: true });
});

requirePostgresInCi();

function authority(id: string, kind: AuthorityKind, state: AuthorityState, parentId: string | null = null): AuthorityRecord {
  return {
    id,
    kind,
    parentId,
    state,
    keyType: 'ecdsa-p256',
    certificateDer: randomBytes(200),
    sealedKey: randomBytes(80),
    upstreamChainDers: [],
    serialHex: randomSerial(),
    subject: `O=meshca,CN=${id}`,
    notBefore: new Date(NOW.getTime() - HOUR),
    notAfter: new Date(NOW.getTime() + 1000 * HOUR),
    sha256Fingerprint: randomBytes(32).toString('hex'),
    createdAt: NOW,
    updatedAt: NOW,
  };
}

function randomSerial(): string {
  return randomBytes(16).toString('hex').replace(/^0+/, '');
}

let issuedCounter = 0;

function issued(overrides: Partial<IssuedCertificateRecord> = {}): IssuedCertificateRecord {
  issuedCounter += 1;
  return {
    serialHex: randomSerial(),
    spiffeId: 'spiffe://cluster.local/ns/default/sa/app',
    callerId: 'spiffe://cluster.local/ns/default/sa/app',
    clusterId: 'Kubernetes',
    authorityId: 'int-1',
    notBefore: new Date(NOW.getTime() - 60_000),
    notAfter: new Date(NOW.getTime() + 24 * HOUR + issuedCounter),
    issuedAt: NOW,
    der: randomBytes(64),
    ...overrides,
  };
}

const audit = (action: string, target: string) => ({ actor: 'test', action, target, result: 'ok' as const, at: NOW });

/** A root and its intermediate `int-1`, both active (further intermediates retired: one signer at a time); bundle sequence 1. */
async function bootstrap(store: Store, intermediates: readonly string[] = ['int-1']): Promise<void> {
  const insert = [
    authority('root-1', 'root', 'active'),
    ...intermediates.map((id, i) => authority(id, 'intermediate', i === 0 ? 'active' : 'retired', 'root-1')),
  ];
  await store.applyAuthorityChange({ insert, bumpBundleSequence: true, audit: audit('authority.bootstrap', 'root-1') });
}

function states(authorities: readonly AuthorityRecord[]): Record<string, AuthorityState> {
  return Object.fromEntries(authorities.map((a) => [a.id, a.state]));
}

async function expectStoreError(promise: Promise<unknown>, code: StoreErrorCode, message?: RegExp): Promise<StoreError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreError);
  expect((error as StoreError).code).toBe(code);
  if (message) expect((error as StoreError).message).toMatch(message);
  return error as StoreError;
}

async function allPages(store: Store, query: Omit<CertificateQuery, 'cursor'>): Promise<CertificateSummary[]> {
  const items: CertificateSummary[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.listCertificates({ ...query, cursor });
    expect(page.items.length).toBeLessThanOrEqual(query.limit);
    items.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return items;
}

// ---------------------------------------------------------------------------------------------

// The durability child runs plain node, so it needs the store compiled. Only src/store is
// compiled, into a temp dir (once per file), so that other in-progress files cannot break the test.
let compiled: string | undefined;
function compiledStore(): string {
  if (compiled) return compiled;
  const build = tempDir();
  writeFileSync(
    join(build, 'tsconfig.json'),
    JSON.stringify({
      extends: join(ROOT, 'tsconfig.json'),
      compilerOptions: { rootDir: join(ROOT, 'src'), outDir: join(build, 'out'), sourceMap: false },
      include: [join(ROOT, 'src/store/**/*.ts')],
    }),
  );
  writeFileSync(join(build, 'package.json'), '{"type":"module"}\n');
  symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'));
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(build, 'tsconfig.json')], { stdio: 'pipe' });
  return (compiled = build);
}

/** Spawns the child, collects complete stdout lines, SIGKILLs it once `count` have arrived. */
function runUntilKilled(script: string, args: string[], count: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let partial = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length >= count) proc.kill('SIGKILL');
    });
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    proc.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve(lines) : reject(new Error(`child exited ${code}: ${stderr}`))));
  });
}

describe.each(BACKENDS)('$name store', (backend) => {
  const open = (location: string, tuning: Tuning = {}): Promise<Store> => openTracked(backend.open(location, tuning));
  const freshStore = async (tuning: Tuning = {}): Promise<{ store: Store; path: string }> => {
    const path = await backend.location();
    return { store: await open(path, tuning), path };
  };

  describe('migrations', () => {
    it('reopens an existing database without re-applying anything', async () => {
      const { store, path } = await freshStore();
      await bootstrap(store);
      await store.close();
      const reopened = await open(path);
      expect(await reopened.bundleSequence()).toBe(1);
      expect(states(await reopened.loadAuthorities())).toEqual({ 'root-1': 'active', 'int-1': 'active' });
    });

    const refusals: { name: string; change: (migrations: string) => void; message: RegExp }[] = [
      {
        name: 'an applied migration was edited',
        change: (m) => appendFileSync(join(m, '001_initial.sql'), '\n-- edited\n'),
        message: /changed after it was applied/,
      },
      {
        name: 'the database is newer than the code',
        change: (m) => rmSync(join(m, '999_future.sql')),
        message: /newer than this meshca knows/,
      },
    ];

    it.each(refusals)('refuses to open when $name', async ({ change, message }) => {
      const migrations = join(tempDir(), 'migrations');
      cpSync(backend.migrationsDir, migrations, { recursive: true });
      writeFileSync(join(migrations, '999_future.sql'), 'CREATE TABLE future (id INTEGER PRIMARY KEY);\n');
      const { store, path } = await freshStore({ migrationsDir: migrations });
      await store.close();
      change(migrations);
      await expectStoreError(open(path, { migrationsDir: migrations }), 'ERR_STORE_MIGRATION', message);
    });
  });

  describe('authority changes', () => {
    it('commits inserts, transitions, the bundle bump and the audit event together', async () => {
      const { store } = await freshStore();
      const root = authority('root-1', 'root', 'prepared');
      const intermediate = authority('int-1', 'intermediate', 'prepared', 'root-1');
      // Child first: the parent foreign key is checked at commit.
      expect(
        await store.applyAuthorityChange({
          insert: [intermediate, root],
          bumpBundleSequence: true,
          audit: audit('authority.prepare', 'root-1'),
        }),
      ).toEqual({
        bundleSequence: 1,
      });
      const later = new Date(NOW.getTime() + 1000);
      const result = await store.applyAuthorityChange({
        transitions: [
          { id: 'root-1', from: ['prepared'], to: 'active' },
          { id: 'int-1', from: ['prepared'], to: 'active' },
        ],
        resealed: [{ id: 'int-1', sealedKey: Buffer.from('resealed') }],
        bumpBundleSequence: true,
        audit: { ...audit('authority.activate', 'int-1'), at: later },
      });
      expect(result).toEqual({ bundleSequence: 2 });
      const loaded = await store.loadAuthorities();
      expect(states(loaded)).toEqual({ 'root-1': 'active', 'int-1': 'active' });
      const int = loaded.find((a) => a.id === 'int-1')!;
      expect(int).toMatchObject({
        parentId: 'root-1',
        sealedKey: Buffer.from('resealed'),
        updatedAt: later,
        certificateDer: intermediate.certificateDer,
      });
      expect((await store.listAudit({ limit: 10 })).items.map((e) => e.action)).toEqual(['authority.activate', 'authority.prepare']);
    });

    const failures: {
      name: string;
      change: (fresh: AuthorityRecord) => Parameters<Store['applyAuthorityChange']>[0];
      code: StoreErrorCode;
      message?: RegExp;
    }[] = [
      {
        name: 'a guard finds another state',
        change: (fresh) => ({
          insert: [fresh],
          transitions: [{ id: 'int-1', from: ['prepared'], to: 'active' }],
          bumpBundleSequence: true,
          audit: audit('x', 'int-1'),
        }),
        code: 'ERR_STORE_CONFLICT',
        message: /int-1 is active, not prepared/,
      },
      {
        name: 'a transition names an unknown authority',
        change: (fresh) => ({
          insert: [fresh],
          transitions: [{ id: 'nope', from: ['active'], to: 'retired' }],
          bumpBundleSequence: true,
          audit: audit('x', 'nope'),
        }),
        code: 'ERR_STORE_NOT_FOUND',
      },
      {
        name: 'an insert duplicates an id',
        change: (fresh) => ({
          insert: [fresh, authority('int-1', 'intermediate', 'prepared', 'root-1')],
          bumpBundleSequence: true,
          audit: audit('x', 'int-1'),
        }),
        code: 'ERR_STORE_DUPLICATE',
      },
      {
        name: 'a parent is missing',
        change: (fresh) => ({
          insert: [fresh, authority('int-9', 'intermediate', 'prepared', 'root-9')],
          bumpBundleSequence: true,
          audit: audit('x', 'int-9'),
        }),
        code: 'ERR_STORE_NOT_FOUND',
      },
      {
        name: 'a revocation names an unknown authority',
        change: (fresh) => ({
          insert: [fresh],
          revocations: [{ authorityId: 'nope', revokedAt: NOW, reason: 'keyCompromise', actor: 'x' }],
          bumpBundleSequence: true,
          audit: audit('x', 'nope'),
        }),
        code: 'ERR_STORE_NOT_FOUND',
      },
      {
        name: 'it completes a pending authority that is gone',
        change: (fresh) => ({
          insert: [fresh],
          completesPending: 'pending-0000000000000000',
          bumpBundleSequence: true,
          audit: audit('x', 'int-2'),
        }),
        code: 'ERR_STORE_NOT_FOUND',
        message: /no pending authority with id pending-0000000000000000/,
      },
      {
        name: 'a re-seal names an unknown authority',
        change: (fresh) => ({
          insert: [fresh],
          resealed: [{ id: 'nope', sealedKey: Buffer.alloc(1) }],
          bumpBundleSequence: true,
          audit: audit('x', 'nope'),
        }),
        code: 'ERR_STORE_NOT_FOUND',
      },
    ];

    it.each(failures)('rolls back everything when $name', async ({ change, code, message }) => {
      const { store } = await freshStore();
      await bootstrap(store);
      const fresh = authority('int-2', 'intermediate', 'prepared', 'root-1');
      await expectStoreError(store.applyAuthorityChange(change(fresh)), code, message);
      expect(await store.bundleSequence()).toBe(1);
      expect((await store.listAudit({ limit: 10 })).items).toHaveLength(1);
      expect(states(await store.loadAuthorities())).toEqual({ 'root-1': 'active', 'int-1': 'active' });
    });

    it("records an authority revocation with its taint, bumps its own and its root's version, and refuses a second one", async () => {
      const { store, path } = await freshStore();
      await bootstrap(store, ['int-1', 'int-2']);
      const taint = (id: string) => ({
        transitions: [{ id, from: ['active' as const], to: 'tainted' as const }],
        revocations: [{ authorityId: id, revokedAt: NOW, reason: 'cACompromise' as const, actor: 'alice' }],
        bumpBundleSequence: false,
        audit: audit('authority.revoke', id),
      });
      await store.applyAuthorityChange(taint('int-1'));
      expect([
        await store.revocationVersion('int-1'),
        await store.revocationVersion('root-1'),
        await store.revocationVersion('int-2'),
      ]).toEqual([1, 1, 0]);
      await expectStoreError(store.applyAuthorityChange({ ...taint('int-1'), transitions: [] }), 'ERR_STORE_DUPLICATE');
      await store.close();
      const reopened = await open(path);
      expect(await reopened.listAuthorityRevocations()).toEqual([
        { authorityId: 'int-1', revokedAt: NOW, reason: 'cACompromise', actor: 'alice' },
      ]);
      expect(states(await reopened.loadAuthorities())).toEqual({ 'root-1': 'active', 'int-1': 'tainted', 'int-2': 'retired' });
      expect(await reopened.bundleSequence()).toBe(1);
    });
  });

  describe('pending authorities', () => {
    const pending = (id: string, createdAt = NOW): PendingAuthorityRecord => ({
      id,
      keyType: 'ec-p256',
      sealedKey: randomBytes(80),
      csrDer: randomBytes(300),
      subject: 'CN=x',
      upstream: 'manual',
      createdAt,
      expiresAt: new Date(createdAt.getTime() + HOUR),
    });

    it('survives a reopen; completing one deletes it in the same transaction as the inserted chain', async () => {
      const { store, path } = await freshStore();
      await bootstrap(store);
      const [a, b] = [pending('pending-a'), pending('pending-b', new Date(NOW.getTime() + 1))];
      await store.addPendingAuthority(a, audit('operator', a.id));
      await store.addPendingAuthority(b, audit('operator', b.id));
      await expectStoreError(store.addPendingAuthority(a, audit('operator', a.id)), 'ERR_STORE_DUPLICATE');
      await store.close();
      const reopened = await open(path);
      expect(await reopened.loadPendingAuthorities()).toEqual([a, b]);
      const chained = {
        ...authority('int-2', 'intermediate', 'prepared', 'root-1'),
        upstreamChainDers: [randomBytes(100), randomBytes(120)],
      };
      await reopened.applyAuthorityChange({
        insert: [chained],
        completesPending: a.id,
        resealedPending: [{ id: b.id, sealedKey: Buffer.from('resealed') }],
        bumpBundleSequence: false,
        audit: audit('operator', 'int-2'),
      });
      expect(await reopened.loadPendingAuthorities()).toEqual([{ ...b, sealedKey: Buffer.from('resealed') }]);
      expect((await reopened.loadAuthorities()).find((r) => r.id === 'int-2')?.upstreamChainDers).toEqual(chained.upstreamChainDers);
      expect(await reopened.deletePendingAuthority(b.id, audit('operator', b.id))).toBe(true);
      expect(await reopened.deletePendingAuthority(b.id, audit('operator', b.id))).toBe(false);
      expect((await reopened.listAudit({ limit: 10 })).items.map((e) => e.target)).toEqual([
        'pending-b',
        'int-2',
        'pending-b',
        'pending-a',
        'root-1',
      ]);
    });
  });

  describe('group commit', () => {
    it('commits 2,000 concurrent records in bounded batches, all durable after reopening', async () => {
      const batches: number[] = [];
      const { store, path } = await freshStore({ groupCommitMaxRows: 256, onCommit: (rows) => batches.push(rows) });
      await bootstrap(store);
      const records = Array.from({ length: 2000 }, () => issued());
      await Promise.all(records.map((r) => store.recordIssued(r)));
      expect(batches.reduce((a, b) => a + b, 0)).toBe(2000);
      expect(Math.max(...batches)).toBeLessThanOrEqual(256);
      expect(batches.length).toBeLessThan(100);
      await store.close();

      const reopened = await open(path);
      expect((await reopened.authorityUsage(NOW)).get('int-1')).toEqual({ issued: 2000, unexpired: 2000, revoked: 0 });
      for (let i = 0; i < records.length; i += 100) {
        const chunk = records.slice(i, i + 100);
        const found = await Promise.all(chunk.map((r) => reopened.getCertificate(r.serialHex, NOW)));
        expect(found.every((c, j) => c?.der.equals(chunk[j]!.der))).toBe(true);
      }
    });

    type LingerStep = readonly ['announce' | 'record' | 'cancel' | 'still queued', string];
    /** a and b announced, a recorded and held back while b is on its way. */
    const A_WAITS_FOR_B: LingerStep[] = [
      ['announce', 'a'],
      ['announce', 'b'],
      ['record', 'a'],
      ['still queued', 'a'],
    ];
    const lingerCases: { name: string; lingerMs: number; maxRows?: number; steps: LingerStep[]; commits: number[] }[] = [
      { name: 'commits a lone record at once: nothing is announced behind it', lingerMs: 60_000, steps: [['record', 'a']], commits: [1] },
      {
        name: 'waits for an announced issuance, then commits both records in one batch',
        lingerMs: 60_000,
        steps: [...A_WAITS_FOR_B, ['record', 'b']],
        commits: [2],
      },
      {
        name: 'stops waiting when the announced issuance is cancelled (refused or failed)',
        lingerMs: 60_000,
        steps: [...A_WAITS_FOR_B, ['cancel', 'b']],
        commits: [1],
      },
      {
        name: 'counts a cancel after the record as nothing (no double count)',
        lingerMs: 60_000,
        steps: [
          ['announce', 'a'],
          ['announce', 'b'],
          ['record', 'a'],
          ['cancel', 'a'],
          ['still queued', 'a'],
          ['record', 'b'],
        ],
        commits: [2],
      },
      {
        name: 'gives up after the linger time when an announced record never comes',
        lingerMs: 40,
        steps: [
          ['announce', 'a'],
          ['announce', 'b'],
          ['record', 'a'],
        ],
        commits: [1],
      },
      {
        name: 'commits a full batch at once, whatever is still announced',
        lingerMs: 60_000,
        maxRows: 2,
        steps: [
          ['announce', 'a'],
          ['announce', 'b'],
          ['announce', 'c'],
          ['record', 'a'],
          ['record', 'b'],
        ],
        commits: [2],
      },
    ];
    it.each(lingerCases)('linger: $name', async ({ lingerMs, maxRows, steps, commits }) => {
      const batches: number[] = [];
      const { store } = await freshStore({
        groupCommitLingerMs: lingerMs,
        groupCommitMaxRows: maxRows,
        onCommit: (rows) => batches.push(rows),
      });
      await bootstrap(store);
      batches.length = 0;
      const announced = new Map<string, ReturnType<Store['expectIssued']>>();
      const recorded = new Map<string, { done: boolean; promise: Promise<void> }>();
      for (const [step, name] of steps) {
        if (step === 'announce') announced.set(name, store.expectIssued());
        if (step === 'cancel') announced.get(name)!.cancel();
        if (step === 'record') {
          const entry = { done: false, promise: store.recordIssued(issued(), announced.get(name)) };
          void entry.promise.then(() => (entry.done = true));
          recorded.set(name, entry);
        }
        if (step === 'still queued') {
          await new Promise((resolve) => setTimeout(resolve, 50));
          expect(recorded.get(name)!.done).toBe(false);
        }
      }
      await Promise.all([...recorded.values()].map((r) => r.promise));
      expect(batches).toEqual(commits);
    });

    const rejects: {
      name: string;
      bad: (existing: IssuedCertificateRecord) => IssuedCertificateRecord;
      code: StoreErrorCode;
      deny?: string;
    }[] = [
      { name: 'a duplicate serial', bad: (existing) => issued({ serialHex: existing.serialHex }), code: 'ERR_STORE_DUPLICATE' },
      {
        name: 'a duplicate serial in another spelling',
        bad: (existing) => issued({ serialHex: `00${existing.serialHex.toUpperCase()}` }),
        code: 'ERR_STORE_DUPLICATE',
      },
      { name: 'an unknown authority', bad: () => issued({ authorityId: 'int-404' }), code: 'ERR_STORE_NOT_FOUND' },
      {
        name: 'a denied identity (refuseIfDenied)',
        bad: () => issued({ spiffeId: DENIED, refuseIfDenied: true }),
        code: 'ERR_STORE_DENIED',
        deny: DENIED,
      },
    ];

    it.each(rejects)('rejects only $name, not its batch-mates', async ({ bad, code, deny }) => {
      const { store } = await freshStore({ groupCommitWindowMs: 20 });
      await bootstrap(store);
      if (deny) await store.revokeIdentity(deny, DENY);
      const existing = issued();
      await store.recordIssued(existing);
      const mates = [issued(), issued(), issued()];
      const outcomes = await Promise.allSettled([
        store.recordIssued(mates[0]),
        store.recordIssued(bad(existing)),
        ...mates.slice(1).map((m) => store.recordIssued(m)),
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
      await expectStoreError(Promise.reject((outcomes[1] as PromiseRejectedResult).reason), code);
      for (const mate of mates) expect(await store.getCertificate(mate.serialHex, NOW)).toBeDefined();
    });

    it('refuses a denied identity only when asked to (workload issuance), on the writer thread and inline', async () => {
      const { store, path } = await freshStore({ groupCommitWindowMs: 60_000 });
      await bootstrap(store);
      await store.revokeIdentity(DENIED, DENY);
      const refused = issued({ spiffeId: DENIED, refuseIfDenied: true });
      const profile = issued({ spiffeId: DENIED }); // meshca's own certificates do not consult the deny-list
      const allowed = issued({ refuseIfDenied: true });
      const outcomes = Promise.allSettled([refused, profile, allowed].map((r) => store.recordIssued(r)));
      await store.close(); // drains the queue inline (no writer thread) on SQLite
      expect((await outcomes).map((o) => o.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
      const reopened = await open(path);
      expect(await reopened.getCertificate(refused.serialHex, NOW)).toBeUndefined();
      expect(await reopened.getCertificate(profile.serialHex, NOW)).toBeDefined();
      expect(await reopened.getCertificate(allowed.serialHex, NOW)).toBeDefined();
    });

    it('close() commits what is still queued, then refuses every call', async () => {
      const { store, path } = await freshStore({ groupCommitWindowMs: 60_000 });
      await bootstrap(store);
      const records = [issued(), issued()];
      const pending = records.map((r) => store.recordIssued(r));
      await store.close();
      await expect(Promise.all(pending)).resolves.toBeDefined();
      await store.close(); // idempotent

      const calls: [string, () => Promise<unknown>][] = [
        ['recordIssued', () => store.recordIssued(issued())],
        ['loadAuthorities', () => store.loadAuthorities()],
        ['listCertificates', () => store.listCertificates({ limit: 10, now: NOW })],
        ['isDenied', () => store.isDenied('spiffe://x')],
        ['applyAuthorityChange', () => store.applyAuthorityChange({ bumpBundleSequence: true, audit: audit('x', 'y') })],
      ];
      for (const [, call] of calls) await expectStoreError(call(), 'ERR_STORE_UNAVAILABLE', /closed/);

      const reopened = await open(path);
      for (const r of records) expect(await reopened.getCertificate(r.serialHex, NOW)).toBeDefined();
    });
  });

  describe('durability', () => {
    let build: string;

    beforeAll(() => {
      build = compiledStore();
    });

    it('keeps every acknowledged record after kill -9', async () => {
      const path = await backend.location();
      const setup = await open(path);
      await bootstrap(setup);
      await setup.close();

      const child = join(build, `child-${backend.name}.mjs`);
      writeFileSync(
        child,
        `import { randomBytes } from 'node:crypto';
  ${backend.childOpen}
  const [path, migrationsDir] = process.argv.slice(2);
  const store = await open(path, migrationsDir);
  async function issueForever() {
    for (;;) {
      const serialHex = randomBytes(16).toString('hex').replace(/^0+/, '');
      const now = Date.now();
      await store.recordIssued({ serialHex, spiffeId: 'spiffe://cluster.local/ns/a/sa/b', callerId: 'c', clusterId: 'k', authorityId: 'int-1',
        notBefore: new Date(now), notAfter: new Date(now + 3600000), issuedAt: new Date(now), der: randomBytes(600) });
      process.stdout.write(serialHex + '\\n');
    }
  }
  for (let i = 0; i < 16; i++) void issueForever();
  `,
      );
      const acknowledged = await runUntilKilled(child, [path, backend.migrationsDir], 300);
      expect(acknowledged.length).toBeGreaterThanOrEqual(300);

      const reopened = await open(path);
      expect(await reopened.integrityCheck()).toBe('ok');
      const missing: string[] = [];
      for (const serial of acknowledged) if (!(await reopened.getCertificate(serial, NOW))) missing.push(serial);
      expect(missing).toEqual([]);
    });
  });

  describe('listing certificates', () => {
    const later = new Date(NOW.getTime() + 1000 * HOUR);

    /** 60 records across two authorities and three identities; some expired, some revoked. */
    async function seeded(): Promise<{ store: Store; records: (IssuedCertificateRecord & { revoked: boolean })[] }> {
      const { store } = await freshStore();
      await bootstrap(store, ['int-1', 'int-2']);
      const records = Array.from({ length: 60 }, (_, i) => ({
        ...issued({
          spiffeId: `spiffe://cluster.local/ns/default/sa/s${i % 3}`,
          authorityId: i % 2 === 0 ? 'int-1' : 'int-2',
          // A few share a notAfter, so ties are broken across page boundaries.
          notAfter: new Date(NOW.getTime() + (i % 4 === 0 ? -HOUR : HOUR) + Math.floor(i / 3) * 1000),
        }),
        revoked: i % 5 === 0,
      }));
      for (const r of records) await store.recordIssued(r);
      for (const r of records.filter((x) => x.revoked))
        await store.revokeCertificate(r.serialHex, { reason: 'superseded', actor: 'test', at: NOW });
      return { store, records };
    }

    function statusOf(r: IssuedCertificateRecord & { revoked: boolean }): string {
      if (r.revoked) return 'revoked';
      return r.notAfter > NOW ? 'active' : 'expired';
    }

    const filters: Omit<CertificateQuery, 'limit' | 'now' | 'cursor'>[] = [
      {},
      { spiffeId: 'spiffe://cluster.local/ns/default/sa/s1' },
      { authorityId: 'int-2' },
      { status: 'active' },
      { status: 'expired' },
      { status: 'revoked' },
      { spiffeId: 'spiffe://cluster.local/ns/default/sa/s0', authorityId: 'int-1' },
      { authorityId: 'int-1', status: 'revoked' },
      { spiffeId: 'spiffe://cluster.local/ns/default/sa/s2', status: 'expired' },
      { spiffeId: 'spiffe://cluster.local/ns/default/sa/nobody' },
    ];

    it.each(filters)('pages through %j exactly once, newest expiry first', async (filter) => {
      const { store, records } = await seeded();
      const expected = records.filter(
        (r) =>
          (filter.spiffeId === undefined || r.spiffeId === filter.spiffeId) &&
          (filter.authorityId === undefined || r.authorityId === filter.authorityId) &&
          (filter.status === undefined || statusOf(r) === filter.status),
      );
      const listed = await allPages(store, { ...filter, limit: 4, now: NOW });
      expect(listed.map((c) => c.serialHex).sort()).toEqual(expected.map((r) => r.serialHex).sort());
      expect(new Set(listed.map((c) => c.serialHex)).size).toBe(listed.length);
      const notAfters = listed.map((c) => c.notAfter.getTime());
      expect(notAfters).toEqual([...notAfters].sort((a, b) => b - a));
      for (const c of listed) expect(c.status).toBe(statusOf(records.find((r) => r.serialHex === c.serialHex)!));
    });

    it('reports status relative to the query time', async () => {
      const { store } = await seeded();
      expect(await allPages(store, { status: 'active', limit: 100, now: later })).toEqual([]);
    });

    const b64 = (text: string) => Buffer.from(text).toString('base64url');
    const badCursors: { cursor: string; list: 'certificates' | 'audit' }[] = [
      ...['not a cursor!', '', b64('c1:abc:1'), b64('c1:1:2:3'), b64('a1:5')].map((cursor) => ({ cursor, list: 'certificates' as const })),
      ...['not a cursor!', '', b64('a1:'), b64('c1:1:2')].map((cursor) => ({ cursor, list: 'audit' as const })),
    ];

    it.each(badCursors)('rejects the $list cursor $cursor with ERR_STORE_BAD_CURSOR', async ({ cursor, list }) => {
      const { store } = await freshStore();
      const call = list === 'audit' ? store.listAudit({ limit: 10, cursor }) : store.listCertificates({ limit: 10, now: NOW, cursor });
      await expectStoreError(call, 'ERR_STORE_BAD_CURSOR');
    });

    it('returns a certificate with its DER and status', async () => {
      const { store } = await freshStore();
      await bootstrap(store);
      const record = issued();
      await store.recordIssued(record);
      expect(await store.getCertificate(record.serialHex.toUpperCase(), NOW)).toMatchObject({
        ...record,
        status: 'active',
        revokedAt: null,
        revocationReason: null,
      });
      expect(await store.getCertificate('abcdef', NOW)).toBeUndefined();
    });

    it('pages the audit log newest first', async () => {
      const { store } = await freshStore();
      for (let i = 0; i < 7; i++) await store.appendAudit({ ...audit('test.event', `t${i}`), details: { i } });
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.listAudit({ limit: 3, cursor });
        seen.push(...page.items.map((e) => e.target));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      expect(seen).toEqual(['t6', 't5', 't4', 't3', 't2', 't1', 't0']);
      expect((await store.listAudit({ limit: 1 })).items[0]).toMatchObject({ details: { i: 6 }, result: 'ok', at: NOW });
    });
  });

  describe('revocation', () => {
    const revocation = { reason: 'keyCompromise' as const, actor: 'alice', at: NOW };

    it('revokes idempotently, keeping the first time and reason', async () => {
      const { store } = await freshStore();
      await bootstrap(store);
      const record = issued();
      await store.recordIssued(record);
      const first = await store.revokeCertificate(record.serialHex, revocation);
      expect(first).toMatchObject({ status: 'revoked', revokedAt: NOW, revocationReason: 'keyCompromise' });
      const again = await store.revokeCertificate(record.serialHex, {
        reason: 'superseded',
        actor: 'bob',
        at: new Date(NOW.getTime() + HOUR),
      });
      expect(again).toMatchObject({ revokedAt: NOW, revocationReason: 'keyCompromise' });
      expect(await store.revocationVersion('int-1')).toBe(1);
      expect(await store.revokeCertificate('ffff', revocation)).toBeUndefined();
      const actions = (await store.listAudit({ limit: 10 })).items.map((e) => [e.action, e.details?.alreadyRevoked]);
      expect(actions.slice(0, 2)).toEqual([
        ['certificate.revoke', true],
        ['certificate.revoke', false],
      ]);
    });

    it('revokes an identity (unexpired, not yet revoked), denies and allows it', async () => {
      const { store } = await freshStore();
      await bootstrap(store, ['int-1', 'int-2']);
      const victim = 'spiffe://cluster.local/ns/default/sa/victim';
      const records = [
        issued({ spiffeId: victim, authorityId: 'int-1' }),
        issued({ spiffeId: victim, authorityId: 'int-2' }),
        issued({ spiffeId: victim, notAfter: new Date(NOW.getTime() - 1) }),
        issued({ spiffeId: victim }),
        issued(),
      ];
      for (const r of records) await store.recordIssued(r);
      await store.revokeCertificate(records[3].serialHex, { ...revocation, reason: 'superseded' });

      expect(await store.revokeIdentity(victim, { ...revocation, deny: true })).toEqual({ revoked: 2 });
      expect(await store.isDenied(victim)).toBe(true);
      expect(await store.isDenied(records[4].spiffeId)).toBe(false);
      expect(await store.listDenied()).toEqual([{ spiffeId: victim, reason: 'keyCompromise', actor: 'alice', at: NOW }]);
      expect([
        await store.revocationVersion('int-1'),
        await store.revocationVersion('int-2'),
        await store.revocationVersion('int-9'),
      ]).toEqual([2, 1, 0]);
      expect(await store.revokeIdentity(victim, { ...revocation, deny: false })).toEqual({ revoked: 0 });

      expect(await store.allowIdentity(victim, 'bob', NOW)).toBe(true);
      expect(await store.allowIdentity(victim, 'bob', NOW)).toBe(false);
      expect(await store.isDenied(victim)).toBe(false);
      // only the allow that changed something is audited
      expect((await store.listAudit({ limit: 2 })).items.map((e) => [e.action, e.actor])).toEqual([
        ['identity.allow', 'bob'],
        ['identity.revoke', 'alice'],
      ]);
    });

    it('lists revoked certificates that have not expired, per authority', async () => {
      const { store } = await freshStore();
      await bootstrap(store, ['int-1', 'int-2']);
      const live = issued();
      const expired = issued({ notAfter: new Date(NOW.getTime() - 1) });
      const other = issued({ authorityId: 'int-2' });
      for (const r of [live, expired, other, issued()]) await store.recordIssued(r);
      for (const r of [live, expired, other]) await store.revokeCertificate(r.serialHex, revocation);
      expect(await store.listRevoked('int-1', NOW)).toEqual([{ serialHex: live.serialHex, revokedAt: NOW, reason: 'keyCompromise' }]);
      expect(await store.authorityUsage(NOW)).toEqual(
        new Map([
          ['int-1', { issued: 3, unexpired: 2, revoked: 2 }],
          ['int-2', { issued: 1, unexpired: 1, revoked: 1 }],
        ]),
      );
      expect(await store.countUnexpired(['int-1', 'int-2', 'int-1'], NOW)).toBe(3);
    });

    it('hands out strictly increasing CRL numbers per authority, across restarts', async () => {
      const { store, path } = await freshStore();
      await bootstrap(store, ['int-1', 'int-2']);
      expect([await store.nextCrlNumber('int-1'), await store.nextCrlNumber('int-1'), await store.nextCrlNumber('int-2')]).toEqual([
        1, 2, 1,
      ]);
      await store.close();
      const reopened = await open(path);
      expect(await reopened.nextCrlNumber('int-1')).toBe(3);
    });

    it('prunes only audit events dated before the cut-off, oldest first, in batches', async () => {
      const { store } = await freshStore();
      const cutoff = new Date(NOW.getTime() - 365 * 24 * HOUR);
      const event = (at: Date, target: string) => ({ actor: 'admin', action: 'test', target, result: 'ok' as const, at });
      for (let i = 0; i < 7; i++) await store.appendAudit(event(new Date(cutoff.getTime() - 1 - i), `old-${i}`));
      await store.appendAudit(event(cutoff, 'at-cutoff'));
      await store.appendAudit(event(NOW, 'recent'));
      expect([await store.pruneAudit(cutoff, 5), await store.pruneAudit(cutoff, 5), await store.pruneAudit(cutoff, 5)]).toEqual([5, 2, 0]);
      expect((await store.listAudit({ limit: 100 })).items.map((e) => e.target)).toEqual(['recent', 'at-cutoff']);
    });

    it('prunes only certificates that expired before the cut-off, in batches', async () => {
      const { store } = await freshStore();
      await bootstrap(store);
      const cutoff = new Date(NOW.getTime() - 24 * HOUR);
      const old = Array.from({ length: 25 }, (_, i) => issued({ notAfter: new Date(cutoff.getTime() - 1 - i) }));
      const keep = [issued({ notAfter: cutoff }), issued({ notAfter: new Date(NOW.getTime() - 1) }), issued()];
      for (const r of [...old, ...keep]) await store.recordIssued(r);
      const deleted = [
        await store.pruneExpired(cutoff, 10),
        await store.pruneExpired(cutoff, 10),
        await store.pruneExpired(cutoff, 10),
        await store.pruneExpired(cutoff, 10),
      ];
      expect(deleted).toEqual([10, 10, 5, 0]);
      const left = await allPages(store, { limit: 100, now: NOW });
      expect(left.map((c) => c.serialHex).sort()).toEqual(keep.map((r) => r.serialHex).sort());
    });
  });
  describe('JWT-SVID keys, minted JWT-SVIDs and federated bundles', () => {
    const jwtKey = (kid: string, state: JwtAuthorityState): JwtAuthorityRecord => ({
      kid,
      state,
      algorithm: 'ES256',
      publicJwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' },
      sealedKey: Buffer.from('sealed'),
      notAfter: new Date(NOW.getTime() + HOUR),
      createdAt: NOW,
      updatedAt: NOW,
    });
    const svid = (jti: string, kid: string, expiresAt = new Date(NOW.getTime() + 300_000)) => ({
      jti,
      spiffeId: 'spiffe://td/ns/a/sa/b',
      callerId: 'spiffe://td/ns/a/sa/b',
      audiences: ['api'],
      kid,
      issuedAt: NOW,
      expiresAt,
    });

    it('journals key changes with guards, bumps the bundle sequence only when asked, and allows one active key', async () => {
      const { store } = await freshStore();
      expect(
        await store.applyJwtAuthorityChange({
          insert: [jwtKey('k1', 'active')],
          bumpBundleSequence: true,
          audit: audit('jwt.bootstrap', 'k1'),
        }),
      ).toEqual({ bundleSequence: 1 });
      await store.applyJwtAuthorityChange({
        insert: [jwtKey('k2', 'prepared')],
        bumpBundleSequence: true,
        audit: audit('jwt.prepare', 'k2'),
      });
      const refusals: { change: Parameters<Store['applyJwtAuthorityChange']>[0]; code: StoreErrorCode }[] = [
        {
          change: { transitions: [{ kid: 'k2', from: ['active'], to: 'retired' }], bumpBundleSequence: false, audit: audit('x', 'k2') },
          code: 'ERR_STORE_CONFLICT',
        },
        {
          change: { transitions: [{ kid: 'k9', from: ['prepared'], to: 'active' }], bumpBundleSequence: false, audit: audit('x', 'k9') },
          code: 'ERR_STORE_NOT_FOUND',
        },
        {
          change: { transitions: [{ kid: 'k2', from: ['prepared'], to: 'active' }], bumpBundleSequence: true, audit: audit('x', 'k2') },
          code: 'ERR_STORE_DUPLICATE',
        }, // two active keys
      ];
      for (const { change, code } of refusals) await expectStoreError(store.applyJwtAuthorityChange(change), code);
      expect((await store.loadJwtAuthorities()).map((k) => [k.kid, k.state])).toEqual([
        ['k1', 'active'],
        ['k2', 'prepared'],
      ]);
      expect(await store.bundleSequence()).toBe(2);
      await store.applyJwtAuthorityChange({
        transitions: [
          { kid: 'k1', from: ['active'], to: 'retired' },
          { kid: 'k2', from: ['prepared'], to: 'active' },
        ],
        bumpBundleSequence: false,
        audit: audit('jwt.activate', 'k2'),
      });
      expect((await store.loadJwtAuthorities()).map((k) => k.state)).toEqual(['retired', 'active']);
    });

    it('records JWT-SVIDs (never for an unknown kid, twice, or a denied identity), lists them newest first and prunes expired ones', async () => {
      const { store } = await freshStore();
      await store.applyJwtAuthorityChange({
        insert: [jwtKey('k1', 'active')],
        bumpBundleSequence: true,
        audit: audit('jwt.bootstrap', 'k1'),
      });
      await store.recordJwtSvid(svid('j1', 'k1', new Date(NOW.getTime() - HOUR)));
      await store.recordJwtSvid(svid('j2', 'k1'));
      await expectStoreError(store.recordJwtSvid(svid('j2', 'k1')), 'ERR_STORE_DUPLICATE');
      await expectStoreError(store.recordJwtSvid(svid('j3', 'nope')), 'ERR_STORE_NOT_FOUND');
      // The deny-list is checked in the insert itself, like refuseIfDenied for certificates.
      await store.revokeIdentity('spiffe://td/ns/a/sa/b', DENY);
      await expectStoreError(store.recordJwtSvid(svid('j4', 'k1')), 'ERR_STORE_DENIED');
      await store.recordJwtSvid({ ...svid('j5', 'k1'), spiffeId: 'spiffe://td/ns/a/sa/c' });
      await store.allowIdentity('spiffe://td/ns/a/sa/b', 'test', NOW);
      expect((await store.listJwtSvids({ spiffeId: 'spiffe://td/ns/a/sa/b', limit: 10 })).map((r) => r.jti).sort()).toEqual(['j1', 'j2']);
      expect(await store.pruneJwtSvids(NOW, 10)).toBe(1);
      expect(
        (await store.listJwtSvids({ limit: 10 }))
          .map((r) => ({ jti: r.jti, audiences: r.audiences }))
          .sort((a, b) => a.jti.localeCompare(b.jti)),
      ).toEqual([
        { jti: 'j2', audiences: ['api'] },
        { jti: 'j5', audiences: ['api'] },
      ]);
    });

    it('keeps one last good bundle per federated trust domain, across reopening', async () => {
      const { store, path } = await freshStore();
      const record = (sequence: number) => ({
        trustDomain: 'peer.test',
        endpointUrl: 'https://peer/v1/bundle',
        bundleJson: JSON.stringify({ keys: [], spiffe_sequence: sequence }),
        sequence,
        fetchedAt: NOW,
      });
      await store.saveFederatedBundle(record(1));
      await store.saveFederatedBundle(record(2));
      await store.close();
      expect(await (await open(path)).loadFederatedBundles()).toEqual([record(2)]);
    });
  });
});

describe('sqlite migrations', () => {
  it('applies each migration once and records it with its checksum', () => {
    const db = new Database(join(tempDir(), 'm.db'));
    try {
      const shipped = readMigrations(DEFAULT_MIGRATIONS_DIR);
      expect(shipped.map((m) => m.version)).toEqual(expect.arrayContaining([1, 2, 3, 4, 5]));
      expect(applyMigrations(db)).toEqual(shipped.map((m) => m.version));
      expect(applyMigrations(db)).toEqual([]);
      const sql = readFileSync(join(DEFAULT_MIGRATIONS_DIR, '001_initial.sql'), 'utf8');
      expect(recordedMigrations(db)[0]).toEqual({
        version: 1,
        name: 'initial',
        sha256: createHash('sha256').update(sql).digest('hex'),
        appliedAt: expect.any(Date),
      });
      expect(recordedMigrations(db).map((m) => [m.version, m.name, m.sha256])).toEqual(shipped.map((m) => [m.version, m.name, m.sha256]));
    } finally {
      db.close();
    }
  });
});

function freshSqlite(options: Partial<SqliteStoreOptions> = {}): { store: SqliteStore; path: string } {
  const path = join(tempDir(), 'meshca.db');
  return { store: openSqlite(path, options), path };
}

describe('files', () => {
  it('creates the directory 0700 and the database files 0600', async () => {
    const dir = join(tempDir(), 'data', 'nested');
    const path = join(dir, 'meshca.db');
    const store = openSqlite(path);
    await bootstrap(store);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const file of [path, `${path}-wal`, `${path}-shm`]) expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('backs up online to a 0600 file that opens and checks clean', async () => {
    const { store, path } = freshSqlite();
    await bootstrap(store);
    const record = issued();
    await store.recordIssued(record);
    const copy = join(tempDir(), 'backup.db');
    await backupSqliteStore(path, copy);
    expect(statSync(copy).mode & 0o777).toBe(0o600);
    const restored = openSqlite(copy);
    expect(await restored.integrityCheck()).toBe('ok');
    expect(await restored.getCertificate(record.serialHex, NOW)).toBeDefined();
    expect(existsSync(`${copy}.partial-${process.pid}`)).toBe(false);
  });
});

describe('scale', () => {
  // Not a timed assertion: proves the listing queries stay index range scans on a large table.
  it('keeps certificate listings on indexes with 200,000 rows', async () => {
    const { store } = freshSqlite({ groupCommitMaxRows: 2000 });
    await bootstrap(store, ['int-1', 'int-2']);
    const der = randomBytes(32);
    for (let chunk = 0; chunk < 20; chunk++) {
      await Promise.all(
        Array.from({ length: 10_000 }, (_, i) =>
          store.recordIssued(
            issued({ spiffeId: `spiffe://cluster.local/ns/ns${i % 40}/sa/sa${i % 25}`, authorityId: i % 2 ? 'int-1' : 'int-2', der }),
          ),
        ),
      );
    }
    const spiffeId = 'spiffe://cluster.local/ns/ns7/sa/sa7';
    const first = await store.listCertificates({ spiffeId, limit: 50, now: NOW });
    expect(first.items.length).toBe(50);
    const queries: Omit<CertificateQuery, 'now' | 'limit'>[] = [
      { spiffeId },
      { spiffeId, cursor: first.nextCursor! },
      { spiffeId, status: 'active' },
      { spiffeId, authorityId: 'int-1' },
      { authorityId: 'int-1', cursor: first.nextCursor! },
      { status: 'expired' },
      { status: 'revoked' },
      {},
    ];
    for (const query of queries) {
      const plan = await store.certificateListingPlan({ ...query, limit: 50, now: NOW });
      expect(plan.join('\n'), JSON.stringify(query)).toMatch(/USING (COVERING )?INDEX/);
      expect(plan.join('\n')).not.toMatch(/TEMP B-TREE|SCAN issued_certificates$/m);
    }
    expect((await store.certificateListingPlan({ spiffeId, limit: 50, now: NOW })).join('\n')).toMatch(
      /SEARCH issued_certificates USING INDEX issued_certificates_spiffe \(spiffe_id=\?\)/,
    );
    expect((await store.authorityUsage(NOW)).get('int-1')?.issued).toBe(100_000);
  });
});

describe.runIf(POSTGRES_URL)('postgres store shared by replicas', () => {
  const openShared = (url: string, extra: Partial<Parameters<typeof openPostgresStore>[0]> = {}) =>
    openTracked(openPostgresStore({ url, ...extra }));

  it('migrates once when several replicas start together', async () => {
    const url = await createTestDatabase();
    const stores = await Promise.all([openShared(url), openShared(url), openShared(url)]);
    const { rows } = await stores[0]!.pool.query('SELECT version FROM schema_migrations ORDER BY version');
    expect(rows.map((r) => r.version)).toEqual(readMigrations(POSTGRES_MIGRATIONS_DIR).map((m) => m.version));
  });

  it('lets one of two concurrent root preparations win; the other conflicts and writes nothing', async () => {
    const url = await createTestDatabase();
    const [a, b] = await Promise.all([openShared(url), openShared(url)]);
    await bootstrap(a);
    const prepare = (store: Store, n: number) =>
      store.applyAuthorityChange({
        insert: [authority(`root-p${n}`, 'root', 'prepared'), authority(`int-p${n}`, 'intermediate', 'prepared', `root-p${n}`)],
        bumpBundleSequence: true,
        audit: audit('authority.prepare', `root-p${n}`),
      });
    const outcomes = await Promise.allSettled([prepare(a, 1), prepare(b, 2)]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const loser = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected')!;
    await expectStoreError(Promise.reject(loser.reason), 'ERR_STORE_CONFLICT', /already prepared/);
    expect((await a.loadAuthorities()).filter((r) => r.state === 'prepared')).toHaveLength(2);
    expect(await b.bundleSequence()).toBe(2);
  });

  it('announces authority, revocation and deny-list changes to the other replicas', async () => {
    const url = await createTestDatabase();
    const [writer, reader] = await Promise.all([openShared(url), openShared(url, { resyncIntervalMs: 60_000 })]);
    await until(() => reader.healthy?.() === true);
    const seen: string[] = [];
    reader.watch!((event) => seen.push(event));
    await bootstrap(writer);
    const record = issued();
    await writer.recordIssued(record);
    await writer.revokeCertificate(record.serialHex, { reason: 'keyCompromise', actor: 't', at: NOW });
    await writer.revokeIdentity('spiffe://cluster.local/ns/x/sa/y', { reason: 'keyCompromise', actor: 't', at: NOW, deny: true });
    await until(() => seen.length >= 3);
    expect(seen).toEqual(['authorities', 'revocations', 'denied']);
  });

  // The two halves of a deny racing an issuance on another replica, each held open mid-transaction
  // by a raw connection: nothing may end up recorded, unrevoked, for an identity once it is denied.
  const settledWithin = (promise: Promise<unknown>, ms: number) =>
    Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms)),
    ]);
  const races = [
    {
      name: 'an issuance waits for a deny in progress, then is refused',
      held: [
        'LOCK TABLE issued_certificates IN SHARE ROW EXCLUSIVE MODE',
        "INSERT INTO denied_identities VALUES ($1, 'keyCompromise', 'raw', 0)",
      ],
      act: (store: Store) => store.recordIssued(issued({ spiffeId: DENIED, refuseIfDenied: true })),
      outcome: async (act: Promise<unknown>) => void (await expectStoreError(act, 'ERR_STORE_DENIED')),
    },
    {
      name: 'a deny waits for an issuance in progress, then revokes it',
      held: [
        `INSERT INTO issued_certificates (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der)
          VALUES ('abc123', $1, $1, 'k', 'int-1', 0, ${NOW.getTime() + HOUR}, 0, '\\x00')`,
      ],
      act: (store: Store) => store.revokeIdentity(DENIED, DENY),
      outcome: async (act: Promise<unknown>) => expect(await act).toEqual({ revoked: 1 }),
    },
  ];

  it.each(races)('$name', async ({ held, act, outcome }) => {
    const url = await createTestDatabase();
    const [raw, store] = await Promise.all([openShared(url), openShared(url)]);
    await bootstrap(store);
    const other = await raw.pool.connect();
    try {
      await other.query('BEGIN');
      for (const sql of held) await other.query(sql, sql.includes('$1') ? [DENIED] : []);
      const acting = act(store);
      expect(await settledWithin(acting, 300), 'it must wait for the other transaction').toBe(false);
      await other.query('COMMIT');
      await outcome(acting);
    } finally {
      other.release();
    }
  });

  it('runs a singleton job on one replica at a time and refuses its writes once the lease moved on', async () => {
    const url = await createTestDatabase();
    const [a, b] = await Promise.all([openShared(url), openShared(url)]);
    await bootstrap(a);
    const gateA = a.singleton!('jobs');
    expect(await gateA(async () => 'ran on a')).toBe('ran on a');
    const gateB = b.singleton!('jobs');
    expect(await gateB(async () => 'ran on b')).toBeUndefined();
    // Another replica takes over (as after a's lease expired) while a's job is still running.
    const stale = gateA(async () => {
      await a.pool.query("UPDATE leases SET holder = 'replica-c', epoch = epoch + 1 WHERE name = 'jobs'");
      return a.pruneExpired(NOW, 10);
    });
    await expectStoreError(stale, 'ERR_STORE_CONFLICT', /passed to another replica/);
  });

  it('refuses a password inside the URL', async () => {
    const url = new URL(POSTGRES_URL!);
    url.password = 'secret';
    await expectStoreError(openPostgresStore({ url: url.toString() }), 'ERR_STORE_UNAVAILABLE', /--store-password-file or PGPASSWORD/);
  });
});

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('--commit-linger', () => {
  const linger = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    buildServerConfig(parseFlags(SERVE_FLAGS, [...args, '--token-review'], env, 'serve').values).store.commitLingerMs;
  it.each([
    { args: [], env: {}, ms: 3 },
    { args: ['--commit-linger', '0ms'], env: {}, ms: 0 },
    { args: [], env: { MESHCA_COMMIT_LINGER: '250ms' }, ms: 250 },
    { args: ['--commit-linger', '1s', '--store', 'postgres://meshca@db:5432/meshca'], env: {}, ms: 1000 },
  ])('$args $env → $ms ms', ({ args, env, ms }) => expect(linger(args, env)).toBe(ms));
  it.each([
    { value: '2s', error: /at most 1s/ },
    { value: 'soon', error: /--commit-linger: invalid duration/ },
  ])('rejects $value', ({ value, error }) => {
    expect(() => linger(['--commit-linger', value])).toThrow(UsageError);
    expect(() => linger(['--commit-linger', value])).toThrow(error);
  });
});
