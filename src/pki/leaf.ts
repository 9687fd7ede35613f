/**
 * X509-SVID leaf writer (docs/architecture.md, workload leaf). Everything that depends only on the
 * issuer is encoded once in LeafTemplate.create; sign() only encodes the per-request fields,
 * concatenates, and hands the TBSCertificate to a TbsSigner: node:crypto's asynchronous sign by
 * default, or the CSR verifier threads, which sign in the same step as they check the CSR.
 */
import { createPublicKey, sign, type KeyObject } from 'node:crypto';
import {
  DerReader,
  Tag,
  contextTag,
  encodeAscii,
  encodeBitString,
  encodeBoolean,
  encodeExplicit,
  encodeImplicit,
  encodeInteger,
  encodeNamedBits,
  encodeNull,
  encodeOctetString,
  encodeOid,
  encodeSequence,
  encodeSmallInteger,
  encodeTime,
  type DerElement,
} from './der.js';
import { PkiError } from './errors.js';
import { digest } from './digest.js';

export interface LeafRequest {
  /** DER INTEGER content bytes (from timeOrderedSerial()). */
  readonly serial: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Subject public key (from the CSR), copied verbatim. */
  readonly spkiDer: Buffer;
  /** Normally exactly one SPIFFE ID. */
  readonly uris: readonly string[];
  /** Only for named profiles (e.g. istiod's serving certificate). */
  readonly dnsNames?: readonly string[];
  /** True for RSA subject keys. */
  readonly keyEncipherment: boolean;
}

const OID_SKID = '2.5.29.14';
// OIDs encoded once at load: encodeOid is too slow for the per-request path.
const OID_DER = {
  subjectKeyIdentifier: encodeOid(OID_SKID),
  subjectAltName: encodeOid('2.5.29.17'),
  basicConstraints: encodeOid('2.5.29.19'),
  keyUsage: encodeOid('2.5.29.15'),
  extKeyUsage: encodeOid('2.5.29.37'),
  authorityKeyIdentifier: encodeOid('2.5.29.35'),
  authorityInfoAccess: encodeOid('1.3.6.1.5.5.7.1.1'),
  ocsp: encodeOid('1.3.6.1.5.5.7.48.1'),
  serverAuth: encodeOid('1.3.6.1.5.5.7.3.1'),
  clientAuth: encodeOid('1.3.6.1.5.5.7.3.2'),
} as const;

// KeyUsage bit numbers (RFC 5280 §4.2.1.3).
const DIGITAL_SIGNATURE = 0;
const KEY_ENCIPHERMENT = 2;
/** RFC 5280 §4.1.2.2: serials are positive and at most 20 octets. */
const MAX_SERIAL_BYTES = 20;

const VERSION_V3 = encodeExplicit(0, encodeSmallInteger(2));
const EMPTY_SUBJECT = encodeSequence();
const CRITICAL = encodeBoolean(true);

const extension = (oidDer: Buffer, critical: boolean, value: Buffer): Buffer =>
  critical ? encodeSequence(oidDer, CRITICAL, encodeOctetString(value)) : encodeSequence(oidDer, encodeOctetString(value));

// cA=false is the DEFAULT, so DER encodes BasicConstraints as an empty SEQUENCE.
const BASIC_CONSTRAINTS_LEAF = extension(OID_DER.basicConstraints, true, encodeSequence());
const KEY_USAGE_SIGN = extension(OID_DER.keyUsage, true, encodeNamedBits([DIGITAL_SIGNATURE]));
const KEY_USAGE_SIGN_ENCIPHER = extension(OID_DER.keyUsage, true, encodeNamedBits([DIGITAL_SIGNATURE, KEY_ENCIPHERMENT]));
const EXT_KEY_USAGE_TLS = extension(OID_DER.extKeyUsage, false, encodeSequence(OID_DER.serverAuth, OID_DER.clientAuth));

/** The digest of the issuer's signature algorithm. */
export type IssuerHash = 'sha256' | 'sha384';

/**
 * Computes the issuer's signature over a TBSCertificate (DER ECDSA-Sig-Value or PKCS#1 v1.5 bytes).
 * The issuer key is handed only to this function, which must not keep or reveal it.
 */
export type TbsSigner = (hash: IssuerHash, tbs: Buffer, issuerKey: KeyObject) => Promise<Buffer>;

/** node:crypto's callback form: the signature is computed on libuv's thread pool. */
export const signOnThreadPool: TbsSigner = (hash, tbs, issuerKey) =>
  new Promise((resolve, reject) => sign(hash, tbs, issuerKey, (err, signature) => (err ? reject(err) : resolve(signature))));

interface IssuerSignature {
  readonly hash: IssuerHash;
  readonly algorithmIdentifier: Buffer;
}

const ECDSA_SHA256: IssuerSignature = { hash: 'sha256', algorithmIdentifier: encodeSequence(encodeOid('1.2.840.10045.4.3.2')) };
const ECDSA_SHA384: IssuerSignature = { hash: 'sha384', algorithmIdentifier: encodeSequence(encodeOid('1.2.840.10045.4.3.3')) };
const RSA_SHA256: IssuerSignature = {
  hash: 'sha256',
  algorithmIdentifier: encodeSequence(encodeOid('1.2.840.113549.1.1.11'), encodeNull()),
};

export class LeafTemplate {
  /**
   * An ES private field, not TypeScript's `private`: unreachable from outside and never serialized.
   * It leaves only as the argument of a TbsSigner (which may hand it to a verifier thread of this process).
   */
  readonly #issuerKey: KeyObject;

  private constructor(
    issuerKey: KeyObject,
    private readonly signature: IssuerSignature,
    /** The issuer certificate's subject Name, verbatim. */
    private readonly issuerName: Buffer,
    /** The complete AKI extension, constant per issuer. */
    private readonly authorityKeyIdentifier: Buffer,
    /** The AIA extension naming the OCSP responder (--ocsp-url), or nothing. */
    private readonly authorityInfoAccess: readonly Buffer[],
  ) {
    this.#issuerKey = issuerKey;
  }

  /** Precomputes issuer Name bytes, AKI (= issuer's SKID), signature algorithm identifier, constant extensions. */
  static create(issuerCertificateDer: Buffer, issuerKey: KeyObject, options: LeafTemplateOptions = {}): LeafTemplate {
    const signature = issuerSignature(issuerKey);
    const issuer = parseIssuerCertificate(issuerCertificateDer);
    assertKeyMatches(issuerKey, issuer.spkiDer);
    const aki = extension(OID_DER.authorityKeyIdentifier, false, encodeSequence(encodeImplicit(0, issuer.keyIdentifier)));
    return new LeafTemplate(
      issuerKey,
      signature,
      issuer.subjectDer,
      aki,
      options.ocspUrl === undefined ? [] : [ocspAccess(options.ocspUrl)],
    );
  }

  /** Builds TBSCertificate, has `signer` sign it, returns the certificate DER. */
  async sign(request: LeafRequest, signer: TbsSigner = signOnThreadPool): Promise<Buffer> {
    const tbs = this.tbsCertificate(request);
    const { hash, algorithmIdentifier } = this.signature;
    return encodeSequence(tbs, algorithmIdentifier, encodeBitString(await signer(hash, tbs, this.#issuerKey)));
  }

  private tbsCertificate(request: LeafRequest): Buffer {
    assertSerial(request.serial);
    if (!(request.notBefore.getTime() <= request.notAfter.getTime())) leafFail('notBefore must not be after notAfter');
    const subjectKeyBits = subjectPublicKeyBits(request.spkiDer);
    const extensions = encodeSequence(
      subjectAltName(request.uris, request.dnsNames ?? []),
      BASIC_CONSTRAINTS_LEAF,
      request.keyEncipherment ? KEY_USAGE_SIGN_ENCIPHER : KEY_USAGE_SIGN,
      EXT_KEY_USAGE_TLS,
      this.authorityKeyIdentifier,
      subjectKeyIdentifierExtension(subjectKeyBits),
      ...this.authorityInfoAccess,
    );
    return encodeSequence(
      VERSION_V3,
      encodeInteger(request.serial),
      this.signature.algorithmIdentifier,
      this.issuerName,
      encodeSequence(encodeTime(request.notBefore), encodeTime(request.notAfter)),
      EMPTY_SUBJECT,
      request.spkiDer,
      encodeExplicit(3, extensions),
    );
  }
}

export interface LeafTemplateOptions {
  /** Adds Authority Information Access with this OCSP responder URL to every leaf. */
  readonly ocspUrl?: string;
}

/** AIA (RFC 5280 §4.2.2.1) with one id-ad-ocsp uniformResourceIdentifier; not critical. */
function ocspAccess(url: string): Buffer {
  if (!/^https?:\/\/[\x21-\x7e]+$/.test(url)) leafFail(`the OCSP URL must be an ASCII http(s) URL without spaces, got "${url}"`);
  return extension(
    OID_DER.authorityInfoAccess,
    false,
    encodeSequence(encodeSequence(OID_DER.ocsp, encodeAscii(url, contextTag(6, false)))),
  );
}

function leafFail(message: string): never {
  throw new PkiError('ERR_CERT_MALFORMED', message);
}

function assertSerial(serial: Buffer): void {
  if (serial.length === 0 || serial.length > MAX_SERIAL_BYTES) leafFail('serial must be 1-20 octets');
  if (serial.readUInt8(0) & 0x80) leafFail('serial must be positive');
  if (serial.length > 1 && serial[0] === 0 && serial.readUInt8(1) < 0x80) leafFail('serial has a non-minimal encoding');
  if (serial.every((b) => b === 0)) leafFail('serial must not be zero');
}

/** SAN is critical because the subject is empty (RFC 5280 §4.2.1.6). */
function subjectAltName(uris: readonly string[], dnsNames: readonly string[]): Buffer {
  if (uris.length + dnsNames.length === 0) leafFail('a leaf needs at least one URI or DNS SAN');
  const names = [...uris.map((u) => encodeAscii(u, contextTag(6, false))), ...dnsNames.map((d) => encodeAscii(d, contextTag(2, false)))];
  for (const name of names) if (name.length === 2) leafFail('SAN entries must not be empty');
  return extension(OID_DER.subjectAltName, true, encodeSequence(...names));
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
function keyIdentifier(subjectKeyBits: Buffer): Buffer {
  return digest('sha1', subjectKeyBits);
}

function subjectKeyIdentifierExtension(subjectKeyBits: Buffer): Buffer {
  return extension(OID_DER.subjectKeyIdentifier, false, encodeOctetString(keyIdentifier(subjectKeyBits)));
}

/** The key bits of a SubjectPublicKeyInfo, checked to be one well-formed SPKI. */
function subjectPublicKeyBits(spkiDer: Buffer): Buffer {
  const r = new DerReader(spkiDer, 'ERR_CERT_MALFORMED');
  const fields = r.sequence(r.top(), 'subject public key');
  if (fields.length !== 2) r.fail('subject public key: expected algorithm and key');
  r.expect(r.field(fields, 0, 'subject public key algorithm'), Tag.SEQUENCE, 'subject public key algorithm');
  return r.bitString(r.field(fields, 1, 'subject public key'), 'subject public key');
}

function issuerSignature(issuerKey: KeyObject): IssuerSignature {
  if (issuerKey.type !== 'private') throw new PkiError('ERR_KEY_UNSUPPORTED', 'issuer key must be a private key');
  if (issuerKey.asymmetricKeyType === 'rsa') return RSA_SHA256;
  if (issuerKey.asymmetricKeyType === 'ec') {
    const curve = issuerKey.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return ECDSA_SHA256;
    if (curve === 'secp384r1') return ECDSA_SHA384;
  }
  throw new PkiError('ERR_KEY_UNSUPPORTED', `unsupported issuer key type ${issuerKey.asymmetricKeyType ?? 'unknown'}`);
}

/** Compared after OpenSSL re-encodes both, so equivalent encodings of one key still match. */
function assertKeyMatches(issuerKey: KeyObject, certificateSpki: Buffer): void {
  const fromKey = createPublicKey(issuerKey).export({ type: 'spki', format: 'der' });
  let fromCertificate: Buffer;
  try {
    fromCertificate = createPublicKey({ key: certificateSpki, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' });
  } catch (err) {
    throw new PkiError('ERR_CERT_MALFORMED', `issuer certificate public key: ${(err as Error).message}`);
  }
  if (!fromKey.equals(fromCertificate)) throw new PkiError('ERR_KEY_MISMATCH', 'issuer key does not match the issuer certificate');
}

interface IssuerFacts {
  readonly subjectDer: Buffer;
  readonly spkiDer: Buffer;
  /** The issuer's SKID, or SHA-1 of its key bits when it has none. */
  readonly keyIdentifier: Buffer;
}

/** Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }. */
function parseIssuerCertificate(der: Buffer): IssuerFacts {
  const r = new DerReader(der, 'ERR_CERT_MALFORMED');
  const certificate = r.sequence(r.top(), 'issuer certificate');
  if (certificate.length !== 3) r.fail('issuer certificate: expected 3 fields');
  const tbs = r.sequence(r.field(certificate, 0, 'issuer tbsCertificate'), 'issuer tbsCertificate');
  // version [0] is present for v3; without it every later field shifts left by one.
  const at = tbs[0]?.tag === contextTag(0, true) ? 1 : 0;
  if (tbs.length < at + 6) r.fail('issuer tbsCertificate: missing fields');
  const subject = r.expect(r.field(tbs, at + 4, 'issuer subject'), Tag.SEQUENCE, 'issuer subject');
  const spki = r.expect(r.field(tbs, at + 5, 'issuer subjectPublicKeyInfo'), Tag.SEQUENCE, 'issuer subjectPublicKeyInfo');
  const spkiFields = r.children(spki);
  if (spkiFields.length !== 2) r.fail('issuer subjectPublicKeyInfo: expected 2 fields');
  const skid = findSubjectKeyIdentifier(r, tbs.slice(at + 6));
  return {
    subjectDer: Buffer.from(r.raw(subject)), // copied: the template outlives the caller's buffer
    spkiDer: Buffer.from(r.raw(spki)),
    keyIdentifier: skid ?? keyIdentifier(r.bitString(r.field(spkiFields, 1, 'issuer public key'), 'issuer public key')),
  };
}

/** Looks through the optional issuerUniqueID [1], subjectUniqueID [2], extensions [3]. */
function findSubjectKeyIdentifier(r: DerReader, trailing: DerElement[]): Buffer | undefined {
  const extensionsWrapper = trailing.find((el) => el.tag === contextTag(3, true));
  if (extensionsWrapper === undefined) return undefined;
  for (const ext of r.sequence(r.inner(extensionsWrapper, 'issuer extensions'), 'issuer extensions')) {
    const fields = r.sequence(ext, 'issuer extension');
    const [oidEl] = fields;
    const valueEl = fields.at(-1);
    if (fields.length < 2 || oidEl === undefined || valueEl === undefined || r.oid(oidEl, 'issuer extension id') !== OID_SKID) continue;
    const value = r.octetString(valueEl, 'issuer SKID extension');
    const inner = new DerReader(value, 'ERR_CERT_MALFORMED');
    const id = inner.octetString(inner.top(), 'issuer SKID');
    if (id.length === 0) inner.fail('issuer SKID is empty');
    return Buffer.from(id);
  }
  return undefined;
}
