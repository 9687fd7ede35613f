import { normalizeSerialHex } from '../pki/serial.js';
import type { AuthorityKind, AuthorityRecord, AuthorityState, JwtAuthorityRecord, JwtAuthorityState } from './types.js';

/** An `authorities` row as SQLite returns it (shared by the store and its read-only inspection). */
export interface AuthorityRow {
  id: string;
  kind: AuthorityKind;
  parent_id: string | null;
  state: AuthorityState;
  key_type: string;
  certificate: Buffer;
  sealed_key: Buffer | null;
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
