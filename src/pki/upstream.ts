/**
 * Intermediates signed upstream (docs/operations/upstream.md): meshca generates the key and a PKCS#10
 * request for a pathLen-0 signing CA; whatever signs it (an offline root, Vault PKI, cert-manager)
 * returns a certificate that is checked here before meshca will ever sign with it.
 */
import { createHash, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { authorityId } from '../spiffe/id.js';
import {
  basicConstraints,
  checkValidity,
  hasKeyUsage,
  isSelfSigned,
  issuedBy,
  parseCertificate,
  signingAlgorithm,
  toPublicCryptoKey,
  toSigningKey,
  type ParsedCertificate,
} from './certificate.js';
import { PkiError } from './errors.js';
import { generateKeyPair, keyTypeOf, type KeyType } from './keys.js';
import { pemBlocks, pemEncode } from './pem.js';
import { x509 } from './x509.js';

const subtleProvider = webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1];

export interface IntermediateRequestSpec {
  readonly trustDomain: string;
  readonly keyType: KeyType;
  /** RFC 4514 distinguished name ("CN=…, O=…"); default: O=meshca, OU=<trust domain>, CN=meshca Intermediate CA <random>. */
  readonly subject?: string;
}

export interface IntermediateRequest {
  readonly privateKey: KeyObject;
  /** SHA-256 of the public key's SubjectPublicKeyInfo, hex: what names the pending authority. */
  readonly publicKeyHash: string;
  readonly csrDer: Buffer;
  readonly csrPem: string;
  readonly subject: string;
}

const MAX_SUBJECT_LENGTH = 512;

/** A new key and a CSR asking for CA:TRUE pathLen 0, keyCertSign/cRLSign and the trust domain's URI SAN. */
export async function createIntermediateRequest(spec: IntermediateRequestSpec): Promise<IntermediateRequest> {
  const spiffeId = authorityId(spec.trustDomain);
  const name = requestSubject(spec);
  const keys = await generateKeyPair(spec.keyType);
  const publicKey = await toPublicCryptoKey(keys.publicKey);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name,
      keys: { privateKey: await toSigningKey(keys.privateKey), publicKey },
      signingAlgorithm: signingAlgorithm(keyTypeOf(keys.privateKey)),
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], false),
        await x509.SubjectKeyIdentifierExtension.create(publicKey, false, subtleProvider),
      ],
    },
    subtleProvider,
  );
  const csrDer = Buffer.from(csr.rawData);
  const spki = keys.publicKey.export({ type: 'spki', format: 'der' });
  return {
    privateKey: keys.privateKey,
    publicKeyHash: createHash('sha256').update(spki).digest('hex'),
    csrDer,
    csrPem: pemEncode(csrDer, 'CERTIFICATE REQUEST'),
    subject: name.toString(),
  };
}

function requestSubject(spec: IntermediateRequestSpec): x509.Name {
  if (spec.subject === undefined) {
    return new x509.Name([
      { O: ['meshca'] },
      { OU: [spec.trustDomain] },
      { CN: [`meshca Intermediate CA ${randomBytes(8).toString('hex')}`] },
    ]);
  }
  let name: x509.Name | undefined;
  try {
    if (spec.subject.length <= MAX_SUBJECT_LENGTH) name = new x509.Name(spec.subject);
  } catch {
    name = undefined;
  }
  if (name === undefined || name.toJSON().length === 0) {
    throw new PkiError(
      'ERR_CA_SPEC_INVALID',
      `subject "${spec.subject.slice(0, 80)}" is not a distinguished name; write it like "CN=meshca cluster-1, O=Example"`,
    );
  }
  return name;
}

// ---------------------------------------------------------------------------------------------
// Attaching the signed certificate

export interface UpstreamCertificateInput {
  /** PEM: the intermediate the upstream CA signed (first certificate); anything after it joins the chain. */
  readonly certificatePem: string;
  /** PEM: upstream intermediates and the upstream root, in any order. */
  readonly chainPem: string;
  /** The pending key's SubjectPublicKeyInfo (DER). */
  readonly publicKeySpkiDer: Buffer;
  readonly trustDomain: string;
  /** The longest workload certificate meshca issues: a shorter-lived intermediate would cut leaves short. */
  readonly minLifetimeMs: number;
  readonly now: Date;
}

export interface UpstreamCertificate {
  readonly certificateDer: Buffer;
  /** Between the certificate and the root, nearest first. */
  readonly intermediateDers: readonly Buffer[];
  readonly rootDer: Buffer;
}

/** How far ahead of meshca's clock an upstream certificate's notBefore may be. */
const CLOCK_SKEW_MS = 5 * 60_000;

/** Longer paths are refused: nobody runs more than a few CA tiers, and path building stays cheap. */
const MAX_UPSTREAM_DEPTH = 8;

/**
 * Checks an upstream-signed intermediate against its pending key and builds its path to a
 * self-signed root from the certificates given. Every refusal says precisely what is wrong.
 */
export function validateUpstreamCertificate(input: UpstreamCertificateInput): UpstreamCertificate {
  const given = certificatesIn(input.certificatePem, 'certificate');
  const cert = parseCertificate(given[0]!, 'certificate');
  checkPublicKey(cert, input.publicKeySpkiDer);
  checkSigningCa(cert);
  checkTrustDomain(cert, input.trustDomain);
  // The chain may also come inside the certificate PEM (cert-manager puts it there when status.ca is empty).
  const pool = [...given.slice(1), ...certificateBlocks(input.chainPem)].map((der, i) =>
    parseCertificate(der, `chain certificate #${i + 1}`),
  );
  const path = buildPath(cert, pool);
  checkPathConstraints(path, input.now);
  checkLifetime(path, input.minLifetimeMs, input.now);
  return { certificateDer: cert.der, intermediateDers: path.slice(1, -1).map((c) => c.der), rootDer: path.at(-1)!.der };
}

function certificateBlocks(pem: string): Buffer[] {
  return pemBlocks(pem)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => b.der);
}

function certificatesIn(pem: string, what: string): Buffer[] {
  const ders = certificateBlocks(pem);
  if (ders.length === 0) throw new PkiError('ERR_PEM_MALFORMED', `${what}: no CERTIFICATE PEM block found`);
  return ders;
}

function checkPublicKey(cert: ParsedCertificate, spki: Buffer): void {
  const certified = cert.node.publicKey.export({ type: 'spki', format: 'der' });
  if (!certified.equals(spki)) {
    throw new PkiError(
      'ERR_KEY_MISMATCH',
      `the certificate (${cert.x.subject}) certifies another public key than this pending authority's; sign the CSR meshca returned for this id`,
    );
  }
}

function checkSigningCa(cert: ParsedCertificate): void {
  if (basicConstraints(cert)?.ca !== true) {
    throw new PkiError(
      'ERR_UPSTREAM_NOT_CA',
      `the certificate (${cert.x.subject}) is not a CA certificate (BasicConstraints CA:TRUE missing); sign it with the CSR's extensions (openssl: -copy_extensions copy, or an extfile with basicConstraints=critical,CA:TRUE,pathlen:0)`,
    );
  }
  if (!hasKeyUsage(cert, x509.KeyUsageFlags.keyCertSign)) {
    throw new PkiError(
      'ERR_UPSTREAM_NOT_CA',
      `the certificate (${cert.x.subject}) lacks KeyUsage keyCertSign, so it cannot sign workload certificates; sign it with keyUsage=critical,keyCertSign,cRLSign`,
    );
  }
}

/** URI SANs are optional on a signing CA, but one naming anything else than this trust domain is refused. */
function checkTrustDomain(cert: ParsedCertificate, trustDomain: string): void {
  const expected = authorityId(trustDomain);
  const uris =
    cert.x
      .getExtension(x509.SubjectAlternativeNameExtension)
      ?.names.items.filter((n) => n.type === 'url')
      .map((n) => n.value) ?? [];
  const other = uris.find((uri) => uri !== expected);
  if (other !== undefined) {
    throw new PkiError(
      'ERR_UPSTREAM_TRUST_DOMAIN',
      `the certificate's URI SAN ${other} is not this meshca's trust domain (${expected}); sign the CSR as it is, without other URI SANs`,
    );
  }
}

/** [cert, upstream intermediates…, self-signed root], each issued by the next. */
function buildPath(cert: ParsedCertificate, pool: readonly ParsedCertificate[]): ParsedCertificate[] {
  const path = [cert];
  let top = cert;
  while (!isSelfSigned(top)) {
    const issuer = pool.find((c) => !path.includes(c) && issuedBy(top, c));
    if (issuer === undefined) {
      throw new PkiError(
        'ERR_CHAIN_INVALID',
        `the chain does not verify to a root: nothing in it issued ${top === cert ? 'the certificate' : top.x.subject} (issuer ${top.x.issuer}); give every upstream intermediate and the upstream root, whose signature must verify`,
      );
    }
    if (path.length > MAX_UPSTREAM_DEPTH)
      throw new PkiError('ERR_CHAIN_INVALID', `the chain is longer than ${MAX_UPSTREAM_DEPTH} certificates`);
    path.push(issuer);
    top = issuer;
  }
  if (path.length === 1) throw new PkiError('ERR_UPSTREAM_NOT_CA', 'the certificate is self-signed; it must be signed by the upstream CA');
  return path;
}

/** Every upstream certificate is a CA, valid now, and its pathLen leaves room for the CAs below it. */
function checkPathConstraints(path: readonly ParsedCertificate[], now: Date): void {
  path.forEach((c, i) => {
    const name =
      i === 0
        ? 'the certificate'
        : i === path.length - 1
          ? `the upstream root (${c.x.subject})`
          : `the upstream intermediate ${c.x.subject}`;
    // An upstream clock a little ahead of ours must not block the attach; leaves are backdated anyway.
    checkValidity(c, name, new Date(Math.min(now.getTime() + CLOCK_SKEW_MS, Math.max(now.getTime(), c.x.notBefore.getTime()))));
    if (i === 0) return;
    const bc = basicConstraints(c);
    if (bc?.ca !== true) throw new PkiError('ERR_CHAIN_INVALID', `${name} is not a CA certificate (BasicConstraints CA:TRUE missing)`);
    // i CA certificates sit below path[i] (meshca's intermediate included), then the leaves.
    if (bc.pathLength !== undefined && bc.pathLength < i) {
      throw new PkiError(
        'ERR_UPSTREAM_PATHLEN',
        `${name} has pathLen ${bc.pathLength} but ${i} CA certificate(s) sit below it, so workload certificates issued by meshca would not verify; sign with a CA whose pathLen is at least ${i}`,
      );
    }
  });
}

function checkLifetime(path: readonly ParsedCertificate[], minLifetimeMs: number, now: Date): void {
  const first = path.reduce((a, b) => (b.x.notAfter.getTime() < a.x.notAfter.getTime() ? b : a));
  const left = first.x.notAfter.getTime() - now.getTime();
  if (left < minLifetimeMs) {
    const who = first === path[0] ? 'the certificate' : first.x.subject;
    throw new PkiError(
      'ERR_UPSTREAM_LIFETIME',
      `${who} expires at ${first.x.notAfter.toISOString()}, in ${hours(left)}h, shorter than the longest workload certificate (--max-ttl, ${hours(minLifetimeMs)}h); sign it for longer`,
    );
  }
}

function hours(ms: number): string {
  return (ms / 3_600_000).toFixed(1).replace(/\.0$/, '');
}
