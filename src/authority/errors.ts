/** Issuance and lifecycle errors with stable codes; transports map codes to gRPC/HTTP statuses. */
import { MeshcaError } from '../errors.js';

export type IssuanceErrorCode =
  /** The CSR cannot be parsed, uses an unsupported key, or asks for something the policy forbids. */
  | 'ERR_CSR_REJECTED'
  /** The CSR's signature does not verify (tampered or not made with the requested key). */
  | 'ERR_CSR_SIGNATURE'
  /** A valid caller asks for an identity it does not own. */
  | 'ERR_IDENTITY_MISMATCH'
  /** A JWT-SVID request without audiences, or with malformed ones. */
  | 'ERR_JWT_REQUEST_INVALID'
  /** The identity is on the deny-list. */
  | 'ERR_IDENTITY_DENIED'
  /** No usable signing authority (e.g. the signer was revoked and nothing replaced it yet); retryable. */
  | 'ERR_CA_NOT_READY'
  /** Signing or recording failed; retrying may succeed. */
  | 'ERR_ISSUANCE_FAILED'
  /** The store cannot be reached (a shared PostgreSQL is down): nothing was issued; retry later or on another replica. */
  | 'ERR_STORE_UNAVAILABLE'
  /** The CSR signature could not be checked (a verifier thread died): a server fault, retry later. */
  | 'ERR_VERIFIER_UNAVAILABLE'
  /** The data volume is under --min-free-disk: new certificates are refused until space is freed. */
  | 'ERR_DISK_LOW';

export class IssuanceError extends MeshcaError<IssuanceErrorCode> {
  override readonly name = 'IssuanceError';
  constructor(code: IssuanceErrorCode, message: string) {
    super(code, message, { retryable: code === 'ERR_ISSUANCE_FAILED' || code === 'ERR_CA_NOT_READY' });
  }
}

/** The store refused the record because the identity is denied (its insert checks the deny-list). */
export function identityDenied(spiffeId: string): IssuanceError {
  return new IssuanceError('ERR_IDENTITY_DENIED', `${spiffeId} is on the deny-list; an operator must allow it again`);
}

export type AuthorityErrorCode =
  | 'ERR_AUTHORITY_NOT_FOUND'
  /** The requested transition is illegal from the authority's current state. */
  | 'ERR_AUTHORITY_STATE'
  /** Unexpired certificates still chain to the authority. */
  | 'ERR_AUTHORITY_IN_USE'
  /** Imported or requested material is invalid. */
  | 'ERR_AUTHORITY_INVALID'
  /** The store does not describe exactly one usable active authority. */
  | 'ERR_AUTHORITY_INCONSISTENT';

export class AuthorityError extends MeshcaError<AuthorityErrorCode> {
  override readonly name = 'AuthorityError';
  constructor(
    code: AuthorityErrorCode,
    message: string,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(code, message);
  }
}

export type UpstreamErrorCode =
  /** The upstream CA could not be reached or answered with a server error; retrying may succeed. */
  | 'ERR_UPSTREAM_UNAVAILABLE'
  /** The upstream CA refused the request (authentication, policy, a denied CertificateRequest). */
  | 'ERR_UPSTREAM_REFUSED'
  /** The upstream CA did not answer in time (e.g. a CertificateRequest never became Ready). */
  | 'ERR_UPSTREAM_TIMEOUT';

/** A failure talking to an upstream CA (Vault PKI, cert-manager); the message says what the upstream said. */
export class UpstreamError extends MeshcaError<UpstreamErrorCode> {
  override readonly name = 'UpstreamError';
  constructor(code: UpstreamErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { cause: options.cause, retryable: code !== 'ERR_UPSTREAM_REFUSED' });
  }
}
