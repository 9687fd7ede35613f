/**
 * istiod's serving certificate when istiod is not the CA (docs/architecture.md): DNS SANs istiod.<ns>.svc
 * (+ istiod-<rev>.<ns>.svc per revision) and the istiod SPIFFE ID, in the file layout istiod reads
 * (/var/run/secrets/istiod/tls/{tls.crt,tls.key}, /var/run/secrets/istiod/ca/root-cert.pem), and
 * optionally kept in Secret istiod-tls, renewed before 2/3 of its lifetime.
 */

import { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import type { IssuanceService } from '../authority/issuance.js';
import type { CertificateAuthority } from '../authority/lifecycle.js';
import { generateKeyPair, privateKeyPem } from '../pki/keys.js';
import { workloadId } from '../spiffe/id.js';
import { Resource } from './api.js';
import type { KubeClient } from './client.js';
import type { Secret } from './types.js';

export const ISTIOD_SECRET = 'istiod-tls';

export interface IstiodCertificateRequest {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly revisions: readonly string[];
  /** Default "istiod". */
  readonly serviceAccount?: string;
  readonly ttlMs: number;
  /** Recorded as the caller of the issuance (audit). */
  readonly requestedBy: string;
  readonly clusterId: string;
}

/** File name → PEM, exactly what istiod mounts. */
export interface IstiodFiles {
  readonly 'tls.crt': string;
  readonly 'tls.key': string;
  readonly 'root-cert.pem': string;
}

export interface IstiodCertificate {
  readonly files: IstiodFiles;
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  readonly serialHex: string;
  readonly notAfter: Date;
}

export function istiodDnsNames(namespace: string, revisions: readonly string[]): string[] {
  const names = [`istiod.${namespace}.svc`, ...revisions.filter((r) => r !== 'default').map((r) => `istiod-${r}.${namespace}.svc`)];
  return [...new Set(names)];
}

/** Issues a certificate for a fresh ECDSA P-256 key that never leaves this call's result. */
export async function issueIstiodCertificate(ca: CertificateAuthority, issuance: IssuanceService, request: IstiodCertificateRequest): Promise<IstiodCertificate> {
  const spiffeId = workloadId(request.trustDomain, request.namespace, request.serviceAccount ?? 'istiod');
  const dnsNames = istiodDnsNames(request.namespace, request.revisions);
  const { privateKey, publicKey } = await generateKeyPair('ec-p256');
  const issued = await issuance.issueProfile(
    { spkiDer: publicKey.export({ format: 'der', type: 'spki' }), uris: [spiffeId], dnsNames, ttlMs: request.ttlMs, callerId: request.requestedBy, rsaKey: false },
    request.clusterId,
  );
  const roots = issued.chain.at(-1);
  return {
    files: { 'tls.crt': issued.chain.slice(0, -1).join(''), 'tls.key': privateKeyPem(privateKey), 'root-cert.pem': roots || ca.current().rootsPem },
    spiffeId,
    dnsNames,
    serialHex: issued.serialHex,
    notAfter: issued.notAfter,
  };
}

export function istiodSecret(namespace: string, files: IstiodFiles): Secret {
  const b64 = (text: string) => Buffer.from(text).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: { name: ISTIOD_SECRET, namespace, labels: { 'app.kubernetes.io/managed-by': 'meshca' } },
    data: { 'tls.crt': b64(files['tls.crt']), 'tls.key': b64(files['tls.key']), 'root-cert.pem': b64(files['root-cert.pem']) },
  };
}

/** Creates or updates Secret istiod-tls, keeping any other keys, labels and annotations it has. */
export function writeIstiodSecret(client: KubeClient, namespace: string, files: IstiodFiles, stillAllowed: () => boolean = () => true): Promise<'created' | 'updated' | 'unchanged'> {
  const fresh = istiodSecret(namespace, files);
  return Resource.secrets(client).upsert(namespace, ISTIOD_SECRET, (current) => {
    if (!stillAllowed()) return undefined; // e.g. leadership lost meanwhile
    return current === undefined ? fresh : { ...current, data: { ...(current.data ?? {}), ...fresh.data } };
  });
}

/**
 * Why an existing Secret must be replaced, or undefined if it is still good: missing or unreadable,
 * past 2/3 of its lifetime, for other DNS names, or carrying other roots than the current bundle.
 */
export function renewalReason(secret: Secret | undefined, want: { readonly rootsPem: string; readonly dnsNames: readonly string[] }, now = new Date()): string | undefined {
  if (secret === undefined) return 'missing';
  const text = (key: string) => Buffer.from(secret.data?.[key] ?? '', 'base64').toString('utf8');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(text('tls.crt'));
  } catch {
    return 'unreadable tls.crt';
  }
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  if (now.getTime() >= from + ((to - from) * 2) / 3) return 'past 2/3 of its lifetime';
  const sans = new Set((leaf.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4)));
  if (want.dnsNames.length !== sans.size || want.dnsNames.some((name) => !sans.has(name))) return 'DNS names changed';
  if (text('root-cert.pem') !== want.rootsPem) return 'trust bundle changed';
  return undefined;
}

export interface IstiodSecretKeeperOptions {
  readonly client: KubeClient;
  readonly ca: CertificateAuthority;
  readonly issuance: IssuanceService;
  readonly request: IstiodCertificateRequest;
  readonly logger: Logger;
  /** How often the Secret is re-checked (default: a tenth of the TTL, between 1 s and 10 min). */
  readonly checkIntervalMs?: number;
}

/** A leader task keeping Secret istiod-tls current. */
export class IstiodSecretKeeper {
  readonly #options: IstiodSecretKeeperOptions;
  readonly #secrets: Resource<Secret>;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #checking: Promise<void> | undefined;

  constructor(options: IstiodSecretKeeperOptions) {
    this.#options = options;
    this.#secrets = Resource.secrets(options.client);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop();
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
  }

  /** The bundle changed: re-check now. */
  bundleChanged(): void {
    if (this.#running) void this.check();
  }

  check(): Promise<void> {
    this.#checking ??= this.#check().finally(() => (this.#checking = undefined));
    return this.#checking;
  }

  #loop(): void {
    if (!this.#running) return;
    void this.check().finally(() => {
      if (!this.#running) return;
      const interval = this.#options.checkIntervalMs ?? Math.min(600_000, Math.max(1_000, this.#options.request.ttlMs / 10));
      this.#timer = setTimeout(() => this.#loop(), interval);
      this.#timer.unref();
    });
  }

  async #check(): Promise<void> {
    const { request, ca, client, logger } = this.#options;
    const secret = `${request.namespace}/${ISTIOD_SECRET}`;
    try {
      const reason = renewalReason(await this.#secrets.get(request.namespace, ISTIOD_SECRET), { rootsPem: ca.current().rootsPem, dnsNames: istiodDnsNames(request.namespace, request.revisions) });
      if (reason === undefined || !this.#running) return;
      const issued = await issueIstiodCertificate(ca, this.#options.issuance, request);
      const outcome = await writeIstiodSecret(client, request.namespace, issued.files, () => this.#running);
      logger.info({ secret, reason, outcome, serial: issued.serialHex, notAfter: issued.notAfter }, 'wrote istiod serving certificate Secret');
    } catch (error) {
      logger.warn({ err: error, secret }, 'cannot update Secret istiod-tls; retrying at the next check');
    }
  }
}
