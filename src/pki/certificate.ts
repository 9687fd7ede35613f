/**
 * CA certificates, plug-in CA validation and CRLs: the slow admin path (docs/architecture.md).
 * Built with @peculiar/x509 on Node's WebCrypto; checks that OpenSSL does best (signature and
 * issuer matching) use node:crypto's X509Certificate.
 */
import { X509Certificate as NodeCertificate, createHash, webcrypto, type KeyObject } from 'node:crypto';
import { authorityId } from '../spiffe/id.js';
import { PkiError } from './errors.js';
import { generateKeyPair, importPrivateKeyPem, keyTypeOf, privateKeyMatchesCertificate, type KeyType } from './keys.js';
import { pemBlocks, pemCertificates } from './pem.js';
import type { CrlReason } from './revocation-reasons.js';
import { normalizeSerialHex, randomSerial, serialToHex } from './serial.js';
import { x509 } from './x509.js';

// Passed explicitly to every x509 call, so nothing here depends on which default ./x509.js set.
const subtleProvider = webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0];

type CryptoKey = webcrypto.CryptoKey;

// ---------------------------------------------------------------------------------------------
// KeyObject <-> WebCrypto

interface SigningAlgorithm {
  readonly name: 'ECDSA' | 'RSASSA-PKCS1-v1_5';
  readonly hash: 'SHA-256' | 'SHA-384';
}

/** ECDSA hashes match the curve size; RSA is always PKCS#1 v1.5 with SHA-256 (docs/architecture.md). */
export function signingAlgorithm(type: KeyType): SigningAlgorithm {
  if (type === 'ec-p256') return { name: 'ECDSA', hash: 'SHA-256' };
  if (type === 'ec-p384') return { name: 'ECDSA', hash: 'SHA-384' };
  return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

function importAlgorithm(type: KeyType): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  if (type === 'ec-p256') return { name: 'ECDSA', namedCurve: 'P-256' };
  if (type === 'ec-p384') return { name: 'ECDSA', namedCurve: 'P-384' };
  return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}

/** Node 20 has no KeyObject.toCryptoKey, so round-trip through PKCS#8. Not extractable. */
export async function toSigningKey(key: KeyObject): Promise<CryptoKey> {
  const pkcs8 = key.export({ type: 'pkcs8', format: 'der' });
  try {
    return await webcrypto.subtle.importKey('pkcs8', pkcs8, importAlgorithm(keyTypeOf(key)), false, ['sign']);
  } finally {
    pkcs8.fill(0);
  }
}

/** Extractable, because x509 embeds the SPKI and hashes it for the SKID. */
export function toPublicCryptoKey(key: KeyObject): Promise<CryptoKey> {
  const spki = key.export({ type: 'spki', format: 'der' });
  return webcrypto.subtle.importKey('spki', spki, importAlgorithm(keyTypeOf(key)), true, ['verify']);
}

// ---------------------------------------------------------------------------------------------
// Parsing

export interface ParsedCertificate {
  readonly der: Buffer;
  readonly x: x509.X509Certificate;
  readonly node: NodeCertificate;
}

export function parseCertificate(der: Buffer, what = 'certificate'): ParsedCertificate {
  try {
    const x = new x509.X509Certificate(der);
    const node = new NodeCertificate(der);
    // Both parsers tolerate trailing bytes; a certificate is exactly one DER object.
    if (x.rawData.byteLength !== der.length || !node.raw.equals(der)) throw new Error('trailing data');
    return { der, x, node };
  } catch {
    throw new PkiError('ERR_CERT_MALFORMED', `${what} is not a valid DER X.509 certificate`);
  }
}

export function basicConstraints(c: ParsedCertificate): x509.BasicConstraintsExtension | null {
  return c.x.getExtension(x509.BasicConstraintsExtension);
}

export function hasKeyUsage(c: ParsedCertificate, flag: x509.KeyUsageFlags): boolean {
  const ku = c.x.getExtension(x509.KeyUsagesExtension);
  return ku !== null && (ku.usages & flag) !== 0;
}

/** The issuer's SKID, or the RFC 5280 method-1 value for CAs that lack one. */
async function keyIdOf(c: ParsedCertificate): Promise<string> {
  const skid = c.x.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  if (skid !== undefined) return skid;
  return (await x509.SubjectKeyIdentifierExtension.create(c.x.publicKey, false, subtleProvider)).keyId;
}

function floorToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

// ---------------------------------------------------------------------------------------------
// CA certificates

export interface CaCertificateSpec {
  readonly kind: 'root' | 'intermediate';
  readonly trustDomain: string;
  readonly keyType: KeyType;
  readonly notBefore: Date;
  /** Clamped to the issuer's notAfter for intermediates. */
  readonly notAfter: Date;
  /** Required for intermediates, forbidden for roots. */
  readonly issuer?: { readonly certificateDer: Buffer; readonly privateKey: KeyObject };
}

export interface CaCertificate {
  readonly certificateDer: Buffer;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export async function createCaCertificate(spec: CaCertificateSpec): Promise<CaCertificate> {
  const spiffeId = authorityId(spec.trustDomain); // validate before the (possibly slow) key generation
  const issuer = checkIssuer(spec);
  const { notBefore, notAfter } = caValidity(spec, issuer);
  const keys = await generateKeyPair(spec.keyType);
  const signingKey = spec.issuer?.privateKey ?? keys.privateKey;
  const serial = randomSerial();
  const subject = caSubject(spec, serialToHex(serial));
  const publicKey = await toPublicCryptoKey(keys.publicKey);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: serial.toString('hex'),
      subject,
      issuer: issuer?.x.subjectName ?? subject,
      notBefore,
      notAfter,
      publicKey,
      signingKey: await toSigningKey(signingKey),
      signingAlgorithm: signingAlgorithm(keyTypeOf(signingKey)),
      extensions: await caExtensions(spec.kind, spiffeId, publicKey, issuer),
    },
    subtleProvider,
  );
  return { certificateDer: Buffer.from(cert.rawData), privateKey: keys.privateKey, publicKey: keys.publicKey };
}

/** The parsed issuer of an intermediate, after checking it may sign a CA; undefined for a root. */
function checkIssuer(spec: CaCertificateSpec): ParsedCertificate | undefined {
  if ((spec.kind === 'intermediate') !== (spec.issuer !== undefined)) {
    throw new PkiError('ERR_CA_SPEC_INVALID', 'an intermediate needs an issuer and a root must not have one');
  }
  if (spec.issuer === undefined) return undefined;
  const cert = parseCertificate(spec.issuer.certificateDer, 'issuer certificate');
  if (!privateKeyMatchesCertificate(spec.issuer.privateKey, cert.der)) {
    throw new PkiError('ERR_KEY_MISMATCH', 'issuer private key does not match the issuer certificate');
  }
  const bc = basicConstraints(cert);
  if (bc?.ca !== true || !hasKeyUsage(cert, x509.KeyUsageFlags.keyCertSign)) {
    throw new PkiError('ERR_CHAIN_INVALID', 'issuer certificate is not a CA (needs BasicConstraints CA:TRUE and KeyUsage keyCertSign)');
  }
  if (bc.pathLength === 0) {
    throw new PkiError('ERR_CHAIN_INVALID', 'issuer certificate has pathLen 0 and may not sign another CA; issue leaves from it directly');
  }
  return cert;
}

/** Whole seconds (DER time precision), notAfter clamped to the issuer's. */
function caValidity(spec: CaCertificateSpec, issuer: ParsedCertificate | undefined): { notBefore: Date; notAfter: Date } {
  const limit = issuer?.x.notAfter.getTime() ?? Infinity;
  const notBefore = floorToSecond(spec.notBefore);
  const notAfter = floorToSecond(new Date(Math.min(spec.notAfter.getTime(), limit)));
  if (!(notAfter.getTime() > notBefore.getTime())) {
    throw new PkiError('ERR_CA_SPEC_INVALID', 'notAfter must be after notBefore (and the issuer must not expire before notBefore)');
  }
  return { notBefore, notAfter };
}

/** Unique per authority (the serial is in the CN) so same-named roots never collide in chain building. */
function caSubject(spec: CaCertificateSpec, serialHex: string): x509.JsonName {
  const role = spec.kind === 'root' ? 'Root CA' : 'Intermediate CA';
  return [{ O: ['meshca'] }, { OU: [spec.trustDomain] }, { CN: [`meshca ${role} ${serialHex.slice(0, 16)}`] }];
}

async function caExtensions(
  kind: CaCertificateSpec['kind'],
  spiffeId: string,
  publicKey: CryptoKey,
  issuer: ParsedCertificate | undefined,
): Promise<x509.Extension[]> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, kind === 'intermediate' ? 0 : undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(publicKey, false, subtleProvider),
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], false),
  ];
  if (issuer !== undefined) extensions.push(new x509.AuthorityKeyIdentifierExtension(await keyIdOf(issuer), false));
  return extensions;
}

// ---------------------------------------------------------------------------------------------
// Inspection

export interface CertificateInfo {
  /** Lowercase hex, no leading zeros. */
  readonly serialHex: string;
  readonly subject: string;
  readonly issuer: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Lowercase hex of SHA-256 over the DER. */
  readonly sha256Fingerprint: string;
  readonly isCa: boolean;
  readonly pathLength: number | undefined;
  /** False when KeyUsage is absent: meshca requires it explicitly on CAs. */
  readonly keyUsageCertSign: boolean;
  readonly keyType: KeyType | 'unsupported';
  readonly subjectKeyId: string | undefined;
  readonly authorityKeyId: string | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  /** Subject equals issuer and the signature verifies with the certificate's own key. */
  readonly selfSigned: boolean;
}

export async function describeCertificate(der: Buffer): Promise<CertificateInfo> {
  const c = parseCertificate(der);
  const bc = basicConstraints(c);
  const names = c.x.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  return {
    serialHex: serialToHex(Buffer.from(c.x.serialNumber, 'hex')),
    subject: c.x.subject,
    issuer: c.x.issuer,
    notBefore: c.x.notBefore,
    notAfter: c.x.notAfter,
    sha256Fingerprint: createHash('sha256').update(der).digest('hex'),
    isCa: bc?.ca === true,
    pathLength: bc?.ca === true ? bc.pathLength : undefined,
    keyUsageCertSign: hasKeyUsage(c, x509.KeyUsageFlags.keyCertSign),
    keyType: supportedKeyType(c.node.publicKey),
    subjectKeyId: c.x.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    authorityKeyId: c.x.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
    uris: names.filter((n) => n.type === 'url').map((n) => n.value),
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
    selfSigned: isSelfSigned(c),
  };
}

function supportedKeyType(key: KeyObject): KeyType | 'unsupported' {
  try {
    return keyTypeOf(key);
  } catch {
    return 'unsupported';
  }
}

export function isSelfSigned(c: ParsedCertificate): boolean {
  return c.node.subject === c.node.issuer && signatureVerifies(c, c);
}

function signatureVerifies(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  try {
    return child.node.verify(issuer.node.publicKey);
  } catch {
    return false; // e.g. an algorithm OpenSSL cannot verify
  }
}

/** OpenSSL's issuer check (name, AKI/SKID, keyCertSign if KeyUsage is present) plus the signature. */
export function issuedBy(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  return child.node.checkIssued(issuer.node) && signatureVerifies(child, issuer);
}

export async function verifyIssuedBy(childDer: Buffer, issuerDer: Buffer): Promise<boolean> {
  return issuedBy(parseCertificate(childDer, 'child certificate'), parseCertificate(issuerDer, 'issuer certificate'));
}

// ---------------------------------------------------------------------------------------------
// Plug-in CA (Istio's cacerts file set)

/** Contents of Istio's ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem. */
export interface PluginCaFiles {
  readonly caCert: string;
  readonly caKey: string;
  readonly certChain: string;
  readonly rootCert: string;
}

export interface PluginCa {
  readonly caCertificateDer: Buffer;
  readonly privateKey: KeyObject;
  /** Intermediates between caCert and the root, excluding both, nearest to caCert first. */
  readonly chainDers: readonly Buffer[];
  /** The root in root-cert.pem that the chain verifies to (caCert itself for a plug-in root). */
  readonly rootDer: Buffer;
  /** The other roots in root-cert.pem. */
  readonly extraRootDers: readonly Buffer[];
}

export async function validatePluginCa(files: PluginCaFiles, now: Date): Promise<PluginCa> {
  const caCert = parseCertificate(onlyCertificate(files.caCert, 'ca-cert.pem'), 'ca-cert.pem');
  const privateKey = inFile('ca-key.pem', () => importPrivateKeyPem(files.caKey));
  if (!privateKeyMatchesCertificate(privateKey, caCert.der)) {
    throw new PkiError(
      'ERR_KEY_MISMATCH',
      'ca-key.pem does not belong to ca-cert.pem; supply the private key that was certified in ca-cert.pem',
    );
  }
  checkSigningCa(caCert);
  const roots = parseRoots(files.rootCert);
  const chain = chainLinks(files.certChain, caCert, roots);
  const top = chain.at(-1) ?? caCert;
  const root = findRoot(top, roots);
  checkPath(root.der.equals(top.der) ? [caCert, ...chain] : [caCert, ...chain, root], now);
  return {
    caCertificateDer: caCert.der,
    privateKey,
    chainDers: chain.map((c) => c.der),
    rootDer: root.der,
    extraRootDers: roots.filter((r) => !r.der.equals(root.der)).map((r) => r.der),
  };
}

function inFile<T>(file: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof PkiError) throw new PkiError(err.code, `${file}: ${err.message}`);
    throw err;
  }
}

function onlyCertificate(pem: string, file: string): Buffer {
  const certs = inFile(file, () => pemCertificates(pem));
  const [only] = certs;
  if (only === undefined || certs.length !== 1) {
    throw new PkiError(
      'ERR_PEM_MALFORMED',
      `${file} must hold exactly one certificate, found ${certs.length}; put intermediates in cert-chain.pem`,
    );
  }
  return only;
}

function checkSigningCa(caCert: ParsedCertificate): void {
  if (basicConstraints(caCert)?.ca !== true || !hasKeyUsage(caCert, x509.KeyUsageFlags.keyCertSign)) {
    throw new PkiError(
      'ERR_CHAIN_INVALID',
      `ca-cert.pem (${caCert.x.subject}) is not a signing CA: it needs BasicConstraints CA:TRUE and KeyUsage keyCertSign; issue a CA certificate for meshca from your root`,
    );
  }
}

/** Every certificate in root-cert.pem must be a self-signed CA: they all go into the trust bundle. */
function parseRoots(pem: string): ParsedCertificate[] {
  return inFile('root-cert.pem', () => pemCertificates(pem)).map((der, i) => {
    const root = parseCertificate(der, `root-cert.pem certificate #${i + 1}`);
    if (basicConstraints(root)?.ca !== true || !isSelfSigned(root)) {
      throw new PkiError(
        'ERR_CHAIN_INVALID',
        `root-cert.pem certificate #${i + 1} (${root.x.subject}) is not a self-signed CA certificate; root-cert.pem must hold only root certificates`,
      );
    }
    return root;
  });
}

/** cert-chain.pem minus a leading copy of ca-cert (Istio writes one) and trailing roots. */
function chainLinks(pem: string, caCert: ParsedCertificate, roots: readonly ParsedCertificate[]): ParsedCertificate[] {
  const ders = pemBlocks(pem)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => b.der);
  if (ders[0]?.equals(caCert.der)) ders.shift();
  const isRoot = (der: Buffer | undefined) => der !== undefined && roots.some((r) => r.der.equals(der));
  while (isRoot(ders.at(-1))) ders.pop();
  return ders.map((der, i) => parseCertificate(der, `cert-chain.pem certificate #${i + 1}`));
}

function findRoot(top: ParsedCertificate, roots: readonly ParsedCertificate[]): ParsedCertificate {
  const root = roots.find((r) => r.der.equals(top.der) || issuedBy(top, r));
  if (root !== undefined) return root;
  const hint = isSelfSigned(top)
    ? `it is a self-signed root, so add it to root-cert.pem`
    : `its issuer (${top.x.issuer}) is not in root-cert.pem; add that root, or the missing intermediates to cert-chain.pem`;
  throw new PkiError('ERR_CHAIN_INVALID', `the chain from ca-cert.pem ends at ${top.x.subject}, which is not trusted: ${hint}`);
}

/** path = [caCert, ...intermediates, root] (just [caCert] for a plug-in root): links chain, all are CAs within pathLen, all valid now. */
function checkPath(path: readonly ParsedCertificate[], now: Date): void {
  path.forEach((cert, i) => {
    const name = i === 0 ? 'ca-cert.pem' : i === path.length - 1 ? 'the root' : `cert-chain.pem certificate #${i}`;
    checkValidity(cert, name, now);
    const next = path[i + 1];
    if (next !== undefined && !issuedBy(cert, next)) {
      throw new PkiError(
        'ERR_CHAIN_INVALID',
        `${name} (${cert.x.subject}) was not issued by ${next.x.subject}; order cert-chain.pem from ca-cert.pem up to the root`,
      );
    }
    const bc = basicConstraints(cert);
    if (bc?.ca !== true)
      throw new PkiError('ERR_CHAIN_INVALID', `${name} (${cert.x.subject}) is not a CA certificate (BasicConstraints CA:TRUE missing)`);
    // A CA at position i has i intermediates below it (caCert included, leaves not counted).
    if (bc.pathLength !== undefined && bc.pathLength < i) {
      throw new PkiError(
        'ERR_CHAIN_INVALID',
        `${name} (${cert.x.subject}) has pathLen ${bc.pathLength}, too small for ${i} CA certificate(s) below it`,
      );
    }
  });
}

export function checkValidity(cert: ParsedCertificate, name: string, now: Date): void {
  if (now.getTime() > cert.x.notAfter.getTime()) {
    throw new PkiError(
      'ERR_CERT_EXPIRED',
      `${name} (${cert.x.subject}) expired at ${cert.x.notAfter.toISOString()}; renew it and import again`,
    );
  }
  if (now.getTime() < cert.x.notBefore.getTime()) {
    throw new PkiError(
      'ERR_CERT_NOT_YET_VALID',
      `${name} (${cert.x.subject}) is not valid before ${cert.x.notBefore.toISOString()}; check the clock or wait`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// CRL

export type { CrlReason };

export interface CrlEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  readonly reason: CrlReason;
}

export interface CrlSpec {
  readonly issuerCertificateDer: Buffer;
  readonly issuerKey: KeyObject;
  readonly crlNumber: number;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly entries: readonly CrlEntry[];
}

const CRL_NUMBER_OID = '2.5.29.20';

/** RFC 5280 v2 CRL (DER) with CRLNumber, AKI and per-entry reason codes. */
export async function createCrl(spec: CrlSpec): Promise<Buffer> {
  const issuer = parseCertificate(spec.issuerCertificateDer, 'CRL issuer certificate');
  checkCrlSpec(spec, issuer);
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.x.subjectName,
      thisUpdate: spec.thisUpdate,
      nextUpdate: spec.nextUpdate,
      extensions: [
        new x509.Extension(CRL_NUMBER_OID, false, derInteger(BigInt(spec.crlNumber))),
        new x509.AuthorityKeyIdentifierExtension(await keyIdOf(issuer), false),
      ],
      entries: spec.entries.map(crlEntry),
      signingKey: await toSigningKey(spec.issuerKey),
      signingAlgorithm: signingAlgorithm(keyTypeOf(spec.issuerKey)),
    },
    subtleProvider,
  );
  return Buffer.from(crl.rawData);
}

function checkCrlSpec(spec: CrlSpec, issuer: ParsedCertificate): void {
  if (!privateKeyMatchesCertificate(spec.issuerKey, issuer.der)) {
    throw new PkiError('ERR_KEY_MISMATCH', 'CRL issuer key does not match the issuer certificate');
  }
  if (!hasKeyUsage(issuer, x509.KeyUsageFlags.cRLSign)) {
    throw new PkiError('ERR_CHAIN_INVALID', 'CRL issuer certificate lacks KeyUsage cRLSign, so relying parties would reject its CRLs');
  }
  if (!Number.isSafeInteger(spec.crlNumber) || spec.crlNumber < 0) {
    throw new PkiError('ERR_CRL_SPEC_INVALID', `CRL number must be a non-negative integer, got ${spec.crlNumber}`);
  }
  if (!(spec.nextUpdate.getTime() > spec.thisUpdate.getTime())) {
    throw new PkiError('ERR_CRL_SPEC_INVALID', 'CRL nextUpdate must be after thisUpdate');
  }
  const serials = spec.entries.map((e) => normalizeSerialHex(e.serialHex));
  const bad = serials.indexOf(undefined);
  if (bad !== -1)
    throw new PkiError('ERR_CRL_SPEC_INVALID', `CRL entry #${bad + 1} has an invalid serial "${spec.entries[bad]?.serialHex}"`);
  if (new Set(serials).size !== serials.length) throw new PkiError('ERR_CRL_SPEC_INVALID', 'CRL entries contain a serial more than once');
}

/** "unspecified" gets no reasonCode extension, as RFC 5280 §5.3.1 recommends. */
function crlEntry(entry: CrlEntry): x509.X509CrlEntryParams {
  const serialNumber = evenHex(normalizeSerialHex(entry.serialHex)!);
  const base = { serialNumber, revocationDate: entry.revokedAt };
  return entry.reason === 'unspecified' ? base : { ...base, reason: x509.X509CrlReason[entry.reason] };
}

function evenHex(hex: string): string {
  return hex.length % 2 === 0 ? hex : `0${hex}`;
}

/** DER INTEGER for a non-negative value (CRLNumber). */
function derInteger(value: bigint): Buffer {
  let content = Buffer.from(evenHex(value.toString(16)), 'hex');
  if (content.readUInt8(0) & 0x80) content = Buffer.concat([Buffer.from([0]), content]);
  return Buffer.concat([Buffer.from([0x02, content.length]), content]);
}
