/**
 * OCSP (RFC 6960) requests and responses, parsed and built with @peculiar/asn1-ocsp (the ASN.1
 * family @peculiar/x509 already uses), never by hand. Responses are signed with SHA-256 by the
 * issuing CA itself (docs/operations/revocation.md says why no delegated responder).
 */
import { createHash, sign, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate, CRLReason, CRLReasons, type Extension } from '@peculiar/asn1-x509';
import {
  BasicOCSPResponse,
  type CertID,
  CertStatus,
  KeyHash,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseBytes,
  ResponseData,
  RevokedInfo,
  SingleResponse,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
} from '@peculiar/asn1-ocsp';
import type { CrlReason } from './certificate.js';
import { PkiError } from './errors.js';
import { keyTypeOf } from './keys.js';
import { serialToHex } from './serial.js';

export type OcspHash = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const HASH_BY_OID: Readonly<Record<string, OcspHash>> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** More CertIDs than this in one request is not a client meshca serves (openssl sends one per -cert). */
export const MAX_OCSP_CERT_IDS = 16;
/** RFC 8954: nonces are 1 to 32 octets; a little slack for older clients. */
const MAX_NONCE_BYTES = 64;

export interface OcspCertId {
  readonly hash: OcspHash;
  readonly issuerNameHash: Buffer;
  readonly issuerKeyHash: Buffer;
  /** Lowercase hex, no leading zeros. */
  readonly serialHex: string;
  /** The request's CertID, echoed verbatim in the response. */
  readonly asn: CertID;
}

export interface OcspRequestInfo {
  readonly certIds: readonly OcspCertId[];
  /** The nonce extension to echo, when the client sent one. */
  readonly nonce: Extension | undefined;
}

/** Parses a DER OCSPRequest; anything else is ERR_OCSP_MALFORMED (the responder answers malformedRequest). */
export function parseOcspRequest(der: Uint8Array): OcspRequestInfo {
  let request: OCSPRequest;
  try {
    request = AsnConvert.parse(der, OCSPRequest);
  } catch {
    throw new PkiError('ERR_OCSP_MALFORMED', 'the body is not a DER OCSPRequest');
  }
  // RFC 6960 requests are DER: re-encoding must give the same bytes (this also refuses trailing data).
  if (!Buffer.from(AsnConvert.serialize(request)).equals(Buffer.from(der)))
    throw new PkiError('ERR_OCSP_MALFORMED', 'the OCSPRequest is not DER or has trailing data');
  const list = request.tbsRequest.requestList;
  if (list.length === 0 || list.length > MAX_OCSP_CERT_IDS)
    throw new PkiError('ERR_OCSP_MALFORMED', `an OCSPRequest must ask about 1 to ${MAX_OCSP_CERT_IDS} certificates`);
  const certIds = list.map(({ reqCert }) => {
    const hash = HASH_BY_OID[reqCert.hashAlgorithm.algorithm];
    if (!hash) throw new PkiError('ERR_OCSP_MALFORMED', `unsupported CertID hash algorithm ${reqCert.hashAlgorithm.algorithm}`);
    const serial = Buffer.from(reqCert.serialNumber);
    if (serial.length === 0 || serial.length > 21)
      throw new PkiError('ERR_OCSP_MALFORMED', 'the CertID serial number is not a certificate serial');
    return {
      hash,
      issuerNameHash: Buffer.from(reqCert.issuerNameHash.buffer),
      issuerKeyHash: Buffer.from(reqCert.issuerKeyHash.buffer),
      serialHex: serialToHex(serial),
      asn: reqCert,
    };
  });
  const nonce = request.tbsRequest.requestExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  if (nonce && nonce.extnValue.byteLength > MAX_NONCE_BYTES + 2)
    throw new PkiError('ERR_OCSP_MALFORMED', `the nonce is longer than ${MAX_NONCE_BYTES} bytes`);
  return { certIds, nonce };
}

/** The CertID hashes of a CA certificate: its subject Name and its public key bits. */
export function certIdHashes(caCertificateDer: Buffer, hash: OcspHash): { readonly nameHash: Buffer; readonly keyHash: Buffer } {
  const tbs = AsnConvert.parse(caCertificateDer, Certificate).tbsCertificate;
  const digest = (data: ArrayBuffer) => createHash(hash).update(Buffer.from(data)).digest();
  return { nameHash: digest(AsnConvert.serialize(tbs.subject)), keyHash: digest(tbs.subjectPublicKeyInfo.subjectPublicKey) };
}

export type OcspCertStatus =
  | { readonly kind: 'good' }
  | { readonly kind: 'unknown' }
  | { readonly kind: 'revoked'; readonly revokedAt: Date; readonly reason: CrlReason };

export interface OcspAnswer {
  readonly certId: OcspCertId;
  readonly status: OcspCertStatus;
}

export interface OcspResponseSpec {
  /** The CA that issued the certificates asked about; it signs the response. */
  readonly signerCertificateDer: Buffer;
  readonly signerKey: KeyObject;
  readonly answers: readonly OcspAnswer[];
  readonly producedAt: Date;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly nonce: Extension | undefined;
}

/** A successful, signed BasicOCSPResponse (SHA-256), responder identified by key hash, signer certificate included. */
export function createOcspResponse(spec: OcspResponseSpec): Buffer {
  const signer = AsnConvert.parse(spec.signerCertificateDer, Certificate);
  const keyHash = createHash('sha1').update(Buffer.from(signer.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey)).digest();
  const data = new ResponseData({
    responderID: new ResponderID({ byKey: new KeyHash(keyHash) }),
    producedAt: wholeSeconds(spec.producedAt),
    responses: spec.answers.map(
      (a) =>
        new SingleResponse({
          certID: a.certId.asn,
          certStatus: certStatus(a.status),
          thisUpdate: wholeSeconds(spec.thisUpdate),
          nextUpdate: wholeSeconds(spec.nextUpdate),
        }),
    ),
    responseExtensions: spec.nonce ? [spec.nonce] : undefined,
  });
  const tbs = Buffer.from(AsnConvert.serialize(data));
  const ecdsa = keyTypeOf(spec.signerKey).startsWith('ec-');
  const basic = new BasicOCSPResponse({
    tbsResponseData: data,
    signatureAlgorithm: ecdsa
      ? new AlgorithmIdentifier({ algorithm: '1.2.840.10045.4.3.2' })
      : new AlgorithmIdentifier({ algorithm: '1.2.840.113549.1.1.11', parameters: null }),
    signature: toArrayBuffer(sign('sha256', tbs, { key: spec.signerKey, dsaEncoding: 'der' })),
    certs: [signer],
  });
  const bytes = new ResponseBytes({ responseType: id_pkix_ocsp_basic, response: new OctetString(AsnConvert.serialize(basic)) });
  return Buffer.from(AsnConvert.serialize(new OCSPResponse({ responseStatus: OCSPResponseStatus.successful, responseBytes: bytes })));
}

export type OcspErrorStatus = 'malformedRequest' | 'internalError' | 'tryLater' | 'unauthorized';

/** An unsigned OCSPResponse carrying only an error status (RFC 6960 §2.3). */
export function ocspErrorResponse(status: OcspErrorStatus): Buffer {
  return Buffer.from(AsnConvert.serialize(new OCSPResponse({ responseStatus: OCSPResponseStatus[status] })));
}

function certStatus(status: OcspCertStatus): CertStatus {
  if (status.kind === 'good') return new CertStatus({ good: null });
  if (status.kind === 'unknown') return new CertStatus({ unknown: null });
  const info = new RevokedInfo({ revocationTime: wholeSeconds(status.revokedAt) });
  // As on CRLs, "unspecified" is left out (RFC 5280 §5.3.1).
  if (status.reason !== 'unspecified') info.revocationReason = new CRLReason(CRLReasons[status.reason]);
  return new CertStatus({ revoked: info });
}

/** GeneralizedTime in OCSP carries no fractional seconds. */
function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

function toArrayBuffer(buffer: Buffer): ArrayBuffer {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
}
