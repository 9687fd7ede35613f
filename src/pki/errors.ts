/** Typed PKI errors with stable codes, in the style of jose's error classes. */
import { MeshcaError } from '../errors.js';

export type PkiErrorCode =
  | 'ERR_PEM_MALFORMED'
  | 'ERR_CSR_MALFORMED'
  | 'ERR_CSR_UNSUPPORTED_KEY'
  | 'ERR_CSR_UNSUPPORTED_SIGNATURE'
  /** The CSR's self-signature does not verify: altered, or not made with the key it carries. */
  | 'ERR_CSR_SIGNATURE_INVALID'
  /** The CSR's signature could not be checked at all (the verifier threads died): a server fault. */
  | 'ERR_VERIFIER_UNAVAILABLE'
  | 'ERR_CERT_MALFORMED'
  | 'ERR_KEY_MISMATCH'
  | 'ERR_KEY_UNSEALABLE'
  | 'ERR_KEY_UNSUPPORTED'
  | 'ERR_CHAIN_INVALID'
  | 'ERR_CERT_EXPIRED'
  | 'ERR_CERT_NOT_YET_VALID'
  | 'ERR_KEK_INVALID'
  | 'ERR_CA_SPEC_INVALID'
  | 'ERR_CRL_SPEC_INVALID'
  /** Not a DER OCSPRequest meshca can answer (the responder replies malformedRequest). */
  | 'ERR_OCSP_MALFORMED'
  /** An upstream-signed intermediate is not a signing CA (CA:TRUE and keyCertSign). */
  | 'ERR_UPSTREAM_NOT_CA'
  /** A pathLen in the upstream chain leaves no room for meshca's intermediate and its leaves. */
  | 'ERR_UPSTREAM_PATHLEN'
  /** The upstream-signed intermediate (or its chain) expires before a workload certificate could. */
  | 'ERR_UPSTREAM_LIFETIME'
  /** The upstream-signed intermediate names another trust domain. */
  | 'ERR_UPSTREAM_TRUST_DOMAIN';

export class PkiError extends MeshcaError<PkiErrorCode> {
  override readonly name = 'PkiError';
  constructor(code: PkiErrorCode, message: string) {
    super(code, message);
  }
}
