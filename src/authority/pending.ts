/**
 * Pending authorities: an intermediate key meshca generated and sealed, whose CSR went to an upstream
 * CA (an offline root, Vault PKI, cert-manager), waiting for the signed certificate
 * (docs/operations/upstream.md). Pure record building; CertificateAuthority commits the results.
 */
import { createPublicKey } from 'node:crypto';
import { openPrivateKey, sealPrivateKey, type KeyType } from '../pki/keys.js';
import { createIntermediateRequest, validateUpstreamCertificate } from '../pki/upstream.js';
import type { AuthorityRecord, AuthorityState, AuthorityTransition, PendingAuthorityRecord } from '../store/types.js';
import { AuthorityError } from './errors.js';
import { authorityRecord } from './records.js';
import { TRUSTED_STATES } from './snapshot.js';

/** Who completes a pending authority. */
export type UpstreamKind = 'manual' | 'vault' | 'cert-manager';

/** A CSR left unanswered this long is dropped (an offline signing ceremony fits in a week). */
export const DEFAULT_PENDING_TTL_MS = 7 * 86_400_000;

export interface IntermediateCsrRequest {
  readonly keyType?: KeyType;
  readonly subject?: string;
  readonly upstream?: UpstreamKind;
}

export interface UpstreamCertificateFiles {
  /** PEM of the signed intermediate (may be followed by its chain). */
  readonly certificate: string;
  /** PEM: upstream intermediates and the upstream root. */
  readonly chain: string;
}

export const isPendingId = (id: string): boolean => id.startsWith('pending-');

export async function newPendingAuthority(
  request: IntermediateCsrRequest,
  profile: { readonly trustDomain: string; readonly keyType: KeyType; readonly pendingTtlMs: number },
  kek: Buffer,
  now: Date,
): Promise<{ record: PendingAuthorityRecord; csrPem: string }> {
  const keyType = request.keyType ?? profile.keyType;
  const csr = await createIntermediateRequest({ trustDomain: profile.trustDomain, keyType, subject: request.subject });
  const id = `pending-${csr.publicKeyHash.slice(0, 16)}`;
  const record: PendingAuthorityRecord = {
    id,
    keyType,
    sealedKey: sealPrivateKey(csr.privateKey, kek, id),
    csrDer: csr.csrDer,
    subject: csr.subject,
    upstream: request.upstream ?? 'manual',
    createdAt: now,
    expiresAt: new Date(now.getTime() + profile.pendingTtlMs),
  };
  return { record, csrPem: csr.csrPem };
}

export interface AttachContext {
  readonly pending: PendingAuthorityRecord;
  readonly files: UpstreamCertificateFiles;
  readonly authorities: readonly AuthorityRecord[];
  readonly kek: Buffer;
  readonly trustDomain: string;
  readonly minLifetimeMs: number;
  /** 'prepared' normally; 'active' only for the very first authority of an empty store. */
  readonly state: Extract<AuthorityState, 'prepared' | 'active'>;
  readonly now: Date;
}

export interface AttachChange {
  readonly insert: AuthorityRecord[];
  readonly transitions: AuthorityTransition[];
  /** True when the upstream root joins the bundle. */
  readonly bumpBundleSequence: boolean;
  readonly intermediate: AuthorityRecord;
  readonly root: AuthorityRecord;
}

/** The records that complete a pending authority: its intermediate, and its root unless already trusted. */
export async function attachChange(context: AttachContext): Promise<AttachChange> {
  const { pending, kek, now } = context;
  if (now.getTime() >= pending.expiresAt.getTime()) {
    throw new AuthorityError(
      'ERR_AUTHORITY_STATE',
      `${pending.id} expired at ${pending.expiresAt.toISOString()}; remove it and request a new CSR`,
      { state: 'expired' },
    );
  }
  const key = unsealPendingKey(pending, kek);
  const upstream = validateUpstreamCertificate({
    certificatePem: context.files.certificate,
    chainPem: context.files.chain,
    publicKeySpkiDer: createPublicKey(key).export({ type: 'spki', format: 'der' }),
    trustDomain: context.trustDomain,
    minLifetimeMs: context.minLifetimeMs,
    now,
  });
  const rootState = context.state;
  const candidateRoot = await authorityRecord(
    { kind: 'root', parentId: null, state: rootState, certificateDer: upstream.rootDer, privateKey: null },
    kek,
    now,
  );
  const known = context.authorities.find((a) => a.id === candidateRoot.id);
  const transitions: AuthorityTransition[] = [];
  if (known && !TRUSTED_STATES.has(known.state)) transitions.push({ id: known.id, from: [known.state], to: 'prepared' });
  const root = known ?? candidateRoot;
  const intermediate = await authorityRecord(
    {
      kind: 'intermediate',
      parentId: root.id,
      state: context.state,
      certificateDer: upstream.certificateDer,
      privateKey: key,
      upstreamChainDers: upstream.intermediateDers,
    },
    kek,
    now,
  );
  if (context.authorities.some((a) => a.id === intermediate.id))
    throw new AuthorityError('ERR_AUTHORITY_INVALID', `${intermediate.id} is already stored`);
  return {
    insert: known ? [intermediate] : [root, intermediate],
    transitions,
    bumpBundleSequence: !known || transitions.length > 0,
    intermediate,
    root,
  };
}

export function unsealPendingKey(pending: PendingAuthorityRecord, kek: Buffer) {
  try {
    return openPrivateKey(pending.sealedKey, kek, pending.id);
  } catch {
    throw new AuthorityError(
      'ERR_AUTHORITY_INCONSISTENT',
      `cannot decrypt the key of ${pending.id}: is this the KEK the data dir was created with (--kek-file / MESHCA_KEK)?`,
    );
  }
}
