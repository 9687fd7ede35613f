/**
 * The store's domain interface (docs/architecture.md). Nothing outside store/ knows SQL or the engine.
 * Every method is asynchronous at the edge so that a networked engine can implement it later,
 * and the interface caches nothing that another replica could change.
 */

import type { SingletonGate } from './fence.js';
import type { ExpectedRecord } from './group-commit.js';

export type { ExpectedRecord } from './group-commit.js';

export type AuthorityState = 'prepared' | 'active' | 'retired' | 'tainted' | 'removed';
export type AuthorityKind = 'root' | 'intermediate';

export interface AuthorityRecord {
  readonly id: string;
  readonly kind: AuthorityKind;
  /** The issuing root's id for an intermediate; null for a root. */
  readonly parentId: string | null;
  readonly state: AuthorityState;
  readonly keyType: string;
  readonly certificateDer: Buffer;
  /** AES-256-GCM sealed PKCS#8 private key; null for a root whose key meshca does not hold (plug-in CA). */
  readonly sealedKey: Buffer | null;
  /** Upstream intermediates between this intermediate and its root (DER, nearest first); empty when the root signed it directly. */
  readonly upstreamChainDers: readonly Buffer[];
  readonly serialHex: string;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly sha256Fingerprint: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** A key meshca generated for an intermediate whose certificate an upstream CA has not returned yet. */
export interface PendingAuthorityRecord {
  /** `pending-` + 16 hex digits of the public key's SHA-256. */
  readonly id: string;
  readonly keyType: string;
  /** AES-256-GCM sealed PKCS#8 private key, the pending id as AAD. */
  readonly sealedKey: Buffer;
  /** The PKCS#10 request sent upstream (DER). */
  readonly csrDer: Buffer;
  readonly subject: string;
  /** 'manual' (an operator attaches the certificate), 'vault' or 'cert-manager'. */
  readonly upstream: string;
  readonly createdAt: Date;
  /** Attaching is refused after this; housekeeping then deletes the record. */
  readonly expiresAt: Date;
}

export interface AuditEventInput {
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly result: 'ok' | 'denied' | 'error';
  /** Small JSON-serialisable details. Never secrets. */
  readonly details?: Record<string, unknown>;
  readonly at: Date;
}

export interface AuditEvent extends AuditEventInput {
  readonly id: number;
}

export interface AuthorityTransition {
  readonly id: string;
  /** Guard: the change is refused (StoreError ERR_STORE_CONFLICT) unless the current state is one of these. */
  readonly from: readonly AuthorityState[];
  readonly to: AuthorityState;
}

/** One journaled authority change: all of it commits in one transaction, or none of it. */
export interface AuthorityChange {
  readonly insert?: readonly AuthorityRecord[];
  readonly transitions?: readonly AuthorityTransition[];
  /** Re-sealed keys (KEK rotation). */
  readonly resealed?: readonly { readonly id: string; readonly sealedKey: Buffer }[];
  /** Re-sealed JWT-SVID signing keys (KEK rotation), by kid. */
  readonly resealedJwtKeys?: readonly { readonly kid: string; readonly sealedKey: Buffer }[];
  /** Re-sealed pending keys (KEK rotation). */
  readonly resealedPending?: readonly { readonly id: string; readonly sealedKey: Buffer }[];
  /** A pending authority this change completes (its certificate was attached): deleted in the same transaction. */
  readonly completesPending?: string;
  /** Authorities revoked (made tainted) by this change; each bumps its own and its parent's revocation version. */
  readonly revocations?: readonly AuthorityRevocation[];
  readonly bumpBundleSequence: boolean;
  readonly audit: AuditEventInput;
}

export type JwtAuthorityState = 'prepared' | 'active' | 'retired' | 'removed';

/** A JWT-SVID signing key: published in the SPIFFE bundle (use "jwt-svid", its kid) until removed. */
export interface JwtAuthorityRecord {
  readonly kid: string;
  readonly state: JwtAuthorityState;
  /** JWS algorithm, e.g. ES256. */
  readonly algorithm: string;
  /** The public JWK (kty, crv, x, y or n, e), without kid/use. */
  readonly publicJwk: Readonly<Record<string, string>>;
  /** AES-256-GCM sealed PKCS#8 private key, AAD = kid. */
  readonly sealedKey: Buffer;
  /** No JWT-SVID signed with the key outlives this; the key is removed after it. */
  readonly notAfter: Date;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface JwtAuthorityTransition {
  readonly kid: string;
  /** Guard, as for AuthorityTransition. */
  readonly from: readonly JwtAuthorityState[];
  readonly to: JwtAuthorityState;
}

/** One journaled JWT key change, in one transaction with its audit event. */
export interface JwtAuthorityChange {
  readonly insert?: readonly JwtAuthorityRecord[];
  readonly transitions?: readonly JwtAuthorityTransition[];
  readonly bumpBundleSequence: boolean;
  readonly audit: AuditEventInput;
}

/** A minted JWT-SVID as recorded: never the token itself. */
export interface JwtSvidRecord {
  readonly jti: string;
  readonly spiffeId: string;
  readonly callerId: string;
  readonly audiences: readonly string[];
  readonly kid: string;
  readonly issuedAt: Date;
  readonly expiresAt: Date;
}

/** The last good bundle fetched from a federated trust domain's bundle endpoint. */
export interface FederatedBundleRecord {
  readonly trustDomain: string;
  readonly endpointUrl: string;
  /** The SPIFFE bundle document (JWK Set) as fetched. */
  readonly bundleJson: string;
  readonly sequence: number | null;
  readonly fetchedAt: Date;
}

export interface IssuedCertificateRecord {
  /** Lowercase hex, no separators, no leading zeros. */
  readonly serialHex: string;
  readonly spiffeId: string;
  /** The authenticated caller's identity (differs from spiffeId under ztunnel impersonation). */
  readonly callerId: string;
  readonly clusterId: string;
  readonly authorityId: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly issuedAt: Date;
  readonly der: Buffer;
  /**
   * Refuse the record (ERR_STORE_DENIED) if spiffeId is on the deny-list when it commits. Checked
   * inside the insert, so a deny that commits first always wins, and one that commits later finds
   * the row to revoke: no certificate slips between a deny and its sweep. Workload issuance sets it.
   */
  readonly refuseIfDenied?: boolean;
}

export type CertificateStatus = 'active' | 'expired' | 'revoked';

export interface CertificateSummary {
  readonly serialHex: string;
  readonly spiffeId: string;
  readonly callerId: string;
  readonly clusterId: string;
  readonly authorityId: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly issuedAt: Date;
  readonly status: CertificateStatus;
  readonly revokedAt: Date | null;
  readonly revocationReason: string | null;
}

export interface CertificateDetail extends CertificateSummary {
  readonly der: Buffer;
}

export interface CertificateQuery {
  readonly spiffeId?: string;
  readonly authorityId?: string;
  readonly status?: CertificateStatus;
  /** Page size; the SQLite store clamps it to 1..1000. */
  readonly limit: number;
  /** Opaque cursor from a previous page; one the store did not produce fails with ERR_STORE_BAD_CURSOR. */
  readonly cursor?: string;
  /** What 'active' and 'expired' are relative to. */
  readonly now: Date;
}

export interface Page<T> {
  readonly items: T[];
  readonly nextCursor: string | null;
}

/** Counts over stored rows: pruned certificates no longer count; `unexpired` includes revoked ones. */
export interface AuthorityUsage {
  readonly issued: number;
  readonly unexpired: number;
  readonly revoked: number;
}

export type { CrlReason as RevocationReason } from '../pki/revocation-reasons.js';
import type { CrlReason as RevocationReason } from '../pki/revocation-reasons.js';

/** CA certificates may also be revoked for cACompromise (RFC 5280 §5.3.1), which leaves cannot. */
export type AuthorityRevocationReason = RevocationReason | 'cACompromise';

/** A revoked root or intermediate: its CRL entry on its root's CRL (intermediates) and why it is tainted. */
export interface AuthorityRevocation {
  readonly authorityId: string;
  readonly revokedAt: Date;
  readonly reason: AuthorityRevocationReason;
  readonly actor: string;
}

export interface RevocationInput {
  readonly reason: RevocationReason;
  readonly actor: string;
  readonly at: Date;
}

export interface RevokedEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  readonly reason: RevocationReason;
}

export interface DeniedIdentity {
  readonly spiffeId: string;
  readonly reason: RevocationReason;
  readonly actor: string;
  readonly at: Date;
}

/** What a shared store announces: a kind of change another process made, or 'resync' (re-read everything). */
export type StoreChangeEvent = 'authorities' | 'revocations' | 'denied' | 'resync';

export interface Store {
  /**
   * Shared stores only (PostgreSQL): calls `listener` when another replica may have changed
   * authorities, revocations or the deny-list, and with 'resync' periodically and after the change
   * feed reconnects. Returns an unsubscribe function. Absent when one process owns the store.
   */
  watch?(listener: (event: StoreChangeEvent) => void): () => void;
  /** Whether the store is reachable right now (readiness). Absent means always. */
  healthy?(): boolean;
  /**
   * Shared stores only: a gate that runs a singleton job's pass on one replica at a time (a lease
   * in the store, fenced: the job's writes fail with ERR_STORE_CONFLICT once another replica took
   * over). Absent when one process owns the store, which then runs every job itself.
   */
  singleton?(name: string): SingletonGate;
  loadAuthorities(): Promise<AuthorityRecord[]>;
  /** 0 for a new store; every applied change with bumpBundleSequence adds one. */
  bundleSequence(): Promise<number>;
  /**
   * Applies one authority change atomically; returns the bundle sequence after it. Fails with
   * ERR_STORE_CONFLICT (a guard saw another state; nothing was written), ERR_STORE_NOT_FOUND
   * (unknown id in a transition/re-seal, an unknown parent, or a completed pending authority that
   * no longer exists) or ERR_STORE_DUPLICATE (id or fingerprint).
   */
  applyAuthorityChange(change: AuthorityChange): Promise<{ bundleSequence: number }>;
  /** Oldest first. */
  loadPendingAuthorities(): Promise<PendingAuthorityRecord[]>;
  /** Records a pending authority with its audit event, in one transaction (ERR_STORE_DUPLICATE for a known id). */
  addPendingAuthority(record: PendingAuthorityRecord, audit: AuditEventInput): Promise<void>;
  /** Deletes a pending authority with its audit event, in one transaction; false (nothing written) when it does not exist. */
  deletePendingAuthority(id: string, audit: AuditEventInput): Promise<boolean>;

  /**
   * Resolves only after the record is durably committed (group commit batches concurrent calls).
   * Rejects with ERR_STORE_DUPLICATE (serial already stored) or ERR_STORE_NOT_FOUND (unknown
   * authority) for that record alone, or ERR_STORE_UNAVAILABLE when its whole batch failed.
   * `announced` is the expectIssued() handle of this issuance, if it announced itself.
   */
  recordIssued(record: IssuedCertificateRecord, announced?: ExpectedRecord): Promise<void>;
  /**
   * Announces an issuance that is about to be checked and signed: a ready group commit waits
   * for it (a few milliseconds at most, --commit-linger) instead of committing fewer rows. Pass
   * the handle to recordIssued, or cancel() it when the issuance ends without a record.
   */
  expectIssued(): ExpectedRecord;
  /**
   * Rejects with ERR_STORE_DISK_LOW while the data volume has less free space than configured
   * (--min-free-disk), so workload issuance stops before the volume fills. Cheap: sampled at most once a second.
   */
  checkFreeSpace(): Promise<void>;
  getCertificate(serialHex: string, now: Date): Promise<CertificateDetail | undefined>;
  /** Newest expiry first (notAfter descending); keyset-paged, so pages never repeat or skip rows. */
  listCertificates(query: CertificateQuery): Promise<Page<CertificateSummary>>;
  /** Per-authority counts, keyed by authority id (only authorities that issued something). A full index scan: ~150 ms at 1M rows. */
  authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>>;
  /** Unexpired certificates (revoked ones included) issued by any of the given (intermediate) authorities. */
  countUnexpired(authorityIds: readonly string[], now: Date): Promise<number>;

  /**
   * Revokes one certificate with an audit event, in one transaction. Idempotent: revoking an already
   * revoked certificate keeps the original time and reason (and is still audited, with
   * `alreadyRevoked: true`). Undefined, with nothing written, when the serial is unknown.
   */
  revokeCertificate(serialHex: string, revocation: RevocationInput): Promise<CertificateSummary | undefined>;
  /**
   * Revokes every unexpired, not yet revoked certificate of an identity (unexpired at `revocation.at`),
   * and optionally denies it (an existing deny entry is kept as it was), with an audit event, in one transaction.
   */
  revokeIdentity(spiffeId: string, revocation: RevocationInput & { readonly deny: boolean }): Promise<{ revoked: number }>;
  /** Removes an identity from the deny-list (audited); false when it was not denied. */
  allowIdentity(spiffeId: string, actor: string, at: Date): Promise<boolean>;
  isDenied(spiffeId: string): Promise<boolean>;
  listDenied(): Promise<DeniedIdentity[]>;
  /** Revoked, not yet expired certificates issued by one authority (what its CRL lists). */
  listRevoked(authorityId: string, now: Date): Promise<RevokedEntry[]>;
  /** Every revoked (tainted) authority, oldest first. */
  listAuthorityRevocations(): Promise<AuthorityRevocation[]>;
  /** A monotonically increasing per-authority revocation version: bumps on every revocation that authority's CRL must show. */
  revocationVersion(authorityId: string): Promise<number>;
  /** Durably increments and returns the authority's CRL number (RFC 5280 §5.2.3: strictly increasing). */
  nextCrlNumber(authorityId: string): Promise<number>;
  /**
   * Deletes up to `batch` certificates whose notAfter is before `expiredBefore`; returns how many.
   * Keep batches around 1,000 (~35 ms): the SQLite store blocks the event loop while deleting.
   */
  pruneExpired(expiredBefore: Date, batch: number): Promise<number>;

  /** JWT-SVID signing keys, oldest first. */
  loadJwtAuthorities(): Promise<JwtAuthorityRecord[]>;
  /** Applies one JWT key change atomically (guards as applyAuthorityChange); returns the bundle sequence after it. */
  applyJwtAuthorityChange(change: JwtAuthorityChange): Promise<{ bundleSequence: number }>;
  /** Durably records a minted JWT-SVID (ERR_STORE_DUPLICATE for a repeated jti, ERR_STORE_NOT_FOUND for an unknown kid, ERR_STORE_DENIED for an identity on the deny-list, checked in the insert). */
  recordJwtSvid(record: JwtSvidRecord): Promise<void>;
  /** Recorded JWT-SVIDs, newest first, optionally of one identity; limit clamped to 1..1000. */
  listJwtSvids(query: { readonly spiffeId?: string; readonly limit: number }): Promise<JwtSvidRecord[]>;
  /** Deletes up to `batch` JWT-SVID records that expired before `expiredBefore`; returns how many. */
  pruneJwtSvids(expiredBefore: Date, batch: number): Promise<number>;
  /** Replaces the stored last good bundle of a federated trust domain. */
  saveFederatedBundle(record: FederatedBundleRecord): Promise<void>;
  loadFederatedBundles(): Promise<FederatedBundleRecord[]>;

  appendAudit(event: AuditEventInput): Promise<void>;
  /** Deletes up to `batch` of the oldest audit events dated before `before` (--audit-retention); returns how many. */
  pruneAudit(before: Date, batch: number): Promise<number>;
  listAudit(query: { readonly limit: number; readonly cursor?: string }): Promise<Page<AuditEvent>>;

  /**
   * `PRAGMA integrity_check` result: 'ok' or the problems found. Reads the whole database: ~9 s
   * at 1M certificates, blocking the event loop, so run it from ops tooling, not a hot path.
   */
  integrityCheck(): Promise<string>;
  /** Flushes pending issuance records and closes the database. Idempotent; every other call then fails with ERR_STORE_UNAVAILABLE. */
  close(): Promise<void>;
}
