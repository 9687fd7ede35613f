/**
 * What the invariant checker and the operator commands (`meshca verify`, `status`, `restore`) read
 * beyond the Store interface. Asynchronous so other engines can implement it.
 */
import type { AuthorityRecord, AuthorityUsage, DeniedIdentity, JwtAuthorityRecord } from './types.js';

export interface IssuedDer {
  readonly serialHex: string;
  readonly authorityId: string;
  readonly der: Buffer;
}

export interface SchemaInfo {
  /** Highest migration recorded in the database (0 if none). */
  readonly version: number;
  /** Highest migration this build ships. */
  readonly latestKnown: number;
}

export interface IssuanceCounts {
  /** Certificate records in the store (expired ones stay until pruned). */
  readonly total: number;
  readonly unexpired: number;
  readonly revoked: number;
  readonly revokedUnexpired: number;
}

/** What the invariant checker and the operator commands read. Asynchronous so other engines can implement it. */
export interface StoreInspection {
  integrityCheck(): Promise<string>;
  /** Rows whose foreign keys point nowhere (`PRAGMA foreign_key_check`), as "table rowid → parent". */
  foreignKeyViolations(limit?: number): Promise<string[]>;
  schema(): Promise<SchemaInfo>;
  loadAuthorities(): Promise<AuthorityRecord[]>;
  /** JWT-SVID signing keys; none in a database from before migration 005. */
  loadJwtAuthorities(): Promise<JwtAuthorityRecord[]>;
  bundleSequence(): Promise<number>;
  /** The serials (any case, leading zeros allowed) that are not stored. */
  missingSerials(serials: Iterable<string>): Promise<string[]>;
  /** Certificates whose authority_id names no stored authority. */
  certificatesWithUnknownAuthority(sampleSize?: number): Promise<{ count: number; sample: string[] }>;
  certificateCount(): Promise<number>;
  /**
   * Issued certificates with their DER, in batches: all of them in id order, or `sample` chosen at
   * random. Batches bound memory on large stores.
   */
  certificateBatches(options?: { readonly sample?: number; readonly batchSize?: number }): AsyncIterable<IssuedDer[]>;
  /** Certificates issued at or after `since`. */
  issuedSince(since: Date): Promise<number>;
  issuanceCounts(now: Date): Promise<IssuanceCounts>;
  /** Per-authority counts (intermediates that issued something). */
  authorityUsage(now: Date): Promise<Map<string, AuthorityUsage>>;
  listDenied(): Promise<DeniedIdentity[]>;
  /** Ids of revoked (tainted) authorities; empty for a store from before migration 003. */
  revokedAuthorityIds(): Promise<string[]>;
  /** Idempotent; a read-only store closes at once. */
  close(): Promise<void>;
}
