import { chmodSync, closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { IssuanceWriterThread } from './issuance-writer.js';
import { DiskGuard, type DiskGuardOptions } from './disk-guard.js';
import Database from 'better-sqlite3';
import type { Database as Connection, Statement } from 'better-sqlite3';
import { StoreError } from './errors.js';
import { authorityFromRow, jwtAuthorityFromRow, normalizeSerial, pendingFromRow, upstreamChainColumn, type AuthorityRow, type JwtAuthorityRow, type PendingAuthorityRow } from './rows.js';
import {
  auditFromRow,
  federatedBundleFromRow,
  jwtAuthorityParams,
  jwtSvidFromRow,
  certificateCursor,
  certificateRevocationAudit,
  identityRevocationAudit,
  reportCommit,
  closedError,
  encodeCursor,
  pageLimit,
  parseAuditCursor,
  parseCertificateCursor,
  summaryFromRow,
  SUMMARY_COLUMNS,
  toPage,
  type AuditRow,
  type CertificateDetailRow,
  type CertificateRow,
  type DeniedRow,
  type FederatedBundleRow,
  type JwtSvidRow,
} from './records.js';
import { applyMigrations } from './migrations.js';
import type {
  AuditEvent,
  AuditEventInput,
  AuthorityChange,
  AuthorityRecord,
  AuthorityRevocation,
  AuthorityRevocationReason,
  AuthorityTransition,
  AuthorityUsage,
  PendingAuthorityRecord,
  CertificateDetail,
  CertificateQuery,
  CertificateStatus,
  CertificateSummary,
  DeniedIdentity,
  FederatedBundleRecord,
  IssuedCertificateRecord,
  JwtAuthorityChange,
  JwtAuthorityRecord,
  JwtAuthorityTransition,
  JwtSvidRecord,
  Page,
  RevocationInput,
  RevocationReason,
  RevokedEntry,
  Store,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Opening

export interface SqliteStoreOptions {
  readonly path: string;
  /** How long the first queued issuance record waits for batch-mates; 0 flushes on the next event-loop turn. */
  readonly groupCommitWindowMs?: number;
  /** A batch never exceeds this many rows, which bounds how long one commit blocks the event loop. */
  readonly groupCommitMaxRows?: number;
  readonly logger?: { warn(obj: object, msg: string): void };
  /** Called after every issuance batch commits: rows written and seconds from BEGIN to COMMIT. */
  readonly onCommit?: (rows: number, seconds: number) => void;
  /** Where the NNN_name.sql files are; defaults to the repo's migrations/ folder. */
  readonly migrationsDir?: string;
  /**
   * Checkpoint the WAL from a worker thread (default true) instead of inside whichever commit
   * crosses the threshold, which stalls the event loop ~10-30 ms about once a second under load.
   */
  readonly backgroundCheckpoint?: boolean;
  /** Commit issuance batches from a worker thread (default true) so their fsync never blocks the event loop. */
  readonly writerThread?: boolean;
  /** checkFreeSpace() fails (ERR_STORE_DISK_LOW) while less than this fraction of the volume is free; default 0 (off). */
  readonly minFreeDisk?: Omit<DiskGuardOptions, 'path'>;
}

/** The SQLite store, plus what only tests and operators need. */
export interface SqliteStore extends Store {
  /** `EXPLAIN QUERY PLAN` lines of the statement listCertificates runs for this query. */
  certificateListingPlan(query: CertificateQuery): Promise<string[]>;
}

/** 0 = flush on the next event-loop turn: commits block the loop, so arrivals during one form the next batch. */
const DEFAULT_WINDOW_MS = 0;
const DEFAULT_MAX_ROWS = 256;
/** Index pages of a million-row table stay hot; measured ~20% faster inserts than the 2 MiB default. */
const CACHE_KIB = 32 * 1024;
const CHECKPOINT_INTERVAL_MS = 200;
/** SQLite's default, restored if the background checkpointer dies. */
const INLINE_CHECKPOINT_PAGES = 1000;

/** Opens (creating if needed) and migrates the database. Synchronous: call it once at startup. */
export function openSqliteStore(options: SqliteStoreOptions): SqliteStore {
  const db = openDatabase(options.path);
  try {
    applyMigrations(db, options.migrationsDir);
    restrictFiles(options.path);
    const checkpointer = options.backgroundCheckpoint === false ? undefined : new BackgroundCheckpointer(db, options.path, options.logger);
    const writer = options.writerThread === false ? undefined : new IssuanceWriterThread(options.path, SQL_INSERT_ISSUED, checkpointer !== undefined, CACHE_KIB);
    return new SqliteStoreImpl(db, options, checkpointer, writer);
  } catch (error) {
    db.close();
    throw error instanceof StoreError ? error : toStoreError(error);
  }
}

/** An online, consistent copy (better-sqlite3's backup API) written 0600 and renamed into place. */
export async function backupSqliteStore(path: string, outFile: string): Promise<void> {
  const temporary = `${outFile}.partial-${process.pid}`;
  let db: Connection | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    rmSync(temporary, { force: true });
    closeSync(openSync(temporary, 'wx', 0o600));
    // Copy every remaining page in one step: between small steps any commit by the server restarts
    // the backup, so under sustained load a large database would never finish.
    await db.backup(temporary, { progress: () => 0x7fffffff });
    renameSync(temporary, outFile);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw toStoreError(error);
  } finally {
    db?.close();
  }
}

function openDatabase(path: string): Connection {
  const dir = dirname(path);
  try {
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
    // Create the file 0600 before SQLite does: the -wal and -shm files copy its mode.
    closeSync(openSync(path, 'a', 0o600));
    chmodSync(path, 0o600);
    const db = new Database(path);
    configure(db);
    return db;
  } catch (error) {
    throw new StoreError('ERR_STORE_UNAVAILABLE', `cannot open the database ${path}: ${(error as Error).message}`, { cause: error });
  }
}

function configure(db: Connection): void {
  const mode = db.pragma('journal_mode = WAL', { simple: true });
  if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, WAL is required`);
  // FULL: every commit (an authority change or an issuance batch) is fsynced before it is acknowledged.
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.pragma(`cache_size = -${CACHE_KIB}`);
  // After a burst, shrink the WAL back once it has been checkpointed and restarted.
  db.pragma(`journal_size_limit = ${64 * 1024 * 1024}`);
}

function restrictFiles(path: string): void {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(file)) chmodSync(file, 0o600);
}

// ---------------------------------------------------------------------------------------------
// Background checkpoints: the writer appends to the WAL and fsyncs it; a second connection in a
// worker thread copies it into the database file. PASSIVE never blocks the writer.

const CHECKPOINTER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
let lastError = '';
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    lastError = '';
  } catch (error) {
    const message = String((error && error.message) || error);
    if (message !== lastError) parentPort.postMessage(message);
    lastError = message;
  }
}, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/** Hands checkpoints to a worker; if the worker dies, the writer checkpoints inline again. */
class BackgroundCheckpointer {
  private readonly worker: Worker;
  private running = true;

  constructor(
    private readonly db: Connection,
    path: string,
    private readonly logger: SqliteStoreOptions['logger'],
  ) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(CHECKPOINTER_SOURCE, { eval: true, workerData: { driver, path, intervalMs: CHECKPOINT_INTERVAL_MS } });
    this.worker.unref();
    this.worker.on('message', (message: string) => this.logger?.warn({ error: message }, 'background WAL checkpoint failed'));
    this.worker.on('error', (error) => this.fallBack(error));
    this.worker.on('exit', (code) => this.fallBack(new Error(`exited with code ${code}`)));
    db.pragma('wal_autocheckpoint = 0');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage('stop');
    const timeout = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timeout);
  }

  private fallBack(error: Error): void {
    if (!this.running) return;
    this.running = false;
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${INLINE_CHECKPOINT_PAGES}`);
    this.logger?.warn({ err: error }, 'the background WAL checkpointer stopped; checkpointing inline from now on');
  }
}

// ---------------------------------------------------------------------------------------------
// Rows


function authorityParams(record: AuthorityRecord) {
  return {
    id: record.id,
    kind: record.kind,
    parentId: record.parentId,
    state: record.state,
    keyType: record.keyType,
    certificate: record.certificateDer,
    sealedKey: record.sealedKey,
    upstreamChain: upstreamChainColumn(record.upstreamChainDers),
    serialHex: record.serialHex,
    subject: record.subject,
    notBefore: record.notBefore.getTime(),
    notAfter: record.notAfter.getTime(),
    fingerprint: record.sha256Fingerprint,
    createdAt: record.createdAt.getTime(),
    updatedAt: record.updatedAt.getTime(),
  };
}

function issuedParams(record: IssuedCertificateRecord) {
  return {
    serialHex: normalizeSerial(record.serialHex),
    spiffeId: record.spiffeId,
    callerId: record.callerId,
    clusterId: record.clusterId,
    authorityId: record.authorityId,
    notBefore: record.notBefore.getTime(),
    notAfter: record.notAfter.getTime(),
    issuedAt: record.issuedAt.getTime(),
    der: record.der,
  };
}

function auditParams(event: AuditEventInput) {
  return {
    at: event.at.getTime(),
    actor: event.actor,
    action: event.action,
    target: event.target,
    result: event.result,
    details: event.details === undefined ? null : JSON.stringify(event.details),
  };
}

// ---------------------------------------------------------------------------------------------
// Certificate listing: newest expiry first, (not_after DESC, id DESC). Every filter has an index
// whose order is exactly that (indexes end in the rowid), so a page is a bounded range scan.

const STATUS_CONDITION: Record<CertificateStatus, string> = {
  active: 'revoked_at IS NULL AND not_after > @now',
  expired: 'revoked_at IS NULL AND not_after <= @now',
  revoked: 'revoked_at IS NOT NULL',
};

type ListingParams = Record<string, string | number>;

function certificateListing(query: CertificateQuery): { sql: string; params: ListingParams } {
  const where: string[] = [];
  const params: ListingParams = { limit: pageLimit(query.limit) + 1 };
  if (query.spiffeId !== undefined) {
    where.push('spiffe_id = @spiffeId');
    params.spiffeId = query.spiffeId;
  }
  if (query.authorityId !== undefined) {
    // With an identity too, `+` keeps the planner on the far more selective identity index.
    where.push(query.spiffeId === undefined ? 'authority_id = @authorityId' : '+authority_id = @authorityId');
    params.authorityId = query.authorityId;
  }
  if (query.status !== undefined) where.push(STATUS_CONDITION[query.status]);
  if (query.status === 'active' || query.status === 'expired') params.now = query.now.getTime();
  if (query.cursor !== undefined) {
    const after = parseCertificateCursor(query.cursor);
    // The first term is the index range; the second breaks ties on not_after.
    where.push('not_after <= @afterNotAfter AND (not_after < @afterNotAfter OR id < @afterId)');
    Object.assign(params, { afterNotAfter: after.notAfter, afterId: after.id });
  }
  const filter = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
  return { sql: `SELECT ${SUMMARY_COLUMNS} FROM issued_certificates ${filter} ORDER BY not_after DESC, id DESC LIMIT @limit`, params };
}

// ---------------------------------------------------------------------------------------------
// Group commit

interface PendingIssue {
  readonly record: IssuedCertificateRecord;
  resolve(): void;
  reject(error: StoreError): void;
}

/** Writes one batch in one transaction; per-record failures (duplicate serial) come back in place. */
type BatchWriter = (records: readonly IssuedCertificateRecord[]) => Promise<(StoreError | undefined)[]>;

/**
 * Queues issuance records and commits them in batches: one fsync for many certificates. One batch
 * is in flight at a time; whatever arrives meanwhile forms the next one. A caller's promise settles
 * only after its batch's COMMIT returned (synchronous=FULL, so it is durable).
 */
export class IssuanceJournal {
  private queue: PendingIssue[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly write: BatchWriter,
    private readonly windowMs: number,
    private readonly maxRows: number,
  ) {}

  enqueue(record: IssuedCertificateRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ record, resolve, reject });
      this.schedule();
    });
  }

  /** Commits everything queued, now (close). */
  async flushAll(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.inFlight || this.queue.length > 0) await (this.inFlight ?? this.flushBatch());
  }

  private schedule(): void {
    if (this.inFlight || this.timer) return;
    if (this.queue.length >= this.maxRows || this.windowMs <= 0) void this.flushBatch();
    else this.timer = setTimeout(() => void this.flushBatch(), this.windowMs);
  }

  private flushBatch(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.queue.splice(0, this.maxRows);
    this.inFlight = this.commit(batch).finally(() => {
      this.inFlight = undefined;
      if (this.queue.length > 0) this.schedule();
    });
    return this.inFlight;
  }

  private async commit(batch: readonly PendingIssue[]): Promise<void> {
    let outcomes: (StoreError | undefined)[];
    try {
      outcomes = await this.write(batch.map((p) => p.record));
    } catch (error) {
      const failure = toStoreError(error);
      for (const pending of batch) pending.reject(failure);
      return;
    }
    batch.forEach((pending, i) => {
      const failure = outcomes[i];
      if (failure) pending.reject(failure);
      else pending.resolve();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The store

const SQL_INSERT_ISSUED = `INSERT INTO issued_certificates (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der)
    VALUES (@serialHex, @spiffeId, @callerId, @clusterId, @authorityId, @notBefore, @notAfter, @issuedAt, @der)`;

const SQL = {
  loadAuthorities: 'SELECT * FROM authorities ORDER BY created_at, id',
  insertAuthority: `INSERT INTO authorities (id, kind, parent_id, state, key_type, certificate, sealed_key, upstream_chain, serial_hex, subject,
      not_before, not_after, sha256_fingerprint, created_at, updated_at)
    VALUES (@id, @kind, @parentId, @state, @keyType, @certificate, @sealedKey, @upstreamChain, @serialHex, @subject,
      @notBefore, @notAfter, @fingerprint, @createdAt, @updatedAt)`,
  loadPending: 'SELECT * FROM pending_authorities ORDER BY created_at, id',
  insertPending: `INSERT INTO pending_authorities (id, key_type, sealed_key, csr, subject, upstream, created_at, expires_at)
    VALUES (@id, @keyType, @sealedKey, @csr, @subject, @upstream, @createdAt, @expiresAt)`,
  deletePending: 'DELETE FROM pending_authorities WHERE id = ?',
  resealPending: 'UPDATE pending_authorities SET sealed_key = @sealedKey WHERE id = @id',
  transition: `UPDATE authorities SET state = @to, updated_at = @at
    WHERE id = @id AND state IN (SELECT value FROM json_each(@from))`,
  authorityState: 'SELECT state FROM authorities WHERE id = ?',
  authorityParent: 'SELECT parent_id FROM authorities WHERE id = ?',
  insertAuthorityRevocation: `INSERT INTO revoked_authorities (authority_id, revoked_at, reason, actor) VALUES (@id, @at, @reason, @actor)`,
  listAuthorityRevocations: 'SELECT authority_id, revoked_at, reason, actor FROM revoked_authorities ORDER BY revoked_at, authority_id',
  reseal: 'UPDATE authorities SET sealed_key = @sealedKey, updated_at = @at WHERE id = @id',
  bundleSequence: "SELECT value FROM meta WHERE key = 'bundle_sequence'",
  bumpBundleSequence: "UPDATE meta SET value = value + 1 WHERE key = 'bundle_sequence'",
  insertIssued: SQL_INSERT_ISSUED,
  certificateBySerial: `SELECT ${SUMMARY_COLUMNS}, der FROM issued_certificates WHERE serial_hex = ?`,
  // Both scan the covering (authority_id, not_after) index and the small revoked-only index.
  usage: `SELECT authority_id, count(*) AS issued, total(not_after > ?) AS unexpired
    FROM issued_certificates GROUP BY authority_id`,
  revokedUsage: 'SELECT authority_id, count(*) AS revoked FROM issued_certificates WHERE revoked_at IS NOT NULL GROUP BY authority_id',
  countUnexpired: 'SELECT count(*) AS n FROM issued_certificates WHERE authority_id = ? AND not_after > ?',
  revokeOne: `UPDATE issued_certificates SET revoked_at = @at, revocation_reason = @reason, revoked_by = @actor
    WHERE id = @id AND revoked_at IS NULL`,
  revokeIdentity: `UPDATE issued_certificates SET revoked_at = @at, revocation_reason = @reason, revoked_by = @actor
    WHERE spiffe_id = @spiffeId AND revoked_at IS NULL AND not_after > @at RETURNING authority_id`,
  bumpRevocationVersion: `INSERT INTO authority_revocations (authority_id, revocation_version) VALUES (?, 1)
    ON CONFLICT (authority_id) DO UPDATE SET revocation_version = revocation_version + 1`,
  revocationVersion: 'SELECT revocation_version FROM authority_revocations WHERE authority_id = ?',
  nextCrlNumber: `INSERT INTO authority_revocations (authority_id, crl_number) VALUES (?, 1)
    ON CONFLICT (authority_id) DO UPDATE SET crl_number = crl_number + 1 RETURNING crl_number AS n`,
  listRevoked: `SELECT serial_hex, revoked_at, revocation_reason FROM issued_certificates
    WHERE authority_id = ? AND revoked_at IS NOT NULL AND not_after > ? ORDER BY serial_hex`,
  deny: `INSERT INTO denied_identities (spiffe_id, reason, actor, at) VALUES (@spiffeId, @reason, @actor, @at)
    ON CONFLICT (spiffe_id) DO NOTHING`,
  allow: 'DELETE FROM denied_identities WHERE spiffe_id = ?',
  isDenied: 'SELECT 1 FROM denied_identities WHERE spiffe_id = ?',
  listDenied: 'SELECT spiffe_id, reason, actor, at FROM denied_identities ORDER BY spiffe_id',
  pruneExpired: `DELETE FROM issued_certificates WHERE id IN
    (SELECT id FROM issued_certificates WHERE not_after < ? ORDER BY not_after LIMIT ?)`,
  insertAudit: `INSERT INTO audit_events (at, actor, action, target, result, details)
    VALUES (@at, @actor, @action, @target, @result, @details)`,
  pruneAudit: `DELETE FROM audit_events WHERE id IN
    (SELECT id FROM audit_events WHERE at < ? ORDER BY at LIMIT ?)`,
  listAudit: 'SELECT id, at, actor, action, target, result, details FROM audit_events WHERE id < ? ORDER BY id DESC LIMIT ?',
  integrityCheck: 'PRAGMA integrity_check',
  loadJwtAuthorities: 'SELECT * FROM jwt_authorities ORDER BY created_at, kid',
  insertJwtAuthority: `INSERT INTO jwt_authorities (kid, state, algorithm, public_jwk, sealed_key, not_after, created_at, updated_at)
    VALUES (@kid, @state, @algorithm, @publicJwk, @sealedKey, @notAfter, @createdAt, @updatedAt)`,
  jwtTransition: `UPDATE jwt_authorities SET state = @to, updated_at = @at
    WHERE kid = @kid AND state IN (SELECT value FROM json_each(@from))`,
  jwtAuthorityState: 'SELECT state FROM jwt_authorities WHERE kid = ?',
  resealJwt: 'UPDATE jwt_authorities SET sealed_key = @sealedKey, updated_at = @at WHERE kid = @kid',
  insertJwtSvid: `INSERT INTO jwt_svids (jti, spiffe_id, caller_id, audiences, kid, issued_at, expires_at)
    VALUES (@jti, @spiffeId, @callerId, @audiences, @kid, @issuedAt, @expiresAt)`,
  listJwtSvids: 'SELECT * FROM jwt_svids ORDER BY issued_at DESC, jti LIMIT ?',
  listJwtSvidsOf: 'SELECT * FROM jwt_svids WHERE spiffe_id = ? ORDER BY issued_at DESC, jti LIMIT ?',
  pruneJwtSvids: `DELETE FROM jwt_svids WHERE jti IN
    (SELECT jti FROM jwt_svids WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`,
  saveFederatedBundle: `INSERT INTO federated_bundles (trust_domain, endpoint_url, bundle, sequence, fetched_at)
    VALUES (@trustDomain, @endpointUrl, @bundle, @sequence, @fetchedAt)
    ON CONFLICT (trust_domain) DO UPDATE SET endpoint_url = excluded.endpoint_url, bundle = excluded.bundle,
      sequence = excluded.sequence, fetched_at = excluded.fetched_at`,
  loadFederatedBundles: 'SELECT * FROM federated_bundles ORDER BY trust_domain',
} as const;

type SqlName = keyof typeof SQL;

class SqliteStoreImpl implements SqliteStore {
  private readonly statements = new Map<string, Statement<unknown[], unknown>>();
  private readonly journal: IssuanceJournal;
  private readonly diskGuard: DiskGuard;
  private closed = false;

  constructor(
    private readonly db: Connection,
    private readonly options: SqliteStoreOptions,
    private readonly checkpointer: BackgroundCheckpointer | undefined,
    private readonly writer: IssuanceWriterThread | undefined,
  ) {
    this.journal = new IssuanceJournal(
      (records) => (this.writer?.healthy ? this.writeIssuedInThread(this.writer, records) : Promise.resolve(this.writeIssued(records))),
      options.groupCommitWindowMs ?? DEFAULT_WINDOW_MS,
      Math.max(1, options.groupCommitMaxRows ?? DEFAULT_MAX_ROWS),
    );
    this.diskGuard = new DiskGuard({ path: options.path, minFreeRatio: 0, ...options.minFreeDisk });
  }

  // --- authorities ---

  async loadAuthorities(): Promise<AuthorityRecord[]> {
    return this.use(() => this.all<AuthorityRow>('loadAuthorities').map(authorityFromRow));
  }

  async bundleSequence(): Promise<number> {
    return this.use(() => this.readBundleSequence());
  }

  async applyAuthorityChange(change: AuthorityChange): Promise<{ bundleSequence: number }> {
    return this.writeTransaction(() => {
      for (const record of change.insert ?? []) this.run('insertAuthority', authorityParams(record));
      for (const transition of change.transitions ?? []) this.transition(transition, change.audit.at);
      for (const { id, sealedKey } of change.resealed ?? []) this.reseal(id, sealedKey, change.audit.at);
      for (const { kid, sealedKey } of change.resealedJwtKeys ?? []) {
        if (this.run('resealJwt', { kid, sealedKey, at: change.audit.at.getTime() }).changes === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no JWT key with kid ${kid} to re-seal`);
      }
      for (const { id, sealedKey } of change.resealedPending ?? []) {
        if (this.run('resealPending', { id, sealedKey }).changes === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no pending authority with id ${id} to re-seal`);
      }
      if (change.completesPending !== undefined && this.run('deletePending', change.completesPending).changes === 0) {
        throw new StoreError('ERR_STORE_NOT_FOUND', `no pending authority with id ${change.completesPending} (already completed or deleted?)`);
      }
      for (const revocation of change.revocations ?? []) this.revokeAuthority(revocation);
      if (change.bumpBundleSequence) this.run('bumpBundleSequence');
      this.insertAudit(change.audit);
      return { bundleSequence: this.readBundleSequence() };
    });
  }

  async loadPendingAuthorities(): Promise<PendingAuthorityRecord[]> {
    return this.use(() => this.all<PendingAuthorityRow>('loadPending').map(pendingFromRow));
  }

  async addPendingAuthority(record: PendingAuthorityRecord, audit: AuditEventInput): Promise<void> {
    return this.writeTransaction(() => {
      this.run('insertPending', {
        id: record.id,
        keyType: record.keyType,
        sealedKey: record.sealedKey,
        csr: record.csrDer,
        subject: record.subject,
        upstream: record.upstream,
        createdAt: record.createdAt.getTime(),
        expiresAt: record.expiresAt.getTime(),
      });
      this.insertAudit(audit);
    });
  }

  async deletePendingAuthority(id: string, audit: AuditEventInput): Promise<boolean> {
    return this.writeTransaction(() => {
      if (this.run('deletePending', id).changes === 0) return false;
      this.insertAudit(audit);
      return true;
    });
  }

  private transition(transition: AuthorityTransition, at: Date): void {
    this.guardedTransition({ update: 'transition', read: 'authorityState', what: `authority ${transition.id}` }, { id: transition.id }, transition, at);
  }

  /** A state change guarded by the current state: NOT_FOUND for an unknown row, CONFLICT for any other state. */
  private guardedTransition(
    sql: { readonly update: SqlName; readonly read: SqlName; readonly what: string },
    key: Readonly<Record<string, string>>,
    transition: { readonly from: readonly string[]; readonly to: string },
    at: Date,
  ): void {
    if (this.run(sql.update, { ...key, to: transition.to, from: JSON.stringify(transition.from), at: at.getTime() }).changes > 0) return;
    const current = this.get<{ state: string }>(sql.read, Object.values(key)[0]);
    if (!current) throw new StoreError('ERR_STORE_NOT_FOUND', `no ${sql.what}`);
    throw new StoreError('ERR_STORE_CONFLICT', `${sql.what} is ${current.state}, not ${transition.from.join(' or ') || '(no state allowed)'}; cannot make it ${transition.to}`);
  }

  /** The row, plus version bumps: the authority's own (OCSP answers for its leaves) and its root's (CRL entry). */
  private revokeAuthority(revocation: AuthorityRevocation): void {
    const params = { id: revocation.authorityId, at: revocation.revokedAt.getTime(), reason: revocation.reason, actor: revocation.actor };
    try {
      this.run('insertAuthorityRevocation', params);
    } catch (error) {
      throw toStoreError(error, `the revocation of authority ${revocation.authorityId}`);
    }
    const parent = this.get<{ parent_id: string | null }>('authorityParent', revocation.authorityId);
    this.run('bumpRevocationVersion', revocation.authorityId);
    if (parent?.parent_id) this.run('bumpRevocationVersion', parent.parent_id);
  }

  private reseal(id: string, sealedKey: Buffer, at: Date): void {
    if (this.run('reseal', { id, sealedKey, at: at.getTime() }).changes === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no authority with id ${id} to re-seal`);
  }

  private readBundleSequence(): number {
    return this.get<{ value: number }>('bundleSequence')?.value ?? 0;
  }

  // --- issuance ---

  async checkFreeSpace(): Promise<void> {
    this.diskGuard.check();
  }

  async recordIssued(record: IssuedCertificateRecord): Promise<void> {
    if (this.closed) throw closedError();
    return this.journal.enqueue(record);
  }

  private async writeIssuedInThread(writer: IssuanceWriterThread, records: readonly IssuedCertificateRecord[]): Promise<(StoreError | undefined)[]> {
    let result: Awaited<ReturnType<IssuanceWriterThread['write']>>;
    try {
      // Exact-size copies: posting a view of a pooled Buffer would clone its whole slab.
      result = await writer.write(records.map((r) => ({ ...issuedParams(r), der: new Uint8Array(r.der) })));
    } catch (error) {
      this.options.logger?.warn({ err: error, rows: records.length }, 'an issuance batch failed to commit; none of its certificates were recorded');
      throw new StoreError('ERR_STORE_UNAVAILABLE', `recording issued certificates failed: ${(error as Error).message}`, { cause: error });
    }
    const outcomes = result.outcomes.map((failure, i) => failure && toStoreError(Object.assign(new Error(failure.message), { code: failure.code }), `certificate ${records[i]?.serialHex}`));
    reportCommit(this.options, outcomes.filter((o) => o === undefined).length, result.seconds);
    return outcomes;
  }

  /** Inline fallback (no writer thread); also runs during close(), after `closed` is set, to drain the queue. */
  private writeIssued(records: readonly IssuedCertificateRecord[]): (StoreError | undefined)[] {
    const started = process.hrtime.bigint();
    let outcomes: (StoreError | undefined)[];
    try {
      this.db.exec('BEGIN IMMEDIATE');
      outcomes = records.map((record) => this.insertIssued(record));
      this.db.exec('COMMIT');
    } catch (error) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      this.options.logger?.warn({ err: error, rows: records.length }, 'an issuance batch failed to commit; none of its certificates were recorded');
      throw new StoreError('ERR_STORE_UNAVAILABLE', `recording issued certificates failed: ${(error as Error).message}`, { cause: error });
    }
    reportCommit(this.options, outcomes.filter((o) => o === undefined).length, Number(process.hrtime.bigint() - started) / 1e9);
    return outcomes;
  }

  /**
   * A constraint failure (or a malformed record) only undoes its own statement, so batch-mates
   * still commit; engine failures (I/O, disk full) fail the whole batch.
   */
  private insertIssued(record: IssuedCertificateRecord): StoreError | undefined {
    try {
      this.run('insertIssued', issuedParams(record));
      return undefined;
    } catch (error) {
      const code = sqliteCode(error);
      if (code !== '' && !code.startsWith('SQLITE_CONSTRAINT')) throw error;
      return toStoreError(error, `certificate ${record.serialHex}`);
    }
  }

  // --- certificates ---

  async getCertificate(serialHex: string, now: Date): Promise<CertificateDetail | undefined> {
    return this.use(() => {
      const row = this.get<CertificateDetailRow>('certificateBySerial', normalizeSerial(serialHex));
      return row && { ...summaryFromRow(row, now), der: row.der };
    });
  }

  async listCertificates(query: CertificateQuery): Promise<Page<CertificateSummary>> {
    return this.use(() => {
      const { sql, params } = certificateListing(query);
      const rows = this.prepared(sql).all(params) as CertificateRow[];
      return toPage(rows, pageLimit(query.limit), (row) => summaryFromRow(row, query.now), certificateCursor);
    });
  }

  async certificateListingPlan(query: CertificateQuery): Promise<string[]> {
    return this.use(() => {
      const { sql, params } = certificateListing(query);
      return (this.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as { detail: string }[]).map((row) => row.detail);
    });
  }

  /** One pass over a covering index: ~O(rows), documented as well under a second at 1M rows. */
  async authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>> {
    return this.use(() => {
      const usage = new Map<string, AuthorityUsage>();
      for (const row of this.all<{ authority_id: string; issued: number; unexpired: number }>('usage', now.getTime())) {
        usage.set(row.authority_id, { issued: row.issued, unexpired: row.unexpired, revoked: 0 });
      }
      for (const row of this.all<{ authority_id: string; revoked: number }>('revokedUsage')) {
        const counts = usage.get(row.authority_id);
        if (counts) usage.set(row.authority_id, { ...counts, revoked: row.revoked });
      }
      return usage;
    });
  }

  async countUnexpired(authorityIds: readonly string[], now: Date): Promise<number> {
    return this.use(() => [...new Set(authorityIds)].reduce((sum, id) => sum + this.count('countUnexpired', id, now.getTime()), 0));
  }

  async pruneExpired(expiredBefore: Date, batch: number): Promise<number> {
    return this.use(() => this.run('pruneExpired', expiredBefore.getTime(), Math.max(0, Math.floor(batch))).changes);
  }

  // --- revocation ---

  async revokeCertificate(serialHex: string, revocation: RevocationInput): Promise<CertificateSummary | undefined> {
    return this.writeTransaction(() => {
      const serial = normalizeSerial(serialHex);
      const before = this.get<CertificateDetailRow>('certificateBySerial', serial);
      if (!before) return undefined;
      const revoked = this.run('revokeOne', { id: before.id, ...revocationParams(revocation) }).changes > 0;
      if (revoked) this.run('bumpRevocationVersion', before.authority_id);
      this.insertAudit(certificateRevocationAudit(serial, before, revocation, !revoked));
      const after = this.get<CertificateDetailRow>('certificateBySerial', serial);
      return after && summaryFromRow(after, revocation.at);
    });
  }

  async revokeIdentity(spiffeId: string, revocation: RevocationInput & { readonly deny: boolean }): Promise<{ revoked: number }> {
    return this.writeTransaction(() => {
      const params = { spiffeId, ...revocationParams(revocation) };
      const authorities = this.all<{ authority_id: string }>('revokeIdentity', params).map((row) => row.authority_id);
      for (const id of new Set(authorities)) this.run('bumpRevocationVersion', id);
      if (revocation.deny) this.run('deny', params);
      this.insertAudit(identityRevocationAudit(spiffeId, revocation, authorities.length));
      return { revoked: authorities.length };
    });
  }

  async allowIdentity(spiffeId: string, actor: string, at: Date): Promise<boolean> {
    return this.writeTransaction(() => {
      const wasDenied = this.run('allow', spiffeId).changes > 0;
      // Allowing an identity that was not denied changes nothing, so nothing is written.
      if (wasDenied) this.insertAudit({ actor, action: 'identity.allow', target: spiffeId, result: 'ok', at });
      return wasDenied;
    });
  }

  async isDenied(spiffeId: string): Promise<boolean> {
    return this.use(() => this.get('isDenied', spiffeId) !== undefined);
  }

  async listDenied(): Promise<DeniedIdentity[]> {
    return this.use(() =>
      this.all<DeniedRow>('listDenied').map((row) => ({ spiffeId: row.spiffe_id, reason: row.reason as RevocationReason, actor: row.actor, at: new Date(row.at) })),
    );
  }

  async listRevoked(authorityId: string, now: Date): Promise<RevokedEntry[]> {
    return this.use(() =>
      this.all<{ serial_hex: string; revoked_at: number; revocation_reason: string }>('listRevoked', authorityId, now.getTime()).map((row) => ({
        serialHex: row.serial_hex,
        revokedAt: new Date(row.revoked_at),
        reason: row.revocation_reason as RevocationReason,
      })),
    );
  }

  async listAuthorityRevocations(): Promise<AuthorityRevocation[]> {
    return this.use(() =>
      this.all<{ authority_id: string; revoked_at: number; reason: string; actor: string }>('listAuthorityRevocations').map((row) => ({
        authorityId: row.authority_id,
        revokedAt: new Date(row.revoked_at),
        reason: row.reason as AuthorityRevocationReason,
        actor: row.actor,
      })),
    );
  }

  async revocationVersion(authorityId: string): Promise<number> {
    return this.use(() => this.get<{ revocation_version: number }>('revocationVersion', authorityId)?.revocation_version ?? 0);
  }

  async nextCrlNumber(authorityId: string): Promise<number> {
    return this.use(() => this.count('nextCrlNumber', authorityId));
  }

  // --- JWT-SVIDs ---

  async loadJwtAuthorities(): Promise<JwtAuthorityRecord[]> {
    return this.use(() => this.all<JwtAuthorityRow>('loadJwtAuthorities').map(jwtAuthorityFromRow));
  }

  async applyJwtAuthorityChange(change: JwtAuthorityChange): Promise<{ bundleSequence: number }> {
    return this.writeTransaction(() => {
      for (const record of change.insert ?? []) this.run('insertJwtAuthority', jwtAuthorityParams(record));
      for (const transition of change.transitions ?? []) this.jwtTransition(transition, change.audit.at);
      if (change.bumpBundleSequence) this.run('bumpBundleSequence');
      this.insertAudit(change.audit);
      return { bundleSequence: this.readBundleSequence() };
    });
  }

  private jwtTransition(transition: JwtAuthorityTransition, at: Date): void {
    this.guardedTransition({ update: 'jwtTransition', read: 'jwtAuthorityState', what: `JWT key ${transition.kid}` }, { kid: transition.kid }, transition, at);
  }

  async recordJwtSvid(record: JwtSvidRecord): Promise<void> {
    return this.use(() => {
      this.run('insertJwtSvid', {
        jti: record.jti,
        spiffeId: record.spiffeId,
        callerId: record.callerId,
        audiences: JSON.stringify(record.audiences),
        kid: record.kid,
        issuedAt: record.issuedAt.getTime(),
        expiresAt: record.expiresAt.getTime(),
      });
    });
  }

  async listJwtSvids(query: { readonly spiffeId?: string; readonly limit: number }): Promise<JwtSvidRecord[]> {
    return this.use(() => {
      const rows = query.spiffeId === undefined ? this.all<JwtSvidRow>('listJwtSvids', pageLimit(query.limit)) : this.all<JwtSvidRow>('listJwtSvidsOf', query.spiffeId, pageLimit(query.limit));
      return rows.map(jwtSvidFromRow);
    });
  }

  async pruneJwtSvids(expiredBefore: Date, batch: number): Promise<number> {
    return this.use(() => this.run('pruneJwtSvids', expiredBefore.getTime(), Math.max(0, Math.floor(batch))).changes);
  }

  // --- federation ---

  async saveFederatedBundle(record: FederatedBundleRecord): Promise<void> {
    return this.use(() => {
      this.run('saveFederatedBundle', {
        trustDomain: record.trustDomain,
        endpointUrl: record.endpointUrl,
        bundle: record.bundleJson,
        sequence: record.sequence,
        fetchedAt: record.fetchedAt.getTime(),
      });
    });
  }

  async loadFederatedBundles(): Promise<FederatedBundleRecord[]> {
    return this.use(() =>
      this.all<FederatedBundleRow>('loadFederatedBundles').map(federatedBundleFromRow),
    );
  }

  // --- audit ---

  async pruneAudit(before: Date, batch: number): Promise<number> {
    return this.use(() => this.run('pruneAudit', before.getTime(), Math.max(0, Math.floor(batch))).changes);
  }

  async appendAudit(event: AuditEventInput): Promise<void> {
    return this.use(() => this.insertAudit(event));
  }

  async listAudit(query: { readonly limit: number; readonly cursor?: string }): Promise<Page<AuditEvent>> {
    return this.use(() => {
      const before = query.cursor === undefined ? Number.MAX_SAFE_INTEGER : parseAuditCursor(query.cursor);
      const limit = pageLimit(query.limit);
      const rows = this.all<AuditRow>('listAudit', before, limit + 1);
      return toPage(rows, limit, auditFromRow, (row) => encodeCursor(`a1:${row.id}`));
    });
  }

  private insertAudit(event: AuditEventInput): void {
    this.run('insertAudit', auditParams(event));
  }

  // --- maintenance ---

  async integrityCheck(): Promise<string> {
    return this.use(() => this.all<{ integrity_check: string }>('integrityCheck').map((row) => row.integrity_check).join('\n'));
  }

  /** Commits queued issuance records, then closes; the last connection out checkpoints the WAL. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.journal.flushAll();
      await this.writer?.stop();
      await this.checkpointer?.stop();
      this.db.pragma('optimize');
    } finally {
      this.db.close();
    }
  }

  // --- plumbing ---

  /** Runs a read or a single-statement write; maps engine errors; refuses after close. */
  private use<T>(operation: () => T): T {
    if (this.closed) throw closedError();
    try {
      return operation();
    } catch (error) {
      throw toStoreError(error);
    }
  }

  /** BEGIN IMMEDIATE: takes the write lock up front, so the guards read what the commit will change. */
  private writeTransaction<T>(operation: () => T): T {
    return this.use(() => this.db.transaction(operation).immediate());
  }

  private prepared(sql: string): Statement<unknown[], unknown> {
    let statement = this.statements.get(sql);
    if (!statement) this.statements.set(sql, (statement = this.db.prepare(sql)));
    return statement;
  }

  private run(name: SqlName, ...params: unknown[]) {
    return this.prepared(SQL[name]).run(...params);
  }

  private get<R>(name: SqlName, ...params: unknown[]): R | undefined {
    return this.prepared(SQL[name]).get(...params) as R | undefined;
  }

  private all<R>(name: SqlName, ...params: unknown[]): R[] {
    return this.prepared(SQL[name]).all(...params) as R[];
  }

  /** For statements that yield one row with one number named `n`. */
  private count(name: SqlName, ...params: unknown[]): number {
    return this.get<{ n: number }>(name, ...params)?.n ?? 0;
  }
}

function revocationParams(revocation: RevocationInput) {
  return { at: revocation.at.getTime(), reason: revocation.reason, actor: revocation.actor };
}

// ---------------------------------------------------------------------------------------------
// Errors

function sqliteCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Engine errors become StoreErrors; `what` names the record for constraint failures. */
function toStoreError(error: unknown, what = 'the record'): StoreError {
  if (error instanceof StoreError) return error;
  const code = sqliteCode(error);
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    return new StoreError('ERR_STORE_DUPLICATE', `${what} is already stored (${message})`, { cause: error });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return new StoreError('ERR_STORE_NOT_FOUND', `${what} refers to an authority that is not stored`, { cause: error });
  return new StoreError('ERR_STORE_UNAVAILABLE', `the store failed: ${message}`, { cause: error });
}
