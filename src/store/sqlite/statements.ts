/**
 * The SQL of the SQLite store: statement texts and parameter mappings. Row shapes, row mappings and
 * cursors are shared with the PostgreSQL store (../records.ts) and re-exported here for the store.
 */
import { normalizeSerial, upstreamChainColumn } from '../rows.js';
import { pageLimit, parseCertificateCursor, SUMMARY_COLUMNS } from '../records.js';
import type {
  AuditEventInput,
  AuthorityRecord,
  CertificateQuery,
  CertificateStatus,
  IssuedCertificateRecord,
  RevocationInput,
} from '../types.js';

export {
  auditFromRow,
  certificateCursor,
  encodeCursor,
  federatedBundleFromRow,
  jwtAuthorityParams,
  jwtSvidFromRow,
  pageLimit,
  parseAuditCursor,
  summaryFromRow,
  toPage,
  type AuditRow,
  type CertificateDetailRow,
  type CertificateRow,
  type DeniedRow,
  type FederatedBundleRow,
  type JwtSvidRow,
} from '../records.js';

export function authorityParams(record: AuthorityRecord) {
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

export function issuedParams(record: IssuedCertificateRecord) {
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
    refuseIfDenied: record.refuseIfDenied ? 1 : 0,
  };
}

export function auditParams(event: AuditEventInput) {
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

export function certificateListing(query: CertificateQuery): { sql: string; params: ListingParams } {
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

/** Inserts nothing (changes = 0) when @refuseIfDenied and the identity is denied: reported as DENIED_ROW (connection.ts). */
export const SQL_INSERT_ISSUED = `INSERT INTO issued_certificates (serial_hex, spiffe_id, caller_id, cluster_id, authority_id, not_before, not_after, issued_at, der)
    SELECT @serialHex, @spiffeId, @callerId, @clusterId, @authorityId, @notBefore, @notAfter, @issuedAt, @der
    WHERE NOT (@refuseIfDenied AND EXISTS (SELECT 1 FROM denied_identities WHERE spiffe_id = @spiffeId))`;

const UNKNOWN_AUTHORITY = 'FROM issued_certificates c WHERE NOT EXISTS (SELECT 1 FROM authorities a WHERE a.id = c.authority_id)';

export const SQL = {
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
  listAudit: 'SELECT id, at, actor, action, target, result, details FROM audit_events WHERE id < ? ORDER BY id DESC LIMIT ?',
  integrityCheck: 'PRAGMA integrity_check',
  authorityParent: 'SELECT parent_id FROM authorities WHERE id = ?',
  insertAuthorityRevocation: `INSERT INTO revoked_authorities (authority_id, revoked_at, reason, actor) VALUES (@id, @at, @reason, @actor)`,
  listAuthorityRevocations: 'SELECT authority_id, revoked_at, reason, actor FROM revoked_authorities ORDER BY revoked_at, authority_id',
  // Inspection (meshca verify / status and the crash harness).
  revokedAuthoritiesTable: "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'revoked_authorities'",
  revokedAuthorityIds: 'SELECT authority_id FROM revoked_authorities ORDER BY authority_id',
  foreignKeyCheck: 'PRAGMA foreign_key_check',
  tableNames: "SELECT name FROM sqlite_master WHERE type = 'table'",
  serialStored: 'SELECT 1 AS one FROM issued_certificates WHERE serial_hex = ?',
  unknownAuthorityCount: `SELECT count(*) AS n ${UNKNOWN_AUTHORITY}`,
  unknownAuthoritySample: `SELECT c.serial_hex AS s ${UNKNOWN_AUTHORITY} LIMIT ?`,
  certificateCount: 'SELECT count(*) AS n FROM issued_certificates',
  // ORDER BY random() sorts only (id, random) pairs of the index, then fetches the chosen rows.
  randomCertificateIds: 'SELECT id FROM issued_certificates ORDER BY random() LIMIT ?',
  certificateDerById: 'SELECT id, serial_hex, authority_id, der FROM issued_certificates WHERE id = ?',
  certificateDerPage: 'SELECT id, serial_hex, authority_id, der FROM issued_certificates WHERE id > ? ORDER BY id LIMIT ?',
  idBounds: 'SELECT min(id) AS lo, max(id) AS hi FROM issued_certificates',
  issuedAtFrom: 'SELECT id, issued_at FROM issued_certificates WHERE id >= ? ORDER BY id LIMIT 1',
  issuedSinceFrom: 'SELECT count(*) AS n FROM issued_certificates WHERE id >= ? AND issued_at >= ?',
  countUnexpiredAll: 'SELECT count(*) AS n FROM issued_certificates WHERE not_after > ?',
  countRevoked: 'SELECT count(*) AS n FROM issued_certificates WHERE revoked_at IS NOT NULL',
  countRevokedUnexpired: 'SELECT count(*) AS n FROM issued_certificates WHERE revoked_at IS NOT NULL AND not_after > ?',
  pruneAudit: `DELETE FROM audit_events WHERE id IN
    (SELECT id FROM audit_events WHERE at < ? ORDER BY at LIMIT ?)`,
  jwtAuthoritiesTable: "SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = 'jwt_authorities'",
  loadJwtAuthorities: 'SELECT * FROM jwt_authorities ORDER BY created_at, kid',
  insertJwtAuthority: `INSERT INTO jwt_authorities (kid, state, algorithm, public_jwk, sealed_key, not_after, created_at, updated_at)
    VALUES (@kid, @state, @algorithm, @publicJwk, @sealedKey, @notAfter, @createdAt, @updatedAt)`,
  jwtTransition: `UPDATE jwt_authorities SET state = @to, updated_at = @at
    WHERE kid = @kid AND state IN (SELECT value FROM json_each(@from))`,
  jwtAuthorityState: 'SELECT state FROM jwt_authorities WHERE kid = ?',
  resealJwt: 'UPDATE jwt_authorities SET sealed_key = @sealedKey, updated_at = @at WHERE kid = @kid',
  // Inserts nothing (changes = 0) for a denied identity: checked in the INSERT, so a deny that
  // commits first is always seen (the same rule as SQL_INSERT_ISSUED's refuseIfDenied).
  insertJwtSvid: `INSERT INTO jwt_svids (jti, spiffe_id, caller_id, audiences, kid, issued_at, expires_at)
    SELECT @jti, @spiffeId, @callerId, @audiences, @kid, @issuedAt, @expiresAt
    WHERE NOT EXISTS (SELECT 1 FROM denied_identities WHERE spiffe_id = @spiffeId)`,
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

export type SqlName = keyof typeof SQL;

export function revocationParams(revocation: RevocationInput) {
  return { at: revocation.at.getTime(), reason: revocation.reason, actor: revocation.actor };
}
