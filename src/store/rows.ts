import { pemBlocks, pemEncode } from '../pki/pem.js';
import { normalizeSerialHex } from '../pki/serial.js';
import type {
  AuthorityKind,
  AuthorityRecord,
  AuthorityState,
  JwtAuthorityRecord,
  JwtAuthorityState,
  PendingAuthorityRecord,
} from './types.js';

/** An `authorities` row as SQLite returns it (shared by the store and its read-only inspection). */
export interface AuthorityRow {
  id: string;
  kind: AuthorityKind;
  parent_id: string | null;
  state: AuthorityState;
  key_type: string;
  certificate: Buffer;
  sealed_key: Buffer | null;
  /** Absent before migration 004. */
  upstream_chain?: string | null;
  serial_hex: string;
  subject: string;
  not_before: number;
  not_after: number;
  sha256_fingerprint: string;
  created_at: number;
  updated_at: number;
}

export function authorityFromRow(row: AuthorityRow): AuthorityRecord {
  return {
    id: row.id,
    kind: row.kind,
    parentId: row.parent_id,
    state: row.state,
    keyType: row.key_type,
    certificateDer: row.certificate,
    sealedKey: row.sealed_key,
    upstreamChainDers: upstreamChainFromColumn(row.upstream_chain ?? null),
    serialHex: row.serial_hex,
    subject: row.subject,
    notBefore: new Date(row.not_before),
    notAfter: new Date(row.not_after),
    sha256Fingerprint: row.sha256_fingerprint,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

/** Serials as stored: lowercase hex, no separators, no leading zeros (non-hex input is kept, so it simply matches nothing). */
export function normalizeSerial(serialHex: string): string {
  return normalizeSerialHex(serialHex) ?? serialHex;
}

/** A `jwt_authorities` row (shared by the store and its read-only inspection). */
export interface JwtAuthorityRow {
  kid: string;
  state: JwtAuthorityState;
  algorithm: string;
  public_jwk: string;
  sealed_key: Buffer;
  not_after: number;
  created_at: number;
  updated_at: number;
}

export function jwtAuthorityFromRow(row: JwtAuthorityRow): JwtAuthorityRecord {
  return {
    kid: row.kid,
    state: row.state,
    algorithm: row.algorithm,
    publicJwk: JSON.parse(row.public_jwk) as Record<string, string>,
    sealedKey: row.sealed_key,
    notAfter: new Date(row.not_after),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

/** The upstream_chain column: concatenated PEM, NULL for none. */
export function upstreamChainColumn(ders: readonly Buffer[]): string | null {
  return ders.length === 0 ? null : ders.map((der) => pemEncode(der, 'CERTIFICATE')).join('');
}

function upstreamChainFromColumn(text: string | null): Buffer[] {
  return text === null ? [] : pemBlocks(text).map((b) => b.der);
}

/** A `pending_authorities` row as SQLite returns it. */
export interface PendingAuthorityRow {
  id: string;
  key_type: string;
  sealed_key: Buffer;
  csr: Buffer;
  subject: string;
  upstream: string;
  created_at: number;
  expires_at: number;
}

export function pendingFromRow(row: PendingAuthorityRow): PendingAuthorityRecord {
  return {
    id: row.id,
    keyType: row.key_type,
    sealedKey: row.sealed_key,
    csrDer: row.csr,
    subject: row.subject,
    upstream: row.upstream,
    createdAt: new Date(row.created_at),
    expiresAt: new Date(row.expires_at),
  };
}
