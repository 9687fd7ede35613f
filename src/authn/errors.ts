/** Typed authentication errors with stable codes, in the style of jose's error classes. */
import { MeshcaError } from '../errors.js';

export type AuthenticationErrorCode =
  | 'ERR_TOKEN_MISSING'
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_TOKEN_ALGORITHM'
  | 'ERR_TOKEN_SIGNATURE'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_TOKEN_ISSUER'
  | 'ERR_TOKEN_AUDIENCE'
  | 'ERR_TOKEN_SUBJECT'
  | 'ERR_TOKEN_KEY_UNKNOWN'
  | 'ERR_JWKS_UNAVAILABLE'
  | 'ERR_CLUSTER_UNKNOWN'
  /** The Kubernetes API (TokenReview, pod lookups) could not give an answer: retryable. */
  | 'ERR_AUTHN_BACKEND_UNAVAILABLE'
  /** ztunnel-style impersonation refused (untrusted caller, pod checks failed). */
  | 'ERR_IMPERSONATION_DENIED';

/**
 * Thrown by every Authenticator. Messages never contain the token. `retryable` is true only when
 * the failure is ours (key set or Kubernetes API unavailable), which transports map to gRPC UNAVAILABLE.
 */
export class AuthenticationError extends MeshcaError<AuthenticationErrorCode> {
  override readonly name = 'AuthenticationError';

  constructor(code: AuthenticationErrorCode, message: string, options?: { readonly cause?: unknown }) {
    super(code, message, { cause: options?.cause, retryable: code === 'ERR_JWKS_UNAVAILABLE' || code === 'ERR_AUTHN_BACKEND_UNAVAILABLE' });
  }
}
