/** Issuance and lifecycle errors with stable codes; transports map codes to gRPC/HTTP statuses. */
import { MeshcaError } from '../errors.js';

export type IssuanceErrorCode =
  /** The CSR cannot be parsed, uses an unsupported key, or asks for something the policy forbids. */
  | 'ERR_CSR_REJECTED'
  /** The CSR's signature does not verify (tampered or not made with the requested key). */
  | 'ERR_CSR_SIGNATURE'
  /** A valid caller asks for an identity it does not own. */
  | 'ERR_IDENTITY_MISMATCH'
  /** The identity is on the deny-list. */
  | 'ERR_IDENTITY_DENIED'
  /** No usable signing authority (e.g. the signer was revoked and nothing replaced it yet); retryable. */
  | 'ERR_CA_NOT_READY'
  /** Signing or recording failed; retrying may succeed. */
  | 'ERR_ISSUANCE_FAILED';

export class IssuanceError extends MeshcaError<IssuanceErrorCode> {
  override readonly name = 'IssuanceError';
  constructor(code: IssuanceErrorCode, message: string) {
    super(code, message, { retryable: code === 'ERR_ISSUANCE_FAILED' || code === 'ERR_CA_NOT_READY' });
  }
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
