/**
 * cert-manager as meshca's upstream CA (docs/operations/upstream.md): meshca's CSR becomes a
 * cert-manager.io/v1 CertificateRequest (isCA: true) for the configured issuer; once it is approved
 * and Ready, status.certificate and status.ca are attached. The key never leaves meshca.
 */
import type { Logger } from 'pino';
import { UpstreamError } from '../authority/errors.js';
import type { IntermediateSigner } from '../authority/lifecycle.js';
import type { UpstreamCertificateFiles } from '../authority/pending.js';
import { KubeApiError, isConflict, type KubeClient } from '../kubernetes/client.js';

export interface CertManagerConfig {
  readonly issuerName: string;
  readonly issuerKind: string;
  readonly issuerGroup: string;
  /** Where CertificateRequests are created; undefined = the Kubernetes connection's namespace. */
  readonly namespace: string | undefined;
  /** How long to wait for approval and issuance. */
  readonly waitMs: number;
}

interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
}

interface CertificateRequest {
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly status?: { readonly conditions?: readonly Condition[]; readonly certificate?: string; readonly ca?: string };
}

const GROUP_PATH = '/apis/cert-manager.io/v1';

export class CertManagerSigner implements IntermediateSigner {
  readonly kind = 'cert-manager';

  constructor(
    private readonly client: KubeClient,
    private readonly config: CertManagerConfig,
    private readonly logger: Logger,
  ) {}

  async signIntermediate(request: {
    readonly id: string;
    readonly csrPem: string;
    readonly ttlMs: number;
    readonly signal?: AbortSignal;
  }): Promise<UpstreamCertificateFiles> {
    const namespace = this.config.namespace ?? this.client.namespace;
    if (!namespace)
      throw new UpstreamError('ERR_UPSTREAM_REFUSED', 'no namespace for the CertificateRequest: pass --cert-manager-namespace');
    const name = `meshca-intermediate-${request.id.replace(/^pending-/, '')}`;
    const path = `${GROUP_PATH}/namespaces/${namespace}/certificaterequests`;
    await this.call(`creating CertificateRequest ${namespace}/${name}`, async () => {
      try {
        await this.client.post(path, this.certificateRequest(name, request));
      } catch (error) {
        if (!isConflict(error)) throw error; // already created before a restart: wait for it
      }
    });
    this.logger.info(
      { certificateRequest: `${namespace}/${name}`, issuer: `${this.config.issuerKind}/${this.config.issuerName}` },
      'cert-manager: created a CertificateRequest for the next intermediate; waiting for approval and issuance',
    );
    return this.waitForCertificate(`${path}/${name}`, `${namespace}/${name}`, request.signal);
  }

  private certificateRequest(name: string, request: { readonly csrPem: string; readonly ttlMs: number }): object {
    return {
      apiVersion: 'cert-manager.io/v1',
      kind: 'CertificateRequest',
      metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'meshca' } },
      spec: {
        request: Buffer.from(request.csrPem).toString('base64'),
        isCA: true,
        duration: `${Math.max(1, Math.round(request.ttlMs / 1000))}s`,
        usages: ['cert sign', 'crl sign'],
        issuerRef: { name: this.config.issuerName, kind: this.config.issuerKind, group: this.config.issuerGroup },
      },
    };
  }

  /** Polls until Ready (the certificate), Denied or Failed (refused), or the wait runs out. */
  private async waitForCertificate(path: string, ref: string, signal: AbortSignal | undefined): Promise<UpstreamCertificateFiles> {
    const deadline = Date.now() + this.config.waitMs;
    const interval = Math.max(50, Math.min(2000, this.config.waitMs / 20));
    let conditions: readonly Condition[] = [];
    while (Date.now() < deadline) {
      if (signal?.aborted)
        throw new UpstreamError('ERR_UPSTREAM_TIMEOUT', `stopped waiting for CertificateRequest ${ref} (meshca is shutting down)`);
      const cr = await this.call(`reading CertificateRequest ${ref}`, () => this.client.get<CertificateRequest>(path));
      conditions = cr.status?.conditions ?? [];
      const verdict = outcome(ref, cr, conditions);
      if (verdict) return verdict;
      await new Promise((resolve) => setTimeout(resolve, interval));
    }
    const approved = conditions.some((c) => c.type === 'Approved' && c.status === 'True');
    throw new UpstreamError(
      'ERR_UPSTREAM_TIMEOUT',
      `CertificateRequest ${ref} is not Ready after ${Math.round(this.config.waitMs / 1000)}s (${describe(conditions)}); ${approved ? 'check the issuer' : 'approve it (cmctl approve -n NAMESPACE NAME) or configure an approver for it'}`,
    );
  }

  private async call<T>(what: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (!(error instanceof KubeApiError)) throw error;
      const hint =
        error.status === 404
          ? ' (is cert-manager installed, and does the namespace exist?)'
          : error.status === 403
            ? " (meshca's service account needs create/get on certificaterequests.cert-manager.io)"
            : '';
      throw new UpstreamError(
        error.retryable ? 'ERR_UPSTREAM_UNAVAILABLE' : 'ERR_UPSTREAM_REFUSED',
        `cert-manager: ${what} failed: ${error.message}${hint}`,
        { cause: error },
      );
    }
  }
}

function outcome(ref: string, cr: CertificateRequest, conditions: readonly Condition[]): UpstreamCertificateFiles | undefined {
  const find = (type: string) => conditions.find((c) => c.type === type && c.status === 'True');
  const denied = find('Denied');
  if (denied)
    throw new UpstreamError(
      'ERR_UPSTREAM_REFUSED',
      `CertificateRequest ${ref} was denied (${denied.reason ?? 'no reason'}): ${denied.message ?? ''}`.trimEnd(),
    );
  const invalid = find('InvalidRequest');
  if (invalid)
    throw new UpstreamError(
      'ERR_UPSTREAM_REFUSED',
      `CertificateRequest ${ref} is invalid (${invalid.reason ?? 'no reason'}): ${invalid.message ?? ''}`.trimEnd(),
    );
  const ready = conditions.find((c) => c.type === 'Ready');
  if (ready?.status === 'False' && ready.reason === 'Failed')
    throw new UpstreamError('ERR_UPSTREAM_REFUSED', `CertificateRequest ${ref} failed: ${ready.message ?? 'no message'}`);
  if (ready?.status !== 'True' || !cr.status?.certificate) return undefined;
  return { certificate: decode(cr.status.certificate), chain: cr.status.ca ? decode(cr.status.ca) : '' };
}

function decode(base64: string): string {
  return Buffer.from(base64, 'base64').toString('utf8');
}

function describe(conditions: readonly Condition[]): string {
  if (conditions.length === 0) return 'no conditions yet';
  return conditions.map((c) => `${c.type}=${c.status}${c.reason ? ` (${c.reason})` : ''}`).join(', ');
}
