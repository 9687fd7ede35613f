/**
 * Row shapes, paging and cursors shared by both store engines: SQLite and PostgreSQL return the same
 * columns (times as Unix milliseconds), so they map rows and encode cursors the same way, and a
 * cursor from one replica works on another.
 */
import { StoreError } from './errors.js';
import type {
  AuditEvent,
  AuditEventInput,
  CertificateStatus,
  CertificateSummary,
  JwtAuthorityRecord,
  JwtSvidRecord,
  FederatedBundleRecord,
  Page,
  RevocationInput,
} from './types.js';

export const MAX_PAGE = 1000;

export interface CertificateRow {
  id: number;
  serial_hex: string;
  spiffe_id: string;
  caller_id: string;
  cluster_id: string;
  authority_id: string;
  not_before: number;
  not_after: number;
  issued_at: number;
  revoked_at: number | null;
  revocation_reason: string | null;
}

export interface CertificateDetailRow extends CertificateRow {
  der: Buffer;
}

export interface AuditRow {
  id: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  result: AuditEvent['result'];
  details: string | null;
}

export interface DeniedRow {
  spiffe_id: string;
  reason: string;
  actor: string;
  at: number;
}

export const SUMMARY_COLUMNS =
  'id, serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, revoked_at, revocation_reason';

export function certificateStatus(row: CertificateRow, now: Date): CertificateStatus {
  if (row.revoked_at !== null) return 'revoked';
  return row.not_after > now.getTime() ? 'active' : 'expired';
}

export function summaryFromRow(row: CertificateRow, now: Date): CertificateSummary {
  return {
    serialHex: row.serial_hex,
    spiffeId: row.spiffe_id,
    callerId: row.caller_id,
    clusterId: row.cluster_id,
    authorityId: row.authority_id,
    notBefore: new Date(row.not_before),
    notAfter: new Date(row.not_after),
    issuedAt: new Date(row.issued_at),
    status: certificateStatus(row, now),
    revokedAt: row.revoked_at === null ? null : new Date(row.revoked_at),
    revocationReason: row.revocation_reason,
  };
}
export function auditFromRow(row: AuditRow): AuditEvent {
  const event = { id: row.id, at: new Date(row.at), actor: row.actor, action: row.action, target: row.target, result: row.result };
  return row.details === null ? event : { ...event, details: JSON.parse(row.details) as Record<string, unknown> };
}

/** Serials are stored as the interface spells them (lowercase, no leading zeros); lookups accept any case. */

// ---------------------------------------------------------------------------------------------
// Cursors: base64url of a versioned position, so callers cannot depend on the layout.

export interface ListingPosition {
  readonly notAfter: number;
  readonly id: number;
}

export function encodeCursor(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string, pattern: RegExp): RegExpExecArray {
  const match = /^[A-Za-z0-9_-]{1,200}$/.test(cursor) ? pattern.exec(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  if (!match) throw new StoreError('ERR_STORE_BAD_CURSOR', 'the cursor is not one this server returned; start again without a cursor');
  return match;
}

export function certificateCursor(row: CertificateRow): string {
  return encodeCursor(`c1:${row.not_after}:${row.id}`);
}

export function parseCertificateCursor(cursor: string): ListingPosition {
  const match = decodeCursor(cursor, /^c1:(-?\d{1,16}):(\d{1,16})$/);
  return { notAfter: Number(match[1]), id: Number(match[2]) };
}

export function parseAuditCursor(cursor: string): number {
  return Number(decodeCursor(cursor, /^a1:(\d{1,16})$/)[1]);
}

export function pageLimit(limit: number): number {
  return Math.max(1, Math.min(MAX_PAGE, Math.floor(limit) || 1));
}

/** Fetches limit + 1 rows so the last page says so (nextCursor null) without an extra round trip. */
export function toPage<R, T>(rows: R[], limit: number, item: (row: R) => T, cursor: (row: R) => string): Page<T> {
  const shown = rows.slice(0, limit);
  const last = shown.at(-1);
  return { items: shown.map(item), nextCursor: rows.length > limit && last !== undefined ? cursor(last) : null };
}

export function closedError(): StoreError {
  return new StoreError('ERR_STORE_UNAVAILABLE', 'the store is closed');
}

/** The audit event of a certificate revocation (the same in every engine). */
export function certificateRevocationAudit(
  serial: string,
  certificate: { readonly spiffe_id: string; readonly authority_id: string },
  revocation: RevocationInput,
  alreadyRevoked: boolean,
): AuditEventInput {
  return {
    actor: revocation.actor,
    action: 'certificate.revoke',
    target: serial,
    result: 'ok',
    details: { reason: revocation.reason, spiffeId: certificate.spiffe_id, authorityId: certificate.authority_id, alreadyRevoked },
    at: revocation.at,
  };
}

/** The audit event of revoking (and perhaps denying) an identity. */
export function identityRevocationAudit(
  spiffeId: string,
  revocation: RevocationInput & { readonly deny: boolean },
  revoked: number,
): AuditEventInput {
  return {
    actor: revocation.actor,
    action: 'identity.revoke',
    target: spiffeId,
    result: 'ok',
    details: { reason: revocation.reason, revoked, deny: revocation.deny },
    at: revocation.at,
  };
}

/** Calls a store's onCommit hook; a throwing hook is logged, never fails the batch it reports. */
export function reportCommit(
  options: { readonly onCommit?: (rows: number, seconds: number) => void; readonly logger?: { warn(obj: object, msg: string): void } },
  rows: number,
  seconds: number,
): void {
  try {
    options.onCommit?.(rows, seconds);
  } catch (error) {
    options.logger?.warn({ err: error }, 'the onCommit hook threw; ignored');
  }
}

export interface JwtSvidRow {
  jti: string;
  spiffe_id: string;
  caller_id: string;
  audiences: string;
  kid: string;
  issued_at: number;
  expires_at: number;
}

export interface FederatedBundleRow {
  trust_domain: string;
  endpoint_url: string;
  bundle: string;
  sequence: number | null;
  fetched_at: number;
}

export function jwtAuthorityParams(record: JwtAuthorityRecord) {
  return {
    kid: record.kid,
    state: record.state,
    algorithm: record.algorithm,
    publicJwk: JSON.stringify(record.publicJwk),
    sealedKey: record.sealedKey,
    notAfter: record.notAfter.getTime(),
    createdAt: record.createdAt.getTime(),
    updatedAt: record.updatedAt.getTime(),
  };
}

export function jwtSvidFromRow(row: JwtSvidRow): JwtSvidRecord {
  return {
    jti: row.jti,
    spiffeId: row.spiffe_id,
    callerId: row.caller_id,
    audiences: JSON.parse(row.audiences) as string[],
    kid: row.kid,
    issuedAt: new Date(row.issued_at),
    expiresAt: new Date(row.expires_at),
  };
}

export function federatedBundleFromRow(row: FederatedBundleRow): FederatedBundleRecord {
  return {
    trustDomain: row.trust_domain,
    endpointUrl: row.endpoint_url,
    bundleJson: row.bundle,
    sequence: row.sequence,
    fetchedAt: new Date(row.fetched_at),
  };
}
