import type {
  AuditEvent,
  AuditEventInput,
  AuthorityRecord,
  CertificateDetail,
  CertificateStatus,
  CertificateSummary,
  Page,
  Store,
} from '../store/types.js';
import { AuthorityError } from './errors.js';

export interface AuthorityView {
  readonly id: string;
  readonly kind: AuthorityRecord['kind'];
  readonly parentId: string | null;
  readonly state: AuthorityRecord['state'];
  readonly subject: string;
  readonly serialNumber: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly keyType: string;
  readonly sha256Fingerprint: string;
  readonly hasPrivateKey: boolean;
  readonly issuedCount: number;
  readonly unexpiredIssuedCount: number;
  readonly revokedCount: number;
  /** When and why it was revoked (state tainted); null otherwise. */
  readonly taintedAt: string | null;
  readonly taintReason: string | null;
}

export interface CertificateFilter {
  readonly spiffeId?: string;
  readonly authorityId?: string;
  readonly status?: CertificateStatus;
  readonly limit: number;
  readonly cursor?: string;
}

/** Read-side views for operators: authorities with usage, the certificate inventory, the audit log. */
export class Inventory {
  constructor(
    private readonly store: Store,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async authorities(): Promise<AuthorityView[]> {
    const [records, usage, revocations] = await Promise.all([
      this.store.loadAuthorities(),
      this.store.authorityUsage(this.now()),
      this.store.listAuthorityRevocations(),
    ]);
    const taints = new Map(revocations.map((r) => [r.authorityId, r]));
    return records.map((r) => {
      const counts = r.kind === 'root' ? sumChildren(records, usage, r.id) : (usage.get(r.id) ?? { issued: 0, unexpired: 0, revoked: 0 });
      return {
        id: r.id,
        kind: r.kind,
        parentId: r.parentId,
        state: r.state,
        subject: r.subject,
        serialNumber: r.serialHex,
        notBefore: r.notBefore.toISOString(),
        notAfter: r.notAfter.toISOString(),
        keyType: r.keyType,
        sha256Fingerprint: r.sha256Fingerprint,
        hasPrivateKey: r.sealedKey !== null,
        issuedCount: counts.issued,
        unexpiredIssuedCount: counts.unexpired,
        revokedCount: counts.revoked,
        taintedAt: taints.get(r.id)?.revokedAt.toISOString() ?? null,
        taintReason: taints.get(r.id)?.reason ?? null,
      };
    });
  }

  async authority(id: string): Promise<AuthorityRecord> {
    const record = (await this.store.loadAuthorities()).find((a) => a.id === id);
    if (!record) throw new AuthorityError('ERR_AUTHORITY_NOT_FOUND', `no authority with id ${id}`);
    return record;
  }

  certificates(filter: CertificateFilter): Promise<Page<CertificateSummary>> {
    return this.store.listCertificates({ ...filter, now: this.now() });
  }

  certificate(serialHex: string): Promise<CertificateDetail | undefined> {
    return this.store.getCertificate(serialHex, this.now());
  }

  isDenied(spiffeId: string): Promise<boolean> {
    return this.store.isDenied(spiffeId);
  }

  recordEvent(event: AuditEventInput): Promise<void> {
    return this.store.appendAudit(event);
  }

  audit(limit: number, cursor?: string): Promise<Page<AuditEvent>> {
    return this.store.listAudit({ limit, cursor });
  }
}

function sumChildren(
  records: readonly AuthorityRecord[],
  usage: Map<string, { issued: number; unexpired: number; revoked: number }>,
  rootId: string,
) {
  return records
    .filter((a) => a.parentId === rootId)
    .reduce(
      (sum, child) => {
        const u = usage.get(child.id);
        return u ? { issued: sum.issued + u.issued, unexpired: sum.unexpired + u.unexpired, revoked: sum.revoked + u.revoked } : sum;
      },
      { issued: 0, unexpired: 0, revoked: 0 },
    );
}
