import type { KeyObject } from 'node:crypto';
import type { AuthorityKind, AuthorityRecord, AuthorityState } from '../store/types.js';
import { describeCertificate } from '../pki/certificate.js';
import { keyTypeOf, sealPrivateKey } from '../pki/keys.js';

/** Authority ids are derived from the certificate, so the same certificate can never be stored twice. */
export function authorityIdFor(kind: AuthorityKind, sha256Fingerprint: string): string {
  return `${kind === 'root' ? 'root' : 'int'}-${sha256Fingerprint.slice(0, 16)}`;
}

export interface NewAuthority {
  readonly kind: AuthorityKind;
  readonly parentId: string | null;
  readonly state: AuthorityState;
  readonly certificateDer: Buffer;
  /** Null when meshca does not hold the key (an external root of a plug-in CA). */
  readonly privateKey: KeyObject | null;
  /** Upstream intermediates between an intermediate and its root, nearest first. */
  readonly upstreamChainDers?: readonly Buffer[];
}

/** Builds the stored record; the key is sealed under the KEK with the authority id as AAD. */
export async function authorityRecord(spec: NewAuthority, kek: Buffer, now: Date): Promise<AuthorityRecord> {
  const info = await describeCertificate(spec.certificateDer);
  const id = authorityIdFor(spec.kind, info.sha256Fingerprint);
  return {
    id,
    kind: spec.kind,
    parentId: spec.parentId,
    state: spec.state,
    keyType: spec.privateKey ? keyTypeOf(spec.privateKey) : info.keyType,
    certificateDer: spec.certificateDer,
    sealedKey: spec.privateKey ? sealPrivateKey(spec.privateKey, kek, id) : null,
    upstreamChainDers: spec.upstreamChainDers ?? [],
    serialHex: info.serialHex,
    subject: info.subject,
    notBefore: info.notBefore,
    notAfter: info.notAfter,
    sha256Fingerprint: info.sha256Fingerprint,
    createdAt: now,
    updatedAt: now,
  };
}
