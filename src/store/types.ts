/**
 * The store's domain interface (docs/architecture.md). Nothing outside store/ knows SQL or the engine.
 * Every method is asynchronous at the edge so that a networked engine can implement it later,
 * and the interface caches nothing that another replica could change.
 */

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
  readonly serialHex: string;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly sha256Fingerprint: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
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
  /** Authorities revoked (made tainted) by this change; each bumps its own and its parent's revocation version. */
  readonly revocations?: readonly AuthorityRevocation[];
  readonly bumpBundleSequence: boolean;
  readonly audit: AuditEventInput;
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

export interface Store {
  loadAuthorities(): Promise<AuthorityRecord[]>;
  /** 0 for a new store; every applied change with bumpBundleSequence adds one. */
  bundleSequence(): Promise<number>;
  /**
   * Applies one authority change atomically; returns the bundle sequence after it. Fails with
   * ERR_STORE_CONFLICT (a guard saw another state; nothing was written), ERR_STORE_NOT_FOUND
   * (unknown id in a transition/re-seal, or an unknown parent) or ERR_STORE_DUPLICATE (id or fingerprint).
   */
  applyAuthorityChange(change: AuthorityChange): Promise<{ bundleSequence: number }>;

  /**
   * Resolves only after the record is durably committed (group commit batches concurrent calls).
   * Rejects with ERR_STORE_DUPLICATE (serial already stored) or ERR_STORE_NOT_FOUND (unknown
   * authority) for that record alone, or ERR_STORE_UNAVAILABLE when its whole batch failed.
   */
  recordIssued(record: IssuedCertificateRecord): Promise<void>;
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

  appendAudit(event: AuditEventInput): Promise<void>;
  listAudit(query: { readonly limit: number; readonly cursor?: string }): Promise<Page<AuditEvent>>;

  /**
   * `PRAGMA integrity_check` result: 'ok' or the problems found. Reads the whole database: ~9 s
   * at 1M certificates, blocking the event loop, so run it from ops tooling, not a hot path.
   */
  integrityCheck(): Promise<string>;
  /** Flushes pending issuance records and closes the database. Idempotent; every other call then fails with ERR_STORE_UNAVAILABLE. */
  close(): Promise<void>;
}
