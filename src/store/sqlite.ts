import { closeSync, openSync, renameSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { Database as Connection, Statement } from 'better-sqlite3';
import { StoreError } from './errors.js';
import { DEFAULT_LINGER_MS, GroupCommitQueue } from './group-commit.js';
import type { IssuanceCounts, IssuedDer, SchemaInfo, StoreInspection } from './inspection.js';
import { applyMigrations, DEFAULT_MIGRATIONS_DIR, readMigrations, recordedMigrations } from './migrations.js';
import {
  authorityFromRow,
  jwtAuthorityFromRow,
  normalizeSerial,
  pendingFromRow,
  type AuthorityRow,
  type JwtAuthorityRow,
  type PendingAuthorityRow,
} from './rows.js';
import { certificateRevocationAudit, closedError, identityRevocationAudit, reportCommit } from './records.js';
import { BackgroundCheckpointer } from './sqlite/checkpointer.js';
import {
  CACHE_KIB,
  deniedRecord,
  openReaderConnection,
  openWriterConnection,
  restrictFiles,
  sqliteCode,
  toStoreError,
} from './sqlite/connection.js';
import { startIssuanceWriter, type BatchResult, type IssuedRow } from './sqlite/issuance-writer.js';
import {
  auditFromRow,
  auditParams,
  authorityParams,
  certificateCursor,
  certificateListing,
  encodeCursor,
  federatedBundleFromRow,
  issuedParams,
  jwtAuthorityParams,
  jwtSvidFromRow,
  type FederatedBundleRow,
  type JwtSvidRow,
  pageLimit,
  parseAuditCursor,
  revocationParams,
  SQL,
  summaryFromRow,
  toPage,
  type AuditRow,
  type CertificateDetailRow,
  type CertificateRow,
  type DeniedRow,
  type SqlName,
} from './sqlite/statements.js';
import { WorkerCallError, type WorkerClient } from '../workers/rpc.js';
import { DiskGuard, type DiskGuardOptions } from './disk-guard.js';
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
  CertificateSummary,
  DeniedIdentity,
  FederatedBundleRecord,
  ExpectedRecord,
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

export { assertNotInUse } from './sqlite/connection.js';

/**
 * The SQLite store. The pieces: sqlite/connection.ts (opening, engine errors), sqlite/statements.ts
 * (the SQL), group-commit.ts (batching issuance records), and two worker threads
 * (sqlite/issuance-writer-worker.ts commits issuance batches, sqlite/checkpoint-worker.ts
 * checkpoints the WAL), so that neither fsync nor checkpoints block the event loop.
 */
export interface SqliteStoreOptions {
  readonly path: string;
  /**
   * 'write' (default): create and migrate the database, start the worker threads. 'read': no
   * migrations, no threads, every write refused; a live data dir gets a query-only connection
   * (safe beside a running server), and with `file` a lone file (a backup) is opened read-only.
   */
  readonly mode?: 'read' | 'write';
  readonly file?: boolean;
  /** How long the first queued issuance record waits for batch-mates; 0 flushes on the next event-loop turn. */
  readonly groupCommitWindowMs?: number;
  /**
   * With no window: how long a ready batch waits for issuances that announced themselves
   * (expectIssued) and are still being checked and signed. Default 3 ms; 0 commits at once.
   */
  readonly groupCommitLingerMs?: number;
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
export interface SqliteStore extends Store, StoreInspection {
  /** `EXPLAIN QUERY PLAN` lines of the statement listCertificates runs for this query. */
  certificateListingPlan(query: CertificateQuery): Promise<string[]>;
  close(): Promise<void>;
}

type IssuanceWriter = WorkerClient<readonly IssuedRow[], BatchResult>;

/** 0 = flush on the next event-loop turn: commits block the loop, so arrivals during one form the next batch. */
const DEFAULT_WINDOW_MS = 0;
const DEFAULT_MAX_ROWS = 256;

/** Opens the database (see SqliteStoreOptions.mode). Synchronous: call it once at startup. */
export function openSqliteStore(options: SqliteStoreOptions): SqliteStore {
  if (options.mode === 'read')
    return new SqliteStoreImpl(openReaderConnection(options.path, options.file ?? false), options, undefined, undefined);
  const db = openWriterConnection(options.path);
  try {
    applyMigrations(db, options.migrationsDir);
    restrictFiles(options.path);
    const checkpointer = options.backgroundCheckpoint === false ? undefined : new BackgroundCheckpointer(db, options.path, options.logger);
    const writer =
      options.writerThread === false
        ? undefined
        : startIssuanceWriter({ path: options.path, noAutocheckpoint: checkpointer !== undefined, cacheKib: CACHE_KIB });
    return new SqliteStoreImpl(db, options, checkpointer, writer);
  } catch (error) {
    db.close();
    throw error instanceof StoreError ? error : toStoreError(error);
  }
}

/** A read-only store on a data dir's database or (file) a backup: what `meshca verify`/`status` read. */
export function inspectSqliteStore(path: string, options: { readonly file?: boolean } = {}): SqliteStore {
  return openSqliteStore({ path, mode: 'read', file: options.file });
}

/**
 * An online, consistent copy (better-sqlite3's backup API) written 0600 and renamed into place. The
 * copy is switched to a rollback journal, so opening it later leaves no -wal/-shm files beside it.
 */
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
    const copy = new Database(temporary, { fileMustExist: true });
    try {
      copy.pragma('journal_mode = DELETE');
    } finally {
      copy.close();
    }
    rmSync(`${temporary}-wal`, { force: true });
    rmSync(`${temporary}-shm`, { force: true });
    renameSync(temporary, outFile);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw toStoreError(error);
  } finally {
    db?.close();
  }
}

class SqliteStoreImpl implements SqliteStore {
  private readonly statements = new Map<string, Statement<unknown[], unknown>>();
  private readonly groupCommit: GroupCommitQueue;
  private readonly diskGuard: DiskGuard;
  private closed = false;

  constructor(
    private readonly db: Connection,
    private readonly options: SqliteStoreOptions,
    private readonly checkpointer: BackgroundCheckpointer | undefined,
    private readonly writer: IssuanceWriter | undefined,
  ) {
    this.groupCommit = new GroupCommitQueue(
      (records) => (this.writer?.healthy ? this.writeIssuedInThread(this.writer, records) : Promise.resolve(this.writeIssued(records))),
      options.groupCommitWindowMs ?? DEFAULT_WINDOW_MS,
      Math.max(1, options.groupCommitMaxRows ?? DEFAULT_MAX_ROWS),
      options.groupCommitLingerMs ?? DEFAULT_LINGER_MS,
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
        if (this.run('resealJwt', { kid, sealedKey, at: change.audit.at.getTime() }).changes === 0)
          throw new StoreError('ERR_STORE_NOT_FOUND', `no JWT key with kid ${kid} to re-seal`);
      }
      for (const { id, sealedKey } of change.resealedPending ?? []) {
        if (this.run('resealPending', { id, sealedKey }).changes === 0)
          throw new StoreError('ERR_STORE_NOT_FOUND', `no pending authority with id ${id} to re-seal`);
      }
      if (change.completesPending !== undefined && this.run('deletePending', change.completesPending).changes === 0) {
        throw new StoreError(
          'ERR_STORE_NOT_FOUND',
          `no pending authority with id ${change.completesPending} (already completed or deleted?)`,
        );
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
    this.guardedTransition(
      { update: 'transition', read: 'authorityState', what: `authority ${transition.id}` },
      { id: transition.id },
      transition,
      at,
    );
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
    throw new StoreError(
      'ERR_STORE_CONFLICT',
      `${sql.what} is ${current.state}, not ${transition.from.join(' or ') || '(no state allowed)'}; cannot make it ${transition.to}`,
    );
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
    if (this.run('reseal', { id, sealedKey, at: at.getTime() }).changes === 0)
      throw new StoreError('ERR_STORE_NOT_FOUND', `no authority with id ${id} to re-seal`);
  }

  private readBundleSequence(): number {
    return this.get<{ value: number }>('bundleSequence')?.value ?? 0;
  }

  // --- issuance ---

  async checkFreeSpace(): Promise<void> {
    this.diskGuard.check();
  }

  expectIssued(): ExpectedRecord {
    return this.groupCommit.expect();
  }

  async recordIssued(record: IssuedCertificateRecord, announced?: ExpectedRecord): Promise<void> {
    if (this.closed) throw closedError();
    if (this.readOnly) throw readOnlyError();
    return this.groupCommit.enqueue(record, announced);
  }

  private async writeIssuedInThread(
    writer: IssuanceWriter,
    records: readonly IssuedCertificateRecord[],
  ): Promise<(StoreError | undefined)[]> {
    let result: BatchResult;
    try {
      // Exact-size copies: posting a view of a pooled Buffer would clone its whole slab.
      result = await writer.call(records.map((r) => ({ ...issuedParams(r), der: new Uint8Array(r.der) })));
    } catch (error) {
      this.options.logger?.warn(
        { err: error, rows: records.length },
        'an issuance batch failed to commit; none of its certificates were recorded',
      );
      throw new StoreError('ERR_STORE_UNAVAILABLE', `recording issued certificates failed: ${(error as Error).message}`, { cause: error });
    }
    const outcomes = result.outcomes.map(
      (failure, i) =>
        failure && toStoreError(new WorkerCallError(failure.code, failure.message), `certificate ${records[i]?.serialHex ?? '?'}`),
    );
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
      this.options.logger?.warn(
        { err: error, rows: records.length },
        'an issuance batch failed to commit; none of its certificates were recorded',
      );
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
      if (this.run('insertIssued', issuedParams(record)).changes === 0) return deniedRecord(`certificate ${record.serialHex}`);
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
    return this.write(() => this.run('pruneExpired', expiredBefore.getTime(), Math.max(0, Math.floor(batch))).changes);
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
      this.all<DeniedRow>('listDenied').map((row) => ({
        spiffeId: row.spiffe_id,
        reason: row.reason as RevocationReason,
        actor: row.actor,
        at: new Date(row.at),
      })),
    );
  }

  async listRevoked(authorityId: string, now: Date): Promise<RevokedEntry[]> {
    return this.use(() =>
      this.all<{ serial_hex: string; revoked_at: number; revocation_reason: string }>('listRevoked', authorityId, now.getTime()).map(
        (row) => ({
          serialHex: row.serial_hex,
          revokedAt: new Date(row.revoked_at),
          reason: row.revocation_reason as RevocationReason,
        }),
      ),
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
    return this.write(() => this.count('nextCrlNumber', authorityId));
  }

  // --- JWT-SVIDs ---

  async loadJwtAuthorities(): Promise<JwtAuthorityRecord[]> {
    // A read-only inspection may open a database from before migration 005.
    return this.use(() =>
      this.get('jwtAuthoritiesTable') ? this.all<JwtAuthorityRow>('loadJwtAuthorities').map(jwtAuthorityFromRow) : [],
    );
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
    this.guardedTransition(
      { update: 'jwtTransition', read: 'jwtAuthorityState', what: `JWT key ${transition.kid}` },
      { kid: transition.kid },
      transition,
      at,
    );
  }

  async recordJwtSvid(record: JwtSvidRecord): Promise<void> {
    return this.use(() => {
      const { changes } = this.run('insertJwtSvid', {
        jti: record.jti,
        spiffeId: record.spiffeId,
        callerId: record.callerId,
        audiences: JSON.stringify(record.audiences),
        kid: record.kid,
        issuedAt: record.issuedAt.getTime(),
        expiresAt: record.expiresAt.getTime(),
      });
      if (changes === 0) throw deniedRecord(`JWT-SVID ${record.jti}`);
    });
  }

  async listJwtSvids(query: { readonly spiffeId?: string; readonly limit: number }): Promise<JwtSvidRecord[]> {
    return this.use(() => {
      const rows =
        query.spiffeId === undefined
          ? this.all<JwtSvidRow>('listJwtSvids', pageLimit(query.limit))
          : this.all<JwtSvidRow>('listJwtSvidsOf', query.spiffeId, pageLimit(query.limit));
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
    return this.use(() => this.all<FederatedBundleRow>('loadFederatedBundles').map(federatedBundleFromRow));
  }

  // --- audit ---

  async pruneAudit(before: Date, batch: number): Promise<number> {
    return this.use(() => this.run('pruneAudit', before.getTime(), Math.max(0, Math.floor(batch))).changes);
  }

  async appendAudit(event: AuditEventInput): Promise<void> {
    return this.write(() => this.insertAudit(event));
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
    return this.use(() =>
      this.all<{ integrity_check: string }>('integrityCheck')
        .map((row) => row.integrity_check)
        .join('\n'),
    );
  }

  // --- inspection (meshca verify / status, the crash harness) ---

  async foreignKeyViolations(limit = 20): Promise<string[]> {
    return this.use(() =>
      this.all<{ table: string; rowid: number | null; parent: string }>('foreignKeyCheck')
        .slice(0, limit)
        .map((r) => `${r.table} row ${r.rowid ?? '?'} → ${r.parent}`),
    );
  }

  async schema(): Promise<SchemaInfo> {
    return this.use(() => {
      const recorded = recordedMigrations(this.db);
      const known = readMigrations(this.options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR);
      return { version: recorded.at(-1)?.version ?? 0, latestKnown: known.at(-1)?.version ?? 0 };
    });
  }

  async missingSerials(serials: Iterable<string>): Promise<string[]> {
    return this.use(() => {
      const missing: string[] = [];
      for (const serial of serials) if (!this.get('serialStored', normalizeSerial(serial))) missing.push(serial);
      return missing;
    });
  }

  async certificatesWithUnknownAuthority(sampleSize = 10): Promise<{ count: number; sample: string[] }> {
    return this.use(() => {
      const count = this.count('unknownAuthorityCount');
      const sample = count === 0 ? [] : this.all<{ s: string }>('unknownAuthoritySample', sampleSize).map((r) => r.s);
      return { count, sample };
    });
  }

  async revokedAuthorityIds(): Promise<string[]> {
    return this.use(() =>
      this.get('revokedAuthoritiesTable') ? this.all<{ authority_id: string }>('revokedAuthorityIds').map((r) => r.authority_id) : [],
    );
  }

  async certificateCount(): Promise<number> {
    return this.use(() => this.count('certificateCount'));
  }

  async *certificateBatches(options: { readonly sample?: number; readonly batchSize?: number } = {}): AsyncIterable<IssuedDer[]> {
    const batchSize = Math.max(1, options.batchSize ?? 500);
    type Row = { id: number; serial_hex: string; authority_id: string; der: Buffer };
    const toDer = (r: Row): IssuedDer => ({ serialHex: r.serial_hex, authorityId: r.authority_id, der: r.der });
    if (options.sample !== undefined) {
      const sample = Math.max(0, options.sample);
      const ids = this.use(() => this.all<{ id: number }>('randomCertificateIds', sample).map((r) => r.id));
      for (let i = 0; i < ids.length; i += batchSize) {
        yield this.use(() =>
          ids
            .slice(i, i + batchSize)
            .flatMap((id) => this.get<Row>('certificateDerById', id) ?? [])
            .map(toDer),
        );
      }
      return;
    }
    let after = -1;
    for (;;) {
      const rows = this.use(() => this.all<Row>('certificateDerPage', after, batchSize));
      const last = rows.at(-1);
      if (last === undefined) return;
      after = last.id;
      yield rows.map(toDer);
    }
  }

  /**
   * Rows are appended in issuance order, so issued_at grows with the rowid: a binary search over
   * the rowid finds where `since` starts (with a minute of slack for batches committed out of
   * order), and only that tail is counted. issued_at itself has no index.
   */
  async issuedSince(since: Date): Promise<number> {
    return this.use(() => {
      const bounds = this.get<{ lo: number | null; hi: number | null }>('idBounds');
      if (!bounds || bounds.lo === null || bounds.hi === null) return 0;
      const slack = since.getTime() - 60_000;
      let lo = bounds.lo;
      let hi = bounds.hi + 1;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        const row = this.get<{ id: number; issued_at: number }>('issuedAtFrom', mid);
        if (!row || row.issued_at >= slack) hi = mid;
        else lo = row.id + 1;
      }
      return this.count('issuedSinceFrom', lo, since.getTime());
    });
  }

  async issuanceCounts(now: Date): Promise<IssuanceCounts> {
    return this.use(() => ({
      total: this.count('certificateCount'),
      unexpired: this.count('countUnexpiredAll', now.getTime()),
      revoked: this.count('countRevoked'),
      revokedUnexpired: this.count('countRevokedUnexpired', now.getTime()),
    }));
  }

  /** Commits queued issuance records, then closes; the last connection out checkpoints the WAL. A read-only store closes at once. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.readOnly) {
      this.db.close();
      return Promise.resolve();
    }
    return this.closeWriter();
  }

  private async closeWriter(): Promise<void> {
    try {
      await this.groupCommit.flushAll();
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
    return this.write(() => this.db.transaction(operation).immediate());
  }

  /** A write outside a transaction; refused on a read-only store with a clear error, not the engine's. */
  private write<T>(operation: () => T): T {
    if (this.readOnly && !this.closed) throw readOnlyError();
    return this.use(operation);
  }

  private get readOnly(): boolean {
    return this.options.mode === 'read';
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

function readOnlyError(): StoreError {
  return new StoreError('ERR_STORE_UNAVAILABLE', 'the store is open read-only');
}
