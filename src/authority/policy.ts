import type { CertificationRequest } from '../pki/csr.js';
import { IssuanceError } from './errors.js';

const OID_ORGANIZATION = '2.5.4.10';
const MIN_RSA_BITS = 2048;
/** Upper bound keeps a hostile CSR from making us verify with an enormous modulus. */
const MAX_RSA_BITS = 8192;
/** Extensions a workload CSR may request; we ignore their values and apply our own profile. */
const ALLOWED_EXTENSIONS = new Set([
  '2.5.29.17', // subjectAltName
  '2.5.29.19', // basicConstraints (cA=false only)
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extKeyUsage
  '2.5.29.14', // subjectKeyIdentifier
]);

export interface LifetimePolicy {
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
  /** NotBefore is backdated by this much to absorb clock skew between nodes. */
  readonly backdateMs: number;
}

export interface Lifetime {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** What a CSR may contain for a given profile (docs/architecture.md: strict by default, like istio-csr). */
export interface CsrProfile {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
}

/**
 * The strict CSR policy: the CSR must ask for exactly the identity the caller owns, and nothing
 * else a workload certificate should not carry. Signature verification happens separately (async).
 */
export class IssuancePolicy {
  constructor(readonly lifetime: LifetimePolicy) {}

  checkCsr(csr: CertificationRequest, profile: CsrProfile): void {
    checkKey(csr);
    checkSubject(csr);
    checkExtensions(csr);
    checkNames(csr, profile);
  }

  /** validity_duration ≤ 0 → default; above max → clamped; never beyond the issuer. */
  validity(requestedSeconds: number, now: Date, issuerNotAfter: Date): Lifetime {
    const requestedMs = requestedSeconds > 0 ? requestedSeconds * 1000 : this.lifetime.defaultTtlMs;
    const ttl = Math.min(requestedMs, this.lifetime.maxTtlMs);
    const notAfter = Math.min(now.getTime() + ttl, issuerNotAfter.getTime());
    return { notBefore: new Date(now.getTime() - this.lifetime.backdateMs), notAfter: new Date(notAfter) };
  }
}

function reject(message: string): never {
  throw new IssuanceError('ERR_CSR_REJECTED', message);
}

function checkKey(csr: CertificationRequest): void {
  if (csr.keyAlgorithm !== 'rsa') return;
  const bits = csr.rsaModulusBits ?? 0;
  if (bits < MIN_RSA_BITS) reject(`RSA key of ${bits} bits is too weak: use RSA ≥ ${MIN_RSA_BITS} or ECDSA P-256/P-384`);
  if (bits > MAX_RSA_BITS) reject(`RSA key of ${bits} bits is larger than the supported ${MAX_RSA_BITS}`);
}

function checkSubject(csr: CertificationRequest): void {
  for (const attribute of csr.subject) {
    if (attribute.oid !== OID_ORGANIZATION) {
      reject(`CSR subject may be empty or contain only O=; found attribute ${attribute.oid} (remove the CN and other subject fields)`);
    }
  }
}

function checkExtensions(csr: CertificationRequest): void {
  if (csr.requestsCa) reject('CSR requests a CA certificate (basicConstraints cA=true); workloads get leaf certificates only');
  for (const oid of csr.extensionOids) {
    if (!ALLOWED_EXTENSIONS.has(oid)) reject(`CSR requests extension ${oid}, which the workload profile does not allow`);
  }
}

function checkNames(csr: CertificationRequest, profile: CsrProfile): void {
  if (csr.ipAddresses.length > 0) reject('CSR must not contain IP address SANs');
  if (csr.emails.length > 0) reject('CSR must not contain email SANs');
  if (csr.otherSanCount > 0) reject('CSR contains SAN types other than URI');
  if (!sameSet(csr.dnsNames, profile.dnsNames)) {
    reject(profile.dnsNames.length === 0 ? 'CSR must not contain DNS SANs' : `CSR DNS SANs must be exactly ${profile.dnsNames.join(', ')}`);
  }
  if (csr.uris.length === 0) reject(`CSR has no URI SAN; it must ask for ${profile.uris.join(', ')}`);
  if (!sameSet(csr.uris, profile.uris)) {
    throw new IssuanceError(
      'ERR_IDENTITY_MISMATCH',
      `CSR must ask for exactly the caller's identity ${profile.uris.join(', ')}; it asks for ${csr.uris.join(', ')}`,
    );
  }
}

function sameSet(actual: readonly string[], expected: readonly string[]): boolean {
  return actual.length === expected.length && expected.every((name) => actual.includes(name));
}
