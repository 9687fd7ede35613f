/**
 * PKCS#10 (RFC 2986) certification requests: a strict parser over our DER reader and an
 * asynchronous signature check. Policy (which SANs are allowed, minimum RSA size) is the
 * caller's job; this module only reports what the request says, faithfully.
 */
import { constants, verify, type VerifyJsonWebKeyInput, type VerifyPublicKeyInput } from 'node:crypto';
import { DerReader, Tag, contextTag, isStringTag, type DerElement } from './der.js';
import { PkiError } from './errors.js';
import { pemDecodeOne } from './pem.js';

export type CsrKeyAlgorithm = 'ec-p256' | 'ec-p384' | 'rsa';
export type CsrSignatureAlgorithm =
  | 'ecdsa-sha256'
  | 'ecdsa-sha384'
  | 'ecdsa-sha512'
  | 'rsa-pkcs1-sha256'
  | 'rsa-pkcs1-sha384'
  | 'rsa-pkcs1-sha512'
  | 'rsa-pss';
export type CsrSignatureHash = 'sha256' | 'sha384' | 'sha512';

export interface SubjectAttribute {
  readonly oid: string;
  /** Decoded string value; values that are not strings are '#' + hex of their DER (RFC 4514). */
  readonly value: string;
}

export interface CertificationRequest extends RequestedExtensions {
  readonly der: Buffer;
  /** The SubjectPublicKeyInfo, raw DER bytes. */
  readonly spkiDer: Buffer;
  readonly keyAlgorithm: CsrKeyAlgorithm;
  /** For RSA: exact bit length of the modulus. */
  readonly rsaModulusBits: number | undefined;
  /** Every attribute of every RDN, in order. */
  readonly subject: readonly SubjectAttribute[];
  readonly signatureAlgorithm: CsrSignatureAlgorithm;
  /** The signed bytes (certificationRequestInfo TLV), a view into `der`. */
  readonly certificationRequestInfoDer: Buffer;
  /** Signature BIT STRING contents (DER ECDSA-Sig-Value for ECDSA). */
  readonly signatureValue: Buffer;
  readonly signatureHash: CsrSignatureHash;
  /** RSASSA-PSS salt length; undefined for other algorithms. */
  readonly pssSaltLength: number | undefined;
}

/** Far above any real CSR (~1-2 KiB); bounds work on hostile input. */
export const MAX_CSR_DER_BYTES = 64 * 1024;
/** RSA verify cost grows with modulus size; nobody needs more than this for a workload key. */
const MAX_RSA_MODULUS_BITS = 8192;

const OID = {
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsassaPss: '1.2.840.113549.1.1.10',
  mgf1: '1.2.840.113549.1.1.8',
} as const;

const CURVES: ReadonlyMap<string, { algorithm: CsrKeyAlgorithm; pointBytes: number }> = new Map([
  ['1.2.840.10045.3.1.7', { algorithm: 'ec-p256', pointBytes: 32 }],
  ['1.3.132.0.34', { algorithm: 'ec-p384', pointBytes: 48 }],
]);

const HASHES: ReadonlyMap<string, CsrSignatureHash> = new Map([
  ['2.16.840.1.101.3.4.2.1', 'sha256'],
  ['2.16.840.1.101.3.4.2.2', 'sha384'],
  ['2.16.840.1.101.3.4.2.3', 'sha512'],
]);

interface SignatureScheme {
  readonly name: CsrSignatureAlgorithm;
  readonly hash: CsrSignatureHash;
  readonly keyFamily: 'ec' | 'rsa';
}

const SIMPLE_SIGNATURES: ReadonlyMap<string, SignatureScheme> = new Map([
  ['1.2.840.10045.4.3.2', { name: 'ecdsa-sha256', hash: 'sha256', keyFamily: 'ec' }],
  ['1.2.840.10045.4.3.3', { name: 'ecdsa-sha384', hash: 'sha384', keyFamily: 'ec' }],
  ['1.2.840.10045.4.3.4', { name: 'ecdsa-sha512', hash: 'sha512', keyFamily: 'ec' }],
  ['1.2.840.113549.1.1.11', { name: 'rsa-pkcs1-sha256', hash: 'sha256', keyFamily: 'rsa' }],
  ['1.2.840.113549.1.1.12', { name: 'rsa-pkcs1-sha384', hash: 'sha384', keyFamily: 'rsa' }],
  ['1.2.840.113549.1.1.13', { name: 'rsa-pkcs1-sha512', hash: 'sha512', keyFamily: 'rsa' }],
]);

const PEM_LABELS = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] as const;

export function parseCsr(pem: string): CertificationRequest {
  if (pem.length > MAX_CSR_DER_BYTES * 2) throw new PkiError('ERR_PEM_MALFORMED', 'CSR PEM too large');
  return parseCsrDer(pemDecodeOne(pem, PEM_LABELS));
}

export function parseCsrDer(der: Buffer): CertificationRequest {
  if (der.length === 0) throw new PkiError('ERR_CSR_MALFORMED', 'empty CSR');
  if (der.length > MAX_CSR_DER_BYTES) throw new PkiError('ERR_CSR_MALFORMED', 'CSR too large');
  const r: DerReader = new DerReader(der, 'ERR_CSR_MALFORMED');
  const [infoEl, sigAlgEl, sigEl] = exactly(r, r.sequence(r.top(), 'CertificationRequest'), 3, 'CertificationRequest');
  const info = r.sequence(infoEl, 'certificationRequestInfo');
  const [versionEl, subjectEl, spkiEl, attributesEl, ...extra] = info;
  if (!versionEl || !subjectEl || !spkiEl || extra.length > 0) r.fail('certificationRequestInfo: wrong number of fields');
  if (r.smallInteger(versionEl, 'version') !== 0) r.fail('version must be 0 (v1)');
  const subject = parseName(r, subjectEl);
  const key = parseSubjectPublicKey(r, spkiEl);
  // RFC 2986 makes [0] mandatory, but an absent one means "no attributes" unambiguously.
  const requested = attributesEl === undefined ? NO_EXTENSIONS : parseAttributes(r, attributesEl);
  const scheme = parseSignatureAlgorithm(r, sigAlgEl);
  if (scheme.keyFamily !== (key.algorithm === 'rsa' ? 'rsa' : 'ec')) {
    throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', `${scheme.name} does not match a ${key.algorithm} key`);
  }
  return {
    der,
    spkiDer: r.raw(spkiEl),
    keyAlgorithm: key.algorithm,
    rsaModulusBits: key.rsaModulusBits,
    subject,
    ...requested,
    signatureAlgorithm: scheme.name,
    certificationRequestInfoDer: r.raw(infoEl),
    signatureValue: r.bitString(sigEl, 'signature'),
    signatureHash: scheme.hash,
    pssSaltLength: scheme.pssSaltLength,
  };
}

/**
 * Checks the self-signature on the libuv threadpool (node:crypto's callback form), so a burst
 * of CSRs does not block the event loop. False for a wrong signature; a public key OpenSSL
 * cannot load is ERR_CSR_UNSUPPORTED_KEY.
 */
/** Everything a signature check needs, as plain cloneable data (for the verifier threads). */
export type SignatureCheck = {
  readonly hash: string;
  readonly data: Buffer;
  readonly signature: Buffer;
} & (
  | { readonly key: VerifyPublicKeyInput | VerifyJsonWebKeyInput }
  /** An uncompressed EC point: the verifier thread imports it through WebCrypto's raw format (cheaper than JWK). */
  | { readonly ecPoint: EcPublicPoint }
);

/** Per check: 1 valid, 0 invalid, or the message of the error the key or signature raised. */
export type CheckResult = 0 | 1 | string;

export interface EcPublicPoint {
  readonly namedCurve: 'P-256' | 'P-384';
  /** 0x04 || X || Y. */
  readonly point: Buffer;
}

/** Exact-size copies: posting a view of a pooled Buffer would clone its whole 8 KiB slab. */
export function signatureCheck(csr: CertificationRequest): SignatureCheck {
  const signed = { hash: csr.signatureHash, data: exactCopy(csr.certificationRequestInfoDer), signature: exactCopy(csr.signatureValue) };
  const ecPoint = ecPublicPoint(csr);
  if (ecPoint) return { ...signed, ecPoint };
  const key = verificationKey(csr);
  const portableKey = Buffer.isBuffer(key.key) ? { ...key, key: exactCopy(key.key) } : key;
  return { ...signed, key: portableKey as VerifyPublicKeyInput | VerifyJsonWebKeyInput };
}

/** The uncompressed point of an EC key; undefined for RSA and compressed points (those keep the JWK/SPKI path). */
function ecPublicPoint(csr: CertificationRequest): EcPublicPoint | undefined {
  if (csr.keyAlgorithm === 'rsa') return undefined;
  const r = new DerReader(csr.spkiDer, 'ERR_CSR_MALFORMED');
  const [, keyEl] = exactly(r, r.sequence(r.top(), 'subjectPublicKeyInfo'), 2, 'subjectPublicKeyInfo');
  const point = r.bitString(keyEl, 'subjectPublicKey');
  if (point[0] !== 0x04) return undefined;
  return { namedCurve: csr.keyAlgorithm === 'ec-p256' ? 'P-256' : 'P-384', point: exactCopy(point) };
}

function exactCopy(bytes: Buffer): Buffer {
  const copy = new Uint8Array(bytes);
  return Buffer.from(copy.buffer, 0, copy.byteLength);
}

export function verifyCsrSignature(csr: CertificationRequest): Promise<boolean> {
  return new Promise((resolve, reject) => {
    try {
      const key = verificationKey(csr);
      verify(csr.signatureHash, csr.certificationRequestInfoDer, key, csr.signatureValue, (err, ok) => {
        if (err) reject(new PkiError('ERR_CSR_UNSUPPORTED_KEY', `signature check failed: ${err.message}`));
        else resolve(ok);
      });
    } catch (err) {
      // Key decoding happens synchronously inside verify(); an undecodable key lands here.
      if (err instanceof PkiError) reject(err);
      else reject(new PkiError('ERR_CSR_UNSUPPORTED_KEY', `cannot load CSR public key: ${(err as Error).message}`));
    }
  });
}

/**
 * The same check on the calling thread. It needs the least CPU of the three ways (no hand-off to
 * another thread), which is what counts when the server has a single core to itself.
 */
export function verifyCsrSignatureNow(csr: CertificationRequest): boolean {
  let key: VerifyPublicKeyInput | VerifyJsonWebKeyInput;
  try {
    key = verificationKey(csr);
  } catch (err) {
    if (err instanceof PkiError) throw err;
    throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `cannot load CSR public key: ${(err as Error).message}`);
  }
  try {
    return verify(csr.signatureHash, csr.certificationRequestInfoDer, key, csr.signatureValue);
  } catch (err) {
    throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `signature check failed: ${(err as Error).message}`);
  }
}

const JWK_CURVES: Readonly<Record<CsrKeyAlgorithm, string>> = { 'ec-p256': 'P-256', 'ec-p384': 'P-384', rsa: '' };

/**
 * verify() decodes the key synchronously on the event loop, and OpenSSL 3.0's SPKI decoder
 * costs ~135 µs per call. PKCS#1 DER (RSA, ~3 µs) and JWK (EC, ~75 µs) take faster paths;
 * the SPKI remains the fallback for compressed EC points.
 */
function verificationKey(csr: CertificationRequest): VerifyPublicKeyInput | VerifyJsonWebKeyInput {
  const r = new DerReader(csr.spkiDer, 'ERR_CSR_MALFORMED');
  const spki = r.sequence(r.top(), 'subjectPublicKeyInfo');
  const [, keyEl] = exactly(r, spki, 2, 'subjectPublicKeyInfo');
  const keyBits = r.bitString(keyEl, 'subjectPublicKey');
  const signing = csr.signatureAlgorithm === 'rsa-pss' ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: csr.pssSaltLength } : {};
  if (csr.keyAlgorithm === 'rsa') return { key: keyBits, format: 'der', type: 'pkcs1', ...signing };
  if (keyBits[0] !== 0x04) return { key: csr.spkiDer, format: 'der', type: 'spki' };
  const half = (keyBits.length - 1) / 2;
  const x = keyBits.toString('base64url', 1, 1 + half);
  const y = keyBits.toString('base64url', 1 + half);
  return { key: { kty: 'EC', crv: JWK_CURVES[csr.keyAlgorithm], x, y }, format: 'jwk' };
}

/** `count` elements as a tuple of that length, so destructured fields need no `!`. */
type Fields<N extends number, T extends DerElement[] = []> = T['length'] extends N ? T : Fields<N, [...T, DerElement]>;

function exactly<N extends 1 | 2 | 3>(r: DerReader, els: DerElement[], count: N, what: string): Fields<N> {
  if (els.length !== count) r.fail(`${what}: expected ${count} fields, found ${els.length}`);
  return els as Fields<N>;
}

function parseName(r: DerReader, nameEl: DerElement): SubjectAttribute[] {
  const out: SubjectAttribute[] = [];
  for (const rdn of r.sequence(nameEl, 'subject')) {
    const attributes = r.sequence(rdn, 'subject RDN', Tag.SET);
    if (attributes.length === 0) r.fail('subject: empty RDN');
    for (const atv of attributes) {
      const [typeEl, valueEl] = exactly(r, r.sequence(atv, 'subject attribute'), 2, 'subject attribute');
      const oid = r.oid(typeEl, 'subject attribute type');
      const value = isStringTag(valueEl.tag) ? r.string(valueEl, 'subject attribute value') : '#' + r.raw(valueEl).toString('hex');
      out.push({ oid, value });
    }
  }
  return out;
}

interface SubjectKey {
  readonly algorithm: CsrKeyAlgorithm;
  readonly rsaModulusBits: number | undefined;
}

function parseSubjectPublicKey(r: DerReader, spkiEl: DerElement): SubjectKey {
  const [algEl, keyEl] = exactly(r, r.sequence(spkiEl, 'subjectPublicKeyInfo'), 2, 'subjectPublicKeyInfo');
  const [oidEl, paramsEl, ...extra] = r.sequence(algEl, 'subjectPublicKeyInfo algorithm');
  if (oidEl === undefined || extra.length > 0) r.fail('subjectPublicKeyInfo algorithm: wrong number of fields');
  const keyOid = r.oid(oidEl, 'public key algorithm');
  const keyBits = r.bitString(keyEl, 'subjectPublicKey');
  if (keyOid === OID.ecPublicKey) return { algorithm: parseEcKey(r, paramsEl, keyBits), rsaModulusBits: undefined };
  if (keyOid === OID.rsaEncryption) {
    if (paramsEl !== undefined) r.null(paramsEl, 'rsaEncryption parameters');
    return { algorithm: 'rsa', rsaModulusBits: parseRsaKey(r, keyEl) };
  }
  throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `unsupported public key algorithm ${keyOid}`);
}

function parseEcKey(r: DerReader, paramsEl: DerElement | undefined, point: Buffer): CsrKeyAlgorithm {
  if (paramsEl?.tag !== Tag.OID) throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', 'EC key must name its curve');
  const curveOid = r.oid(paramsEl, 'EC curve');
  const curve = CURVES.get(curveOid);
  if (curve === undefined) throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `unsupported EC curve ${curveOid}`);
  const uncompressed = point[0] === 0x04 && point.length === 1 + 2 * curve.pointBytes;
  const compressed = (point[0] === 0x02 || point[0] === 0x03) && point.length === 1 + curve.pointBytes;
  if (!uncompressed && !compressed) r.fail(`EC point has the wrong form or length for ${curve.algorithm}`);
  return curve.algorithm;
}

/** Modulus bit length of an RSAPublicKey; the BIT STRING's content is itself DER. */
function parseRsaKey(r: DerReader, keyEl: DerElement): number {
  const inner = r.elementAt(keyEl.contentStart + 1, keyEl.end, keyEl.depth + 1);
  if (inner.end !== keyEl.end) r.fail('RSAPublicKey: trailing bytes');
  const [modulusEl, exponentEl] = exactly(r, r.sequence(inner, 'RSAPublicKey'), 2, 'RSAPublicKey');
  const modulus = r.integer(modulusEl, 'RSA modulus');
  const exponent = r.integer(exponentEl, 'RSA public exponent');
  if (modulus.readUInt8(0) & 0x80 || exponent.readUInt8(0) & 0x80) r.fail('RSA key integers must be positive');
  const bits = unsignedBitLength(modulus);
  if (bits > MAX_RSA_MODULUS_BITS) throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', `RSA modulus of ${bits} bits is too large`);
  // Go's crypto/rsa limits e to 31 bits; a huge e would make every verify as slow as a sign.
  const e = exponent.length <= 4 ? exponent.readUIntBE(0, exponent.length) : 0;
  if (e < 3 || e > 0x7fffffff || e % 2 === 0) throw new PkiError('ERR_CSR_UNSUPPORTED_KEY', 'unsupported RSA public exponent');
  return bits;
}

function unsignedBitLength(bytes: Buffer): number {
  const i = bytes.findIndex((b) => b !== 0);
  if (i === -1) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes.readUInt8(i)));
}

/** What the extensionRequest attribute asks for. */
export interface RequestedExtensions {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  /** Printable form: dotted IPv4, RFC 5952 IPv6. */
  readonly ipAddresses: readonly string[];
  readonly emails: readonly string[];
  /** SAN entries of other kinds (otherName, directoryName, registeredID, ...). */
  readonly otherSanCount: number;
  /** Undefined when there is no SAN extension. */
  readonly sanCritical: boolean | undefined;
  /** BasicConstraints cA=true requested. */
  readonly requestsCa: boolean;
  /** All requested extension OIDs, in order. */
  readonly extensionOids: readonly string[];
}

// Frozen because every request without extensions shares these arrays.
const NONE: readonly string[] = Object.freeze([]);
const NO_EXTENSIONS: RequestedExtensions = Object.freeze({
  uris: NONE,
  dnsNames: NONE,
  ipAddresses: NONE,
  emails: NONE,
  otherSanCount: 0,
  sanCritical: undefined,
  requestsCa: false,
  extensionOids: NONE,
});

/** attributes [0] IMPLICIT SET OF Attribute; only extensionRequest matters to us. */
function parseAttributes(r: DerReader, attrsEl: DerElement): RequestedExtensions {
  let extensions: RequestedExtensions | undefined;
  for (const attr of r.sequence(attrsEl, 'attributes', contextTag(0, true))) {
    const [typeEl, valuesEl] = exactly(r, r.sequence(attr, 'attribute'), 2, 'attribute');
    const type = r.oid(typeEl, 'attribute type');
    const values = r.sequence(valuesEl, 'attribute values', Tag.SET);
    if (type !== OID.extensionRequest) continue;
    if (extensions !== undefined) r.fail('duplicate extensionRequest attribute');
    extensions = parseExtensions(r, exactly(r, values, 1, 'extensionRequest values')[0]);
  }
  return extensions ?? NO_EXTENSIONS;
}

function parseExtensions(r: DerReader, extensionsEl: DerElement): RequestedExtensions {
  const san = { uris: [] as string[], dnsNames: [] as string[], ipAddresses: [] as string[], emails: [] as string[], other: 0 };
  let sanCritical: boolean | undefined;
  let requestsCa = false;
  const extensionOids: string[] = [];
  for (const ext of r.sequence(extensionsEl, 'extensions')) {
    const fields = r.sequence(ext, 'extension');
    const [oidEl, criticalEl, lastEl, ...extra] = fields;
    const valueField = lastEl ?? criticalEl;
    if (!oidEl || !valueField || extra.length > 0) r.fail('extension: wrong number of fields');
    const oid = r.oid(oidEl, 'extension id');
    if (extensionOids.includes(oid)) r.fail(`duplicate extension ${oid}`);
    extensionOids.push(oid);
    // An explicit critical=FALSE is not DER, but some encoders emit it; the meaning is clear.
    const critical = lastEl !== undefined && criticalEl !== undefined && r.boolean(criticalEl, 'extension critical');
    const valueEl = r.expect(valueField, Tag.OCTET_STRING, 'extension value');
    if (oid === OID.subjectAltName) {
      sanCritical = critical;
      parseGeneralNames(r, r.inner(valueEl, 'subjectAltName'), san);
    } else if (oid === OID.basicConstraints) {
      requestsCa = parseBasicConstraintsCa(r, r.inner(valueEl, 'basicConstraints'));
    }
  }
  const { uris, dnsNames, ipAddresses, emails } = san;
  return { uris, dnsNames, ipAddresses, emails, otherSanCount: san.other, sanCritical, requestsCa, extensionOids };
}

const GENERAL_NAME = {
  rfc822Name: contextTag(1, false),
  dNSName: contextTag(2, false),
  uniformResourceIdentifier: contextTag(6, false),
  iPAddress: contextTag(7, false),
} as const;

/** Kinds we only count: otherName, x400Address, directoryName, ediPartyName, registeredID. */
const OTHER_GENERAL_NAMES: ReadonlySet<number> = new Set([
  contextTag(0, true),
  contextTag(3, true),
  contextTag(4, true),
  contextTag(5, true),
  contextTag(8, false),
]);

interface SanCollector {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  other: number;
}

function parseGeneralNames(r: DerReader, namesEl: DerElement, out: SanCollector): void {
  const names = r.sequence(namesEl, 'subjectAltName');
  if (names.length === 0) r.fail('subjectAltName must not be empty');
  for (const name of names) {
    switch (name.tag) {
      case GENERAL_NAME.uniformResourceIdentifier:
        out.uris.push(r.ascii(name, 'URI SAN'));
        break;
      case GENERAL_NAME.dNSName:
        out.dnsNames.push(r.ascii(name, 'DNS SAN'));
        break;
      case GENERAL_NAME.rfc822Name:
        out.emails.push(r.ascii(name, 'email SAN'));
        break;
      case GENERAL_NAME.iPAddress:
        out.ipAddresses.push(formatIp(r, r.content(name)));
        break;
      default:
        if (!OTHER_GENERAL_NAMES.has(name.tag)) r.fail(`subjectAltName: unknown GeneralName tag 0x${name.tag.toString(16)}`);
        out.other++;
    }
  }
}

function formatIp(r: DerReader, bytes: Buffer): string {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) r.fail('IP SAN must be 4 or 16 bytes');
  return formatIpv6(bytes);
}

/** RFC 5952: lowercase, no leading zeros, the longest run (>= 2) of zero groups as '::'. */
function formatIpv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  let [bestStart, bestLen] = [-1, 1];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }. */
function parseBasicConstraintsCa(r: DerReader, el: DerElement): boolean {
  const fields = r.sequence(el, 'basicConstraints');
  const rest = [...fields];
  const caEl = rest[0]?.tag === Tag.BOOLEAN ? rest.shift() : undefined;
  const ca = caEl ? r.boolean(caEl, 'basicConstraints cA') : false;
  const pathLenEl = rest[0]?.tag === Tag.INTEGER ? rest.shift() : undefined;
  if (pathLenEl) r.smallInteger(pathLenEl, 'basicConstraints pathLen');
  if (rest.length > 0) r.fail('basicConstraints: unexpected fields');
  return ca;
}

interface ParsedSignatureScheme extends SignatureScheme {
  readonly pssSaltLength: number | undefined;
}

function parseSignatureAlgorithm(r: DerReader, algEl: DerElement): ParsedSignatureScheme {
  const [oidEl, paramsEl, ...extra] = r.sequence(algEl, 'signatureAlgorithm');
  if (oidEl === undefined || extra.length > 0) r.fail('signatureAlgorithm: wrong number of fields');
  const oid = r.oid(oidEl, 'signature algorithm');
  if (oid === OID.rsassaPss) return parsePssParams(r, paramsEl);
  const scheme = SIMPLE_SIGNATURES.get(oid);
  if (scheme === undefined) throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', `unsupported signature algorithm ${oid}`);
  if (paramsEl !== undefined) {
    // RFC 5758: ECDSA parameters are absent. RFC 4055: PKCS#1 parameters are NULL.
    if (scheme.keyFamily === 'ec') r.fail('ECDSA signature algorithm must have no parameters');
    r.null(paramsEl, 'signature algorithm parameters');
  }
  return { ...scheme, pssSaltLength: undefined };
}

const PSS_DEFAULT_SALT_LENGTH = 20;

/**
 * RSASSA-PSS-params (RFC 4055). Node's verify uses MGF1 with the signature hash, so we accept
 * only that pairing; the SHA-1 default hash is refused.
 */
function parsePssParams(r: DerReader, paramsEl: DerElement | undefined): ParsedSignatureScheme {
  if (paramsEl === undefined) throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', 'RSASSA-PSS with SHA-1 defaults');
  let hash: CsrSignatureHash | undefined;
  let mgfHash: CsrSignatureHash | undefined;
  let saltLength = PSS_DEFAULT_SALT_LENGTH;
  let trailer = 1;
  let lastField = -1;
  for (const field of r.sequence(paramsEl, 'RSASSA-PSS parameters')) {
    const n = field.tag ^ contextTag(0, true);
    if (n > 3 || n <= lastField) r.fail('RSASSA-PSS parameters: unexpected field');
    lastField = n;
    const value = r.inner(field, 'RSASSA-PSS parameter');
    if (n === 0) hash = parseHashAlgorithm(r, value);
    else if (n === 1) mgfHash = parseMgf1(r, value);
    else if (n === 2) saltLength = r.smallInteger(value, 'PSS saltLength');
    else trailer = r.smallInteger(value, 'PSS trailerField');
  }
  if (hash === undefined || mgfHash !== hash || trailer !== 1) {
    throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', 'RSASSA-PSS needs SHA-2 with MGF1 over the same hash');
  }
  return { name: 'rsa-pss', hash, keyFamily: 'rsa', pssSaltLength: saltLength };
}

function parseHashAlgorithm(r: DerReader, el: DerElement): CsrSignatureHash {
  const [oidEl, paramsEl, ...extra] = r.sequence(el, 'hash algorithm');
  if (oidEl === undefined || extra.length > 0) r.fail('hash algorithm: wrong number of fields');
  if (paramsEl !== undefined) r.null(paramsEl, 'hash algorithm parameters');
  const oid = r.oid(oidEl, 'hash algorithm');
  const hash = HASHES.get(oid);
  if (hash === undefined) throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', `unsupported hash ${oid}`);
  return hash;
}

function parseMgf1(r: DerReader, el: DerElement): CsrSignatureHash {
  const [oidEl, hashEl] = exactly(r, r.sequence(el, 'mask generation algorithm'), 2, 'mask generation algorithm');
  if (r.oid(oidEl, 'mask generation algorithm') !== OID.mgf1) {
    throw new PkiError('ERR_CSR_UNSUPPORTED_SIGNATURE', 'RSASSA-PSS mask generation must be MGF1');
  }
  return parseHashAlgorithm(r, hashEl);
}
