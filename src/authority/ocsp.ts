import { createHash, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { PkiError } from '../pki/errors.js';
import {
  certIdHashes,
  createOcspResponse,
  ocspErrorResponse,
  parseOcspRequest,
  type OcspCertId,
  type OcspCertStatus,
  type OcspHash,
} from '../pki/ocsp.js';
import type { AuthorityRecord, RevocationReason, Store } from '../store/types.js';
import type { CertificateAuthority } from './lifecycle.js';
import { unsealAuthorityKey } from './signer.js';

/** How long meshca reuses a signed nonce-less response, unless a revocation touches its issuer first. */
export const OCSP_CACHE_MS = 60_000;
/** thisUpdate → nextUpdate of every answer: how long a relying party may keep it. */
export const OCSP_VALIDITY_MS = 10 * 60_000;
const MAX_CACHED = 1024;

export interface OcspReply {
  readonly der: Buffer;
  /** Seconds an HTTP cache may keep it; 0 for error and nonce-bearing responses. */
  readonly maxAgeSeconds: number;
}

interface CachedReply {
  readonly der: Buffer;
  readonly version: number;
  readonly expires: number;
}

/**
 * The OCSP responder (RFC 6960) for every authority meshca holds a key for: an intermediate answers
 * for its leaves, a root for its intermediates. Leaves of a tainted intermediate are revoked
 * (cACompromise) even though their own rows are not. Never throws: bad input is malformedRequest,
 * an unknown issuer unauthorized, anything else internalError.
 */
export class OcspResponder {
  /** Unsealed CA keys, by authority id: an ES private field, never inspected or serialized. */
  readonly #keys = new Map<string, KeyObject>();
  private readonly hashes = new Map<string, { readonly nameHash: Buffer; readonly keyHash: Buffer }>();
  private readonly cache = new Map<string, CachedReply>();

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly store: Store,
    private readonly kek: Buffer,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async respond(requestDer: Uint8Array): Promise<OcspReply> {
    try {
      return await this.answer(requestDer);
    } catch (error) {
      if (error instanceof PkiError && error.code === 'ERR_OCSP_MALFORMED')
        return { der: ocspErrorResponse('malformedRequest'), maxAgeSeconds: 0 };
      this.logger.error({ err: error }, 'OCSP request failed');
      return { der: ocspErrorResponse('internalError'), maxAgeSeconds: 0 };
    }
  }

  private async answer(requestDer: Uint8Array): Promise<OcspReply> {
    const request = parseOcspRequest(requestDer);
    const issuer = this.issuerOf(request.certIds[0]!);
    if (!issuer) return { der: ocspErrorResponse('unauthorized'), maxAgeSeconds: 0 };
    const version = await this.store.revocationVersion(issuer.id);
    const now = this.now();
    const cacheKey = request.nonce ? undefined : createHash('sha256').update(requestDer).digest('base64');
    const cached = cacheKey === undefined ? undefined : this.cache.get(cacheKey);
    if (cached && cached.version === version && cached.expires > now.getTime()) {
      return { der: cached.der, maxAgeSeconds: Math.floor((cached.expires - now.getTime()) / 1000) };
    }
    const answers = [];
    for (const certId of request.certIds)
      answers.push({
        certId,
        status: this.matches(issuer, certId) ? await this.status(issuer, certId.serialHex, now) : ({ kind: 'unknown' } as const),
      });
    const der = createOcspResponse({
      signerCertificateDer: issuer.certificateDer,
      signerKey: this.key(issuer),
      answers,
      producedAt: now,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + OCSP_VALIDITY_MS),
      nonce: request.nonce,
    });
    if (cacheKey === undefined) return { der, maxAgeSeconds: 0 };
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(cacheKey, { der, version, expires: now.getTime() + OCSP_CACHE_MS });
    return { der, maxAgeSeconds: OCSP_CACHE_MS / 1000 };
  }

  /** The authority named by a CertID, among those that are not removed and whose key meshca holds. */
  private issuerOf(certId: OcspCertId): AuthorityRecord | undefined {
    return this.ca.current().authorities.find((a) => a.state !== 'removed' && a.sealedKey !== null && this.matches(a, certId));
  }

  private matches(authority: AuthorityRecord, certId: OcspCertId): boolean {
    const hashes = this.hashesOf(authority, certId.hash);
    return hashes.nameHash.equals(certId.issuerNameHash) && hashes.keyHash.equals(certId.issuerKeyHash);
  }

  private hashesOf(authority: AuthorityRecord, hash: OcspHash) {
    const key = `${authority.id}:${hash}`;
    let hashes = this.hashes.get(key);
    if (!hashes) this.hashes.set(key, (hashes = certIdHashes(authority.certificateDer, hash)));
    return hashes;
  }

  private key(authority: AuthorityRecord): KeyObject {
    let key = this.#keys.get(authority.id);
    if (!key) this.#keys.set(authority.id, (key = unsealAuthorityKey(authority, this.kek)));
    return key;
  }

  private async status(issuer: AuthorityRecord, serialHex: string, now: Date): Promise<OcspCertStatus> {
    const revocations = new Map((await this.store.listAuthorityRevocations()).map((r) => [r.authorityId, r]));
    if (issuer.kind === 'root') {
      const child = this.ca.current().authorities.find((a) => a.parentId === issuer.id && a.serialHex === serialHex);
      if (!child) return { kind: 'unknown' };
      const revoked = revocations.get(child.id);
      return revoked ? { kind: 'revoked', revokedAt: revoked.revokedAt, reason: revoked.reason } : { kind: 'good' };
    }
    const leaf = await this.store.getCertificate(serialHex, now);
    if (!leaf || leaf.authorityId !== issuer.id) return { kind: 'unknown' };
    if (leaf.revokedAt)
      return { kind: 'revoked', revokedAt: leaf.revokedAt, reason: (leaf.revocationReason ?? 'unspecified') as RevocationReason };
    const tainted = revocations.get(issuer.id);
    return tainted ? { kind: 'revoked', revokedAt: tainted.revokedAt, reason: 'cACompromise' } : { kind: 'good' };
  }
}
