/**
 * istiod's serving certificate when istiod is not the CA (docs/istio.md): DNS SANs istiod.<ns>.svc
 * (+ istiod-<rev>.<ns>.svc per revision) and the istiod SPIFFE ID, in the file layout istiod reads
 * (/var/run/secrets/istiod/tls/{tls.crt,tls.key}, /var/run/secrets/istiod/ca/root-cert.pem).
 */
import { generateKeyPair, privateKeyPem } from '../pki/keys.js';
import { workloadId } from '../spiffe/id.js';
import type { IssuanceService } from './issuance.js';
import type { CertificateAuthority } from './lifecycle.js';

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
export async function issueIstiodCertificate(
  ca: CertificateAuthority,
  issuance: IssuanceService,
  request: IstiodCertificateRequest,
): Promise<IstiodCertificate> {
  const spiffeId = workloadId(request.trustDomain, request.namespace, request.serviceAccount ?? 'istiod');
  const dnsNames = istiodDnsNames(request.namespace, request.revisions);
  const { privateKey, publicKey } = await generateKeyPair('ec-p256');
  const issued = await issuance.issueProfile(
    {
      spkiDer: publicKey.export({ format: 'der', type: 'spki' }),
      uris: [spiffeId],
      dnsNames,
      ttlMs: request.ttlMs,
      callerId: request.requestedBy,
      rsaKey: false,
    },
    request.clusterId,
  );
  const roots = issued.chain.at(-1);
  return {
    files: {
      'tls.crt': issued.chain.slice(0, -1).join(''),
      'tls.key': privateKeyPem(privateKey),
      'root-cert.pem': roots || ca.current().rootsPem,
    },
    spiffeId,
    dnsNames,
    serialHex: issued.serialHex,
    notAfter: issued.notAfter,
  };
}
