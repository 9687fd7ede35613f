import { createCrl, type CrlEntry } from '../pki/certificate.js';
import { REVOCATION_REASONS } from '../pki/revocation-reasons.js';
import { parseSpiffeId } from '../spiffe/id.js';
import type {
  AuthorityRecord,
  AuthorityRevocationReason,
  CertificateSummary,
  DeniedIdentity,
  RevocationReason,
  Store,
} from '../store/types.js';
import { AuthorityError } from './errors.js';
import type { CertificateAuthority } from './lifecycle.js';
import { unsealAuthorityKey } from './signer.js';

export { REVOCATION_REASONS };
/** Reasons an authority may be revoked for: a CA certificate may also say cACompromise. */
export const AUTHORITY_REVOCATION_REASONS: readonly AuthorityRevocationReason[] = [...REVOCATION_REASONS, 'cACompromise'];

export interface CertificateRevocationList {
  readonly authorityId: string;
  readonly der: Buffer;
  readonly crlNumber: number;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** The store's revocation version this CRL reflects. */
  readonly version: number;
}

export interface RevocationOptions {
  readonly crlValidityMs: number;
  readonly onCrl?: (crl: CertificateRevocationList) => void;
  readonly now?: () => Date;
}

/**
 * Revocation by serial and by identity, the deny-list, and one CRL per authority
 * (docs/operations/revocation.md): an intermediate's lists its revoked, unexpired leaves; a root's
 * lists its revoked (tainted), unexpired intermediates. CRLs are rebuilt when the store's
 * revocation version moves or half their validity has passed, so a served CRL is never stale and
 * never older than nextUpdate.
 */
export class RevocationService {
  private readonly cache = new Map<string, CertificateRevocationList>();
  private readonly building = new Map<string, Promise<CertificateRevocationList>>();
  private readonly now: () => Date;

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly store: Store,
    private readonly kek: Buffer,
    private readonly options: RevocationOptions,
  ) {
    this.now = options.now ?? (() => new Date());
  }

  revokeCertificate(serialHex: string, reason: RevocationReason, actor: string): Promise<CertificateSummary | undefined> {
    return this.store.revokeCertificate(serialHex, { reason, actor, at: this.now() });
  }

  async revokeIdentity(spiffeId: string, reason: RevocationReason, deny: boolean, actor: string): Promise<{ revoked: number }> {
    parseSpiffeId(spiffeId);
    return this.store.revokeIdentity(spiffeId, { reason, actor, at: this.now(), deny });
  }

  async allowIdentity(spiffeId: string, actor: string): Promise<boolean> {
    parseSpiffeId(spiffeId);
    return this.store.allowIdentity(spiffeId, actor, this.now());
  }

  denied(): Promise<DeniedIdentity[]> {
    return this.store.listDenied();
  }

  /** The CRL of the active signing intermediate (what `GET /v1/crl` serves). */
  activeCrl(): Promise<CertificateRevocationList> {
    return this.crl(this.ca.current().signer.id);
  }

  /**
   * The complete set `openssl verify -crl_check_all` and Envoy need: one CRL from every authority
   * that is not removed, not expired and whose key meshca holds; the active intermediate's first
   * (what single-CRL readers take), then the other intermediates, then the roots.
   */
  async crlSet(): Promise<CertificateRevocationList[]> {
    const crls: CertificateRevocationList[] = [];
    for (const authority of publishingAuthorities(this.ca.current().authorities, this.ca.current().signer.id, this.now()))
      crls.push(await this.crl(authority.id));
    return crls;
  }

  async crl(authorityId: string): Promise<CertificateRevocationList> {
    const version = await this.store.revocationVersion(authorityId);
    const cached = this.cache.get(authorityId);
    if (cached && cached.version === version && !this.dueForRefresh(cached)) return cached;
    let pending = this.building.get(authorityId);
    if (!pending) {
      pending = this.build(authorityId, version).finally(() => this.building.delete(authorityId));
      this.building.set(authorityId, pending);
    }
    return pending;
  }

  /** Rebuilds every due CRL (called periodically so metrics and caches stay fresh). */
  async refreshAll(): Promise<void> {
    await this.crlSet();
  }

  /** A root's CRL entries: its revoked intermediates that have not expired yet. */
  private async revokedIntermediates(rootId: string, now: Date): Promise<CrlEntry[]> {
    const authorities = new Map((await this.store.loadAuthorities()).map((a) => [a.id, a]));
    return (await this.store.listAuthorityRevocations()).flatMap((r) => {
      const child = authorities.get(r.authorityId);
      if (!child || child.parentId !== rootId || child.notAfter.getTime() <= now.getTime()) return [];
      return [{ serialHex: child.serialHex, revokedAt: r.revokedAt, reason: r.reason }];
    });
  }

  private dueForRefresh(crl: CertificateRevocationList): boolean {
    return this.now().getTime() >= crl.thisUpdate.getTime() + this.options.crlValidityMs / 2;
  }

  private async build(authorityId: string, version: number): Promise<CertificateRevocationList> {
    const authority = (await this.store.loadAuthorities()).find((a) => a.id === authorityId);
    if (!authority) throw new AuthorityError('ERR_AUTHORITY_NOT_FOUND', `no authority with id ${authorityId}`);
    if (authority.state === 'removed')
      throw new AuthorityError('ERR_AUTHORITY_STATE', `${authorityId} is removed and publishes no CRL`, { state: authority.state });
    if (!authority.sealedKey)
      throw new AuthorityError('ERR_AUTHORITY_STATE', `meshca holds no key for ${authorityId}, so it cannot sign its CRL`, {
        state: authority.state,
      });
    const now = this.now();
    const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + this.options.crlValidityMs);
    const entries =
      authority.kind === 'root' ? await this.revokedIntermediates(authorityId, now) : await this.store.listRevoked(authorityId, now);
    const crlNumber = await this.store.nextCrlNumber(authorityId);
    const der = await createCrl({
      issuerCertificateDer: authority.certificateDer,
      issuerKey: unsealAuthorityKey(authority, this.kek),
      crlNumber,
      thisUpdate,
      nextUpdate,
      entries,
    });
    const crl = { authorityId, der, crlNumber, thisUpdate, nextUpdate, version };
    this.cache.set(authorityId, crl);
    this.options.onCrl?.(crl);
    return crl;
  }
}

/** Authorities that publish a CRL, in publication order: the signer, other intermediates, roots. */
function publishingAuthorities(authorities: readonly AuthorityRecord[], signerId: string, now: Date): AuthorityRecord[] {
  const rank = (a: AuthorityRecord) => (a.id === signerId ? 0 : a.kind === 'intermediate' ? 1 : 2);
  return authorities
    .filter((a) => a.state !== 'removed' && a.sealedKey !== null && a.notAfter.getTime() > now.getTime())
    .sort((a, b) => rank(a) - rank(b) || a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id));
}
