import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { StoreError } from '../errors.js';
import { DEFAULT_LINGER_MS, GroupCommitQueue } from '../group-commit.js';
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
} from '../records.js';
import {
  authorityFromRow,
  jwtAuthorityFromRow,
  normalizeSerial,
  pendingFromRow,
  upstreamChainColumn,
  type AuthorityRow,
  type JwtAuthorityRow,
  type PendingAuthorityRow,
} from '../rows.js';
import type {
  AuditEvent,
  AuditEventInput,
  AuthorityChange,
  AuthorityRecord,
  AuthorityRevocation,
  AuthorityRevocationReason,
  AuthorityTransition,
  AuthorityUsage,
  CertificateDetail,
  CertificateQuery,
  CertificateStatus,
  CertificateSummary,
  DeniedIdentity,
  FederatedBundleRecord,
  ExpectedRecord,
  IssuedCertificateRecord,
  JwtAuthorityChange,
  JwtAuthorityRecord,
  JwtAuthorityTransition,
  JwtSvidRecord,
  PendingAuthorityRecord,
  Page,
  RevocationInput,
  RevocationReason,
  RevokedEntry,
  Store,
  StoreChangeEvent,
} from '../types.js';
import { poolConfig, type PostgresConnectionOptions } from './connection.js';
import { toStoreError } from './errors.js';
import { applyPostgresMigrations } from './migrations.js';
import { currentFence, type LeaseFence, type SingletonGate } from '../fence.js';
import { PostgresLease } from './lease.js';
import { ChangeFeed, CHANGE_CHANNEL, type StoreChange } from './notifications.js';

export interface PostgresStoreOptions extends PostgresConnectionOptions {
  /** Backstop re-read period of the change feed (default 2 s): changes reach every replica within it even if a NOTIFY is lost. */
  readonly resyncIntervalMs?: number;
  /** How long the first queued issuance record waits for batch-mates; 0 flushes on the next event-loop turn. */
  readonly groupCommitWindowMs?: number;
  /**
   * With no window: how long a ready batch waits for issuances that announced themselves
   * (expectIssued) and are still being checked and signed. Default 3 ms; 0 commits at once.
   */
  readonly groupCommitLingerMs?: number;
  /** Rows per multi-row insert. */
  readonly groupCommitMaxRows?: number;
  readonly logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** Called after every issuance batch commits: rows written and seconds from the insert to COMMIT. */
  readonly onCommit?: (rows: number, seconds: number) => void;
  /** Where the NNN_name.sql files are; defaults to migrations/postgres/. */
  readonly migrationsDir?: string;
}

/** The PostgreSQL store, plus its pool for the pieces that share it (change feed, lease). */
export interface PostgresStore extends Store {
  readonly pool: Pool;
}

const DEFAULT_WINDOW_MS = 0;
const DEFAULT_MAX_ROWS = 256;

/** Connects, migrates (under an advisory lock) and returns the store; fails fast if the database is unreachable. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<PostgresStore> {
  const config = poolConfig(options);
  const pool = new pg.Pool(config);
  // An idle client losing its connection emits on the pool; without a listener that would crash the process.
  pool.on('error', (error) => options.logger?.warn({ err: error }, 'an idle PostgreSQL connection failed; the pool replaces it'));
  try {
    await applyPostgresMigrations(pool, options.migrationsDir);
    return new PostgresStoreImpl(
      pool,
      new ChangeFeed(config, { logger: options.logger, resyncIntervalMs: options.resyncIntervalMs }),
      options,
    );
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw toStoreError(error);
  }
}

const notify = (change: StoreChange) => ({ text: 'SELECT pg_notify($1, $2)', values: [CHANGE_CHANNEL, change] });

const SQL = {
  loadAuthorities: 'SELECT * FROM authorities ORDER BY created_at, id',
  insertAuthority: `INSERT INTO authorities (id, kind, parent_id, state, key_type, certificate, sealed_key, serial_hex, subject,
      not_before, not_after, sha256_fingerprint, created_at, updated_at, upstream_chain)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
  loadPending: 'SELECT * FROM pending_authorities ORDER BY created_at, id',
  insertPending: `INSERT INTO pending_authorities (id, key_type, sealed_key, csr, subject, upstream, created_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
  deletePending: 'DELETE FROM pending_authorities WHERE id = $1',
  resealPending: 'UPDATE pending_authorities SET sealed_key = $2 WHERE id = $1',
  pruneAudit: 'DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)',
  loadJwtAuthorities: 'SELECT * FROM jwt_authorities ORDER BY created_at, kid',
  insertJwtAuthority: `INSERT INTO jwt_authorities (kid, state, algorithm, public_jwk, sealed_key, not_after, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
  jwtTransition: 'UPDATE jwt_authorities SET state = $2, updated_at = $4 WHERE kid = $1 AND state = ANY($3::text[])',
  jwtAuthorityState: 'SELECT state FROM jwt_authorities WHERE kid = $1',
  resealJwt: 'UPDATE jwt_authorities SET sealed_key = $2, updated_at = $3 WHERE kid = $1',
  // Nothing for a denied identity (see holdIssuance: a deny in progress holds this INSERT until it commits).
  insertJwtSvid: `INSERT INTO jwt_svids (jti, spiffe_id, caller_id, audiences, kid, issued_at, expires_at)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint
    WHERE NOT EXISTS (SELECT 1 FROM denied_identities WHERE spiffe_id = $2::text)`,
  listJwtSvids: 'SELECT * FROM jwt_svids ORDER BY issued_at DESC, jti LIMIT $1',
  listJwtSvidsOf: 'SELECT * FROM jwt_svids WHERE spiffe_id = $2 ORDER BY issued_at DESC, jti LIMIT $1',
  pruneJwtSvids: 'DELETE FROM jwt_svids WHERE jti IN (SELECT jti FROM jwt_svids WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)',
  saveFederatedBundle: `INSERT INTO federated_bundles (trust_domain, endpoint_url, bundle, sequence, fetched_at)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (trust_domain) DO UPDATE SET endpoint_url = excluded.endpoint_url, bundle = excluded.bundle,
      sequence = excluded.sequence, fetched_at = excluded.fetched_at`,
  loadFederatedBundles: 'SELECT * FROM federated_bundles ORDER BY trust_domain',
  transition: 'UPDATE authorities SET state = $2, updated_at = $4 WHERE id = $1 AND state = ANY($3::text[])',
  authorityState: 'SELECT state FROM authorities WHERE id = $1',
  reseal: 'UPDATE authorities SET sealed_key = $2, updated_at = $3 WHERE id = $1',
  bundleSequence: "SELECT value FROM meta WHERE key = 'bundle_sequence'",
  bumpBundleSequence: "UPDATE meta SET value = value + 1 WHERE key = 'bundle_sequence'",
  // One statement per batch. Rows whose serial exists (or repeats within the batch), whose
  // authority is unknown or (when asked) whose identity is denied are left out rather than failing
  // the batch; RETURNING says which went in. A deny that races this insert: see revokeIdentity.
  insertIssued: `INSERT INTO issued_certificates (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der)
    SELECT r.serial_hex, r.spiffe_id, r.caller_id, r.cluster_id, r.authority_id, r.not_before, r.not_after, r.issued_at, r.der
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bytea[], $10::boolean[])
      AS r (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der, refuse_if_denied)
    WHERE EXISTS (SELECT 1 FROM authorities a WHERE a.id = r.authority_id)
      AND NOT (r.refuse_if_denied AND EXISTS (SELECT 1 FROM denied_identities d WHERE d.spiffe_id = r.spiffe_id))
    ON CONFLICT (serial_hex) DO NOTHING
    RETURNING serial_hex`,
  deniedAmong: 'SELECT spiffe_id FROM denied_identities WHERE spiffe_id = ANY($1::text[])',
  // Taken by a deny before its sweep: waits for issuance batches and JWT-SVID records in flight
  // (their certificates get revoked) and holds new ones until it commits (they then see the deny). SHARE ROW EXCLUSIVE conflicts
  // with the ROW EXCLUSIVE lock an INSERT takes, and each READ COMMITTED statement takes its
  // snapshot after its locks.
  holdIssuance: 'LOCK TABLE issued_certificates, jwt_svids IN SHARE ROW EXCLUSIVE MODE',
  knownAuthorities: 'SELECT id FROM authorities WHERE id = ANY($1::text[])',
  certificateBySerial: `SELECT ${SUMMARY_COLUMNS}, der FROM issued_certificates WHERE serial_hex = $1`,
  usage: `SELECT authority_id, count(*) AS issued, count(*) FILTER (WHERE not_after > $1) AS unexpired,
      count(*) FILTER (WHERE revoked_at IS NOT NULL) AS revoked
    FROM issued_certificates GROUP BY authority_id`,
  countUnexpired: 'SELECT count(*) AS n FROM issued_certificates WHERE authority_id = ANY($1::text[]) AND not_after > $2',
  revokeOne: `UPDATE issued_certificates SET revoked_at = $2, revocation_reason = $3, revoked_by = $4
    WHERE id = $1 AND revoked_at IS NULL`,
  revokeIdentity: `UPDATE issued_certificates SET revoked_at = $2, revocation_reason = $3, revoked_by = $4
    WHERE spiffe_id = $1 AND revoked_at IS NULL AND not_after > $2 RETURNING authority_id`,
  bumpRevocationVersion: `INSERT INTO authority_revocations (authority_id, revocation_version) SELECT unnest($1::text[]), 1
    ON CONFLICT (authority_id) DO UPDATE SET revocation_version = authority_revocations.revocation_version + 1`,
  revocationVersion: 'SELECT revocation_version FROM authority_revocations WHERE authority_id = $1',
  nextCrlNumber: `INSERT INTO authority_revocations (authority_id, crl_number) VALUES ($1, 1)
    ON CONFLICT (authority_id) DO UPDATE SET crl_number = authority_revocations.crl_number + 1 RETURNING crl_number AS n`,
  listRevoked: `SELECT serial_hex, revoked_at, revocation_reason FROM issued_certificates
    WHERE authority_id = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY serial_hex`,
  deny: `INSERT INTO denied_identities (spiffe_id, reason, actor, at) VALUES ($1, $3, $4, $2)
    ON CONFLICT (spiffe_id) DO NOTHING`,
  allow: 'DELETE FROM denied_identities WHERE spiffe_id = $1',
  isDenied: 'SELECT 1 FROM denied_identities WHERE spiffe_id = $1',
  listDenied: 'SELECT spiffe_id, reason, actor, at FROM denied_identities ORDER BY spiffe_id',
  pruneExpired: `DELETE FROM issued_certificates WHERE id IN
    (SELECT id FROM issued_certificates WHERE not_after < $1 ORDER BY not_after LIMIT $2)`,
  insertAudit: 'INSERT INTO audit_events (at, actor, action, target, result, details) VALUES ($1, $2, $3, $4, $5, $6::jsonb)',
  insertAuthorityRevocation: 'INSERT INTO revoked_authorities (authority_id, revoked_at, reason, actor) VALUES ($1, $2, $3, $4)',
  authorityParent: 'SELECT parent_id FROM authorities WHERE id = $1',
  listAuthorityRevocations: 'SELECT authority_id, revoked_at, reason, actor FROM revoked_authorities ORDER BY revoked_at, authority_id',
  listAudit:
    'SELECT id, at, actor, action, target, result, details::text AS details FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT $2',
} as const;

interface Queryable {
  query(text: string, values?: unknown[]): Promise<pg.QueryResult>;
}

class PostgresStoreImpl implements PostgresStore {
  private readonly journal: GroupCommitQueue;
  private readonly leases = new Map<string, PostgresLease>();
  private closed = false;

  constructor(
    readonly pool: Pool,
    private readonly feed: ChangeFeed,
    private readonly options: PostgresStoreOptions,
  ) {
    this.journal = new GroupCommitQueue(
      (records) => this.writeIssued(records),
      options.groupCommitWindowMs ?? DEFAULT_WINDOW_MS,
      Math.max(1, options.groupCommitMaxRows ?? DEFAULT_MAX_ROWS),
      options.groupCommitLingerMs ?? DEFAULT_LINGER_MS,
    );
  }

  watch(listener: (event: StoreChangeEvent) => void): () => void {
    return this.feed.subscribe(listener);
  }

  /** The LISTEN connection doubles as the health probe: it is down exactly when PostgreSQL is unreachable. */
  healthy(): boolean {
    return !this.closed && this.feed.connected;
  }

  singleton(name: string): SingletonGate {
    let lease = this.leases.get(name);
    if (!lease) this.leases.set(name, (lease = new PostgresLease(this.pool, { name, logger: this.options.logger })));
    return lease.gate;
  }

  // --- authorities ---

  async loadAuthorities(): Promise<AuthorityRecord[]> {
    return (await this.rows<AuthorityRow>(SQL.loadAuthorities)).map(authorityFromRow);
  }

  async bundleSequence(): Promise<number> {
    return (await this.rows<{ value: number }>(SQL.bundleSequence))[0]?.value ?? 0;
  }

  async applyAuthorityChange(change: AuthorityChange): Promise<{ bundleSequence: number }> {
    return this.transaction(async (client) => {
      for (const record of change.insert ?? []) await client.query(SQL.insertAuthority, authorityParams(record));
      for (const transition of change.transitions ?? []) await this.transition(client, transition, change.audit.at);
      for (const { id, sealedKey } of change.resealed ?? []) {
        const { rowCount } = await client.query(SQL.reseal, [id, sealedKey, change.audit.at.getTime()]);
        if (rowCount === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no authority with id ${id} to re-seal`);
      }
      for (const { kid, sealedKey } of change.resealedJwtKeys ?? []) {
        const { rowCount } = await client.query(SQL.resealJwt, [kid, sealedKey, change.audit.at.getTime()]);
        if (rowCount === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no JWT key with kid ${kid} to re-seal`);
      }
      for (const { id, sealedKey } of change.resealedPending ?? []) {
        const { rowCount } = await client.query(SQL.resealPending, [id, sealedKey]);
        if (rowCount === 0) throw new StoreError('ERR_STORE_NOT_FOUND', `no pending authority with id ${id} to re-seal`);
      }
      if (change.completesPending !== undefined && (await client.query(SQL.deletePending, [change.completesPending])).rowCount === 0) {
        throw new StoreError(
          'ERR_STORE_NOT_FOUND',
          `no pending authority with id ${change.completesPending} (already completed or deleted?)`,
        );
      }
      for (const revocation of change.revocations ?? []) await revokeAuthority(client, revocation);
      if (change.revocations?.length) await client.query(notify('revocations'));
      if (change.bumpBundleSequence) await client.query(SQL.bumpBundleSequence);
      await insertAudit(client, change.audit);
      await client.query(notify('authorities'));
      // Deferred foreign keys (an intermediate's parent) are checked here, inside the mapping of errors.
      await client.query('SET CONSTRAINTS ALL IMMEDIATE');
      const { rows } = await client.query<{ value: number }>(SQL.bundleSequence);
      return { bundleSequence: rows[0]?.value ?? 0 };
    });
  }

  private async transition(client: Queryable, transition: AuthorityTransition, at: Date): Promise<void> {
    await guardedTransition(
      client,
      { update: SQL.transition, read: SQL.authorityState, what: `authority ${transition.id}` },
      transition.id,
      transition,
      at,
    );
  }

  // --- pending (upstream) authorities ---

  async loadPendingAuthorities(): Promise<PendingAuthorityRecord[]> {
    return (await this.rows<PendingAuthorityRow>(SQL.loadPending)).map(pendingFromRow);
  }

  async addPendingAuthority(record: PendingAuthorityRecord, audit: AuditEventInput): Promise<void> {
    await this.transaction(async (client) => {
      const { id, keyType, sealedKey, csrDer, subject, upstream, createdAt, expiresAt } = record;
      await client.query(SQL.insertPending, [id, keyType, sealedKey, csrDer, subject, upstream, createdAt.getTime(), expiresAt.getTime()]);
      await insertAudit(client, audit);
    });
  }

  async deletePendingAuthority(id: string, audit: AuditEventInput): Promise<boolean> {
    return this.transaction(async (client) => {
      if ((await client.query(SQL.deletePending, [id])).rowCount === 0) return false;
      await insertAudit(client, audit);
      return true;
    });
  }

  // --- JWT-SVIDs ---

  async loadJwtAuthorities(): Promise<JwtAuthorityRecord[]> {
    return (await this.rows<JwtAuthorityRow>(SQL.loadJwtAuthorities)).map(jwtAuthorityFromRow);
  }

  async applyJwtAuthorityChange(change: JwtAuthorityChange): Promise<{ bundleSequence: number }> {
    return this.transaction(async (client) => {
      for (const record of change.insert ?? []) await client.query(SQL.insertJwtAuthority, Object.values(jwtAuthorityParams(record)));
      for (const transition of change.transitions ?? []) await this.jwtTransition(client, transition, change.audit.at);
      if (change.bumpBundleSequence) await client.query(SQL.bumpBundleSequence);
      await insertAudit(client, change.audit);
      // Other replicas re-read their signing keys and bundle.
      await client.query(notify('authorities'));
      const { rows } = await client.query<{ value: number }>(SQL.bundleSequence);
      return { bundleSequence: rows[0]?.value ?? 0 };
    });
  }

  private async jwtTransition(client: Queryable, transition: JwtAuthorityTransition, at: Date): Promise<void> {
    await guardedTransition(
      client,
      { update: SQL.jwtTransition, read: SQL.jwtAuthorityState, what: `JWT key ${transition.kid}` },
      transition.kid,
      transition,
      at,
    );
  }

  async recordJwtSvid(record: JwtSvidRecord): Promise<void> {
    if (this.closed) throw closedError();
    const { jti, spiffeId, callerId, audiences, kid, issuedAt, expiresAt } = record;
    const { rowCount } = await this.query(SQL.insertJwtSvid, [
      jti,
      spiffeId,
      callerId,
      JSON.stringify(audiences),
      kid,
      issuedAt.getTime(),
      expiresAt.getTime(),
    ]);
    if (rowCount === 0) throw new StoreError('ERR_STORE_DENIED', `JWT-SVID ${jti} is for an identity on the deny-list`);
  }

  async listJwtSvids(query: { readonly spiffeId?: string; readonly limit: number }): Promise<JwtSvidRecord[]> {
    const limit = pageLimit(query.limit);
    const rows =
      query.spiffeId === undefined
        ? await this.rows<JwtSvidRow>(SQL.listJwtSvids, [limit])
        : await this.rows<JwtSvidRow>(SQL.listJwtSvidsOf, [limit, query.spiffeId]);
    return rows.map(jwtSvidFromRow);
  }

  async pruneJwtSvids(expiredBefore: Date, batch: number): Promise<number> {
    return (await this.write(SQL.pruneJwtSvids, [expiredBefore.getTime(), Math.max(0, Math.floor(batch))])).rowCount ?? 0;
  }

  // --- federation ---

  async saveFederatedBundle(record: FederatedBundleRecord): Promise<void> {
    if (this.closed) throw closedError();
    await this.query(SQL.saveFederatedBundle, [
      record.trustDomain,
      record.endpointUrl,
      record.bundleJson,
      record.sequence,
      record.fetchedAt.getTime(),
    ]);
  }

  async loadFederatedBundles(): Promise<FederatedBundleRecord[]> {
    return (await this.rows<FederatedBundleRow>(SQL.loadFederatedBundles)).map(federatedBundleFromRow);
  }

  // --- disk ---

  /**
   * Not applicable: the database's volume belongs to a remote server meshca cannot measure, so
   * --min-free-disk does not apply and this never refuses. A full PostgreSQL fails the write itself
   * (the request gets an error, nothing is half-written); watch the database server's disk there.
   */
  async checkFreeSpace(): Promise<void> {}

  // --- issuance ---

  expectIssued(): ExpectedRecord {
    return this.journal.expect();
  }

  async recordIssued(record: IssuedCertificateRecord, announced?: ExpectedRecord): Promise<void> {
    if (this.closed) throw closedError();
    return this.journal.enqueue(record, announced);
  }

  /** One multi-row INSERT in its own (autocommit) transaction: resolved only after PostgreSQL committed it. */
  private async writeIssued(records: readonly IssuedCertificateRecord[]): Promise<(StoreError | undefined)[]> {
    const started = process.hrtime.bigint();
    const serials = records.map((r) => normalizeSerial(r.serialHex));
    let stored: Set<string>;
    let known: Set<string>;
    let denied: Set<string>;
    try {
      const columns = [
        serials,
        records.map((r) => r.spiffeId),
        records.map((r) => r.callerId),
        records.map((r) => r.clusterId),
        records.map((r) => r.authorityId),
        records.map((r) => r.notBefore.getTime()),
        records.map((r) => r.notAfter.getTime()),
        records.map((r) => r.issuedAt.getTime()),
        records.map((r) => r.der),
        records.map((r) => r.refuseIfDenied === true),
      ];
      stored = new Set((await this.pool.query<{ serial_hex: string }>(SQL.insertIssued, columns)).rows.map((row) => row.serial_hex));
      [known, denied] = stored.size === records.length ? [new Set(), new Set()] : await this.whyNotStored(records);
    } catch (error) {
      this.options.logger?.warn(
        { err: error, rows: records.length },
        'an issuance batch failed to commit; none of its certificates were recorded',
      );
      throw new StoreError('ERR_STORE_UNAVAILABLE', `recording issued certificates failed: ${(error as Error).message}`, { cause: error });
    }
    const outcomes = records.map((record, i) => {
      // A serial listed twice in one batch was inserted once: the first occurrence owns it.
      if (stored.delete(serials[i]!)) return undefined;
      if (!known.has(record.authorityId))
        return new StoreError('ERR_STORE_NOT_FOUND', `certificate ${record.serialHex} refers to an authority that is not stored`);
      if (record.refuseIfDenied && denied.has(record.spiffeId))
        return new StoreError('ERR_STORE_DENIED', `certificate ${record.serialHex} is for an identity on the deny-list`);
      return new StoreError('ERR_STORE_DUPLICATE', `certificate ${record.serialHex} is already stored`);
    });
    reportCommit(this.options, outcomes.filter((o) => o === undefined).length, Number(process.hrtime.bigint() - started) / 1e9);
    return outcomes;
  }

  /** For a batch with rows left out: which of its authorities exist, and which of its identities are denied. */
  private async whyNotStored(records: readonly IssuedCertificateRecord[]): Promise<[Set<string>, Set<string>]> {
    const column = <K extends 'authorityId' | 'spiffeId'>(key: K) => [[...new Set(records.map((r) => r[key]))]];
    const [authorities, denied] = await Promise.all([
      this.pool.query<{ id: string }>(SQL.knownAuthorities, column('authorityId')),
      this.pool.query<{ spiffe_id: string }>(SQL.deniedAmong, column('spiffeId')),
    ]);
    return [new Set(authorities.rows.map((row) => row.id)), new Set(denied.rows.map((row) => row.spiffe_id))];
  }

  // --- certificates ---

  async getCertificate(serialHex: string, now: Date): Promise<CertificateDetail | undefined> {
    const row = (await this.rows<CertificateDetailRow>(SQL.certificateBySerial, [normalizeSerial(serialHex)]))[0];
    return row && { ...summaryFromRow(row, now), der: row.der };
  }

  async listCertificates(query: CertificateQuery): Promise<Page<CertificateSummary>> {
    const { text, values } = certificateListing(query);
    const rows = await this.rows<CertificateRow>(text, values);
    return toPage(rows, pageLimit(query.limit), (row) => summaryFromRow(row, query.now), certificateCursor);
  }

  async authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>> {
    const rows = await this.rows<{ authority_id: string } & AuthorityUsage>(SQL.usage, [now.getTime()]);
    return new Map(rows.map((row) => [row.authority_id, { issued: row.issued, unexpired: row.unexpired, revoked: row.revoked }]));
  }

  async countUnexpired(authorityIds: readonly string[], now: Date): Promise<number> {
    return (await this.rows<{ n: number }>(SQL.countUnexpired, [[...new Set(authorityIds)], now.getTime()]))[0]?.n ?? 0;
  }

  async pruneExpired(expiredBefore: Date, batch: number): Promise<number> {
    return (await this.write(SQL.pruneExpired, [expiredBefore.getTime(), Math.max(0, Math.floor(batch))])).rowCount ?? 0;
  }

  // --- revocation ---

  async revokeCertificate(serialHex: string, revocation: RevocationInput): Promise<CertificateSummary | undefined> {
    return this.transaction(async (client) => {
      const serial = normalizeSerial(serialHex);
      // FOR UPDATE: a concurrent revocation of the same serial (another replica) waits, then sees it revoked.
      const before = (await client.query<CertificateDetailRow>(`${SQL.certificateBySerial} FOR UPDATE`, [serial])).rows[0];
      if (!before) return undefined;
      const revoked = ((await client.query(SQL.revokeOne, [before.id, ...revocationParams(revocation)])).rowCount ?? 0) > 0;
      if (revoked) {
        await client.query(SQL.bumpRevocationVersion, [[before.authority_id]]);
        await client.query(notify('revocations'));
      }
      await insertAudit(client, certificateRevocationAudit(serial, before, revocation, !revoked));
      const after = (await client.query<CertificateDetailRow>(SQL.certificateBySerial, [serial])).rows[0];
      return after && summaryFromRow(after, revocation.at);
    });
  }

  async revokeIdentity(spiffeId: string, revocation: RevocationInput & { readonly deny: boolean }): Promise<{ revoked: number }> {
    return this.transaction(async (client) => {
      if (revocation.deny) await client.query(SQL.holdIssuance);
      const authorities = (
        await client.query<{ authority_id: string }>(SQL.revokeIdentity, [spiffeId, ...revocationParams(revocation)])
      ).rows.map((row) => row.authority_id);
      if (authorities.length > 0) await client.query(SQL.bumpRevocationVersion, [[...new Set(authorities)]]);
      if (revocation.deny) await client.query(SQL.deny, [spiffeId, ...revocationParams(revocation)]);
      await client.query(notify(revocation.deny ? 'denied' : 'revocations'));
      await insertAudit(client, identityRevocationAudit(spiffeId, revocation, authorities.length));
      return { revoked: authorities.length };
    });
  }

  async allowIdentity(spiffeId: string, actor: string, at: Date): Promise<boolean> {
    return this.transaction(async (client) => {
      const wasDenied = ((await client.query(SQL.allow, [spiffeId])).rowCount ?? 0) > 0;
      if (wasDenied) {
        await insertAudit(client, { actor, action: 'identity.allow', target: spiffeId, result: 'ok', at });
        await client.query(notify('denied'));
      }
      return wasDenied;
    });
  }

  async isDenied(spiffeId: string): Promise<boolean> {
    return (await this.rows(SQL.isDenied, [spiffeId])).length > 0;
  }

  async listDenied(): Promise<DeniedIdentity[]> {
    return (await this.rows<DeniedRow>(SQL.listDenied)).map((row) => ({
      spiffeId: row.spiffe_id,
      reason: row.reason as RevocationReason,
      actor: row.actor,
      at: new Date(row.at),
    }));
  }

  async listRevoked(authorityId: string, now: Date): Promise<RevokedEntry[]> {
    const rows = await this.rows<{ serial_hex: string; revoked_at: number; revocation_reason: string }>(SQL.listRevoked, [
      authorityId,
      now.getTime(),
    ]);
    return rows.map((row) => ({
      serialHex: row.serial_hex,
      revokedAt: new Date(row.revoked_at),
      reason: row.revocation_reason as RevocationReason,
    }));
  }

  async listAuthorityRevocations(): Promise<AuthorityRevocation[]> {
    const rows = await this.rows<{ authority_id: string; revoked_at: number; reason: string; actor: string }>(SQL.listAuthorityRevocations);
    return rows.map((row) => ({
      authorityId: row.authority_id,
      revokedAt: new Date(row.revoked_at),
      reason: row.reason as AuthorityRevocationReason,
      actor: row.actor,
    }));
  }

  async revocationVersion(authorityId: string): Promise<number> {
    return (await this.rows<{ revocation_version: number }>(SQL.revocationVersion, [authorityId]))[0]?.revocation_version ?? 0;
  }

  async nextCrlNumber(authorityId: string): Promise<number> {
    return ((await this.write(SQL.nextCrlNumber, [authorityId])).rows[0] as { n: number }).n;
  }

  // --- audit ---

  async pruneAudit(before: Date, batch: number): Promise<number> {
    return (await this.write(SQL.pruneAudit, [before.getTime(), Math.max(0, Math.floor(batch))])).rowCount ?? 0;
  }

  async appendAudit(event: AuditEventInput): Promise<void> {
    if (this.closed) throw closedError();
    await insertAudit(this, event);
  }

  async listAudit(query: { readonly limit: number; readonly cursor?: string }): Promise<Page<AuditEvent>> {
    const before = query.cursor === undefined ? Number.MAX_SAFE_INTEGER : parseAuditCursor(query.cursor);
    const limit = pageLimit(query.limit);
    const rows = await this.rows<AuditRow>(SQL.listAudit, [before, limit + 1]);
    return toPage(rows, limit, auditFromRow, (row) => encodeCursor(`a1:${row.id}`));
  }

  // --- maintenance ---

  /**
   * PostgreSQL checks its own pages; this checks what meshca relies on beyond the constraints:
   * the schema is migrated and the one-signer invariant holds. 'ok' or the problems found.
   */
  async integrityCheck(): Promise<string> {
    const problems: string[] = [];
    const active =
      (await this.rows<{ n: number }>("SELECT count(*) AS n FROM authorities WHERE kind = 'intermediate' AND state = 'active'"))[0]?.n ?? 0;
    if (active > 1) problems.push(`${active} active intermediates`);
    const orphans =
      (
        await this.rows<{ n: number }>(
          'SELECT count(*) AS n FROM authorities c WHERE parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM authorities p WHERE p.id = c.parent_id)',
        )
      )[0]?.n ?? 0;
    if (orphans > 0) problems.push(`${orphans} authorities with a missing parent`);
    return problems.length === 0 ? 'ok' : problems.join('\n');
  }

  /** Commits queued issuance records, then closes the pool. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.journal.flushAll();
      await Promise.all([...this.leases.values()].map((lease) => lease.stop()));
    } finally {
      await this.feed.close();
      await this.pool.end().catch(() => undefined);
    }
  }

  // --- plumbing ---

  /** Pool queries, refused after close, with engine errors mapped. (Also what insertAudit uses outside a transaction.) */
  async query(text: string, values?: unknown[]): Promise<pg.QueryResult> {
    if (this.closed) throw closedError();
    try {
      return await this.pool.query(text, values);
    } catch (error) {
      throw toStoreError(error);
    }
  }

  /** A single-statement write; inside a singleton job it runs in a transaction that checks the job's fence. */
  private async write(text: string, values: unknown[]): Promise<pg.QueryResult> {
    if (currentFence() === undefined) return this.query(text, values);
    return this.transaction((client) => client.query(text, values));
  }

  private async rows<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    return (await this.query(text, values)).rows as R[];
  }

  /** READ COMMITTED with row-level guards (UPDATE … WHERE state = ANY(…)), which re-check the row after a concurrent commit. */
  private async transaction<T>(operation: (client: PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) throw closedError();
    const fence = currentFence();
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw toStoreError(error);
    }
    try {
      await client.query('BEGIN');
      if (fence) await checkFence(client, fence);
      const result = await operation(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw toStoreError(error);
    } finally {
      client.release();
    }
  }
}

/**
 * A singleton job's write proceeds only while its lease is still held with the same epoch; FOR SHARE
 * keeps another replica from taking the lease over until this write committed.
 */
async function checkFence(client: Queryable, fence: LeaseFence): Promise<void> {
  const { rowCount } = await client.query(
    'SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() FOR SHARE',
    [fence.name, fence.holder, fence.epoch],
  );
  if (rowCount === 0)
    throw new StoreError(
      'ERR_STORE_CONFLICT',
      `the ${fence.name} lease (epoch ${fence.epoch}) passed to another replica; this replica's job stops`,
    );
}

/** The row, plus version bumps: the authority's own (OCSP answers for its leaves) and its root's (CRL entry). */
async function revokeAuthority(client: Queryable, revocation: AuthorityRevocation): Promise<void> {
  try {
    await client.query(SQL.insertAuthorityRevocation, [
      revocation.authorityId,
      revocation.revokedAt.getTime(),
      revocation.reason,
      revocation.actor,
    ]);
  } catch (error) {
    throw toStoreError(error, `the revocation of authority ${revocation.authorityId}`);
  }
  const parent = (await client.query(SQL.authorityParent, [revocation.authorityId])).rows[0] as { parent_id: string | null } | undefined;
  await client.query(SQL.bumpRevocationVersion, [[revocation.authorityId, ...(parent?.parent_id ? [parent.parent_id] : [])]]);
}

/** A state change guarded by the current state: NOT_FOUND for an unknown row, CONFLICT for any other state. */
async function guardedTransition(
  client: Queryable,
  sql: { readonly update: string; readonly read: string; readonly what: string },
  key: string,
  transition: { readonly from: readonly string[]; readonly to: string },
  at: Date,
): Promise<void> {
  const { rowCount } = await client.query(sql.update, [key, transition.to, transition.from, at.getTime()]);
  if (rowCount !== 0) return;
  const current = (await client.query(sql.read, [key])).rows[0] as { state: string } | undefined;
  if (!current) throw new StoreError('ERR_STORE_NOT_FOUND', `no ${sql.what}`);
  throw new StoreError(
    'ERR_STORE_CONFLICT',
    `${sql.what} is ${current.state}, not ${transition.from.join(' or ') || '(no state allowed)'}; cannot make it ${transition.to}`,
  );
}

async function insertAudit(client: Queryable, event: AuditEventInput): Promise<void> {
  const details = event.details === undefined ? null : JSON.stringify(event.details);
  await client.query(SQL.insertAudit, [event.at.getTime(), event.actor, event.action, event.target, event.result, details]);
}

function authorityParams(record: AuthorityRecord): unknown[] {
  return [
    record.id,
    record.kind,
    record.parentId,
    record.state,
    record.keyType,
    record.certificateDer,
    record.sealedKey,
    record.serialHex,
    record.subject,
    record.notBefore.getTime(),
    record.notAfter.getTime(),
    record.sha256Fingerprint,
    record.createdAt.getTime(),
    record.updatedAt.getTime(),
    upstreamChainColumn(record.upstreamChainDers),
  ];
}

function revocationParams(revocation: RevocationInput): unknown[] {
  return [revocation.at.getTime(), revocation.reason, revocation.actor];
}

// ---------------------------------------------------------------------------------------------
// Certificate listing: newest expiry first, (not_after DESC, id DESC), as in SQLite; every
// filter has an index ending in (not_after, id), so a page is a bounded range scan.

function certificateListing(query: CertificateQuery): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const param = (value: unknown) => `$${values.push(value)}`;
  const where: string[] = [];
  if (query.spiffeId !== undefined) where.push(`spiffe_id = ${param(query.spiffeId)}`);
  if (query.authorityId !== undefined) where.push(`authority_id = ${param(query.authorityId)}`);
  if (query.status !== undefined) where.push(statusCondition(query.status, () => param(query.now.getTime())));
  if (query.cursor !== undefined) {
    const after = parseCertificateCursor(query.cursor);
    where.push(`(not_after, id) < (${param(after.notAfter)}, ${param(after.id)})`);
  }
  const filter = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
  return {
    text: `SELECT ${SUMMARY_COLUMNS} FROM issued_certificates ${filter} ORDER BY not_after DESC, id DESC LIMIT ${param(pageLimit(query.limit) + 1)}`,
    values,
  };
}

function statusCondition(status: CertificateStatus, now: () => string): string {
  if (status === 'revoked') return 'revoked_at IS NOT NULL';
  return `revoked_at IS NULL AND not_after ${status === 'active' ? '>' : '<='} ${now()}`;
}
