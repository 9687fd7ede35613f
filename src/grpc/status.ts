import { status } from '@grpc/grpc-js';
import { AuthenticationError } from '../authn/index.js';
import { IssuanceError, type IssuanceErrorCode } from '../authority/errors.js';

export interface GrpcFailure {
  readonly code: status;
  readonly details: string;
  /** A short label for metrics and logs. */
  readonly reason: string;
}

const ISSUANCE_STATUS: Record<IssuanceErrorCode, status> = {
  ERR_CSR_REJECTED: status.INVALID_ARGUMENT,
  ERR_CSR_SIGNATURE: status.INVALID_ARGUMENT,
  ERR_IDENTITY_MISMATCH: status.PERMISSION_DENIED,
  ERR_IDENTITY_DENIED: status.PERMISSION_DENIED,
  ERR_JWT_REQUEST_INVALID: status.INVALID_ARGUMENT,
  ERR_CA_NOT_READY: status.UNAVAILABLE,
  ERR_ISSUANCE_FAILED: status.INTERNAL,
  ERR_STORE_UNAVAILABLE: status.UNAVAILABLE,
  ERR_VERIFIER_UNAVAILABLE: status.UNAVAILABLE,
  ERR_DISK_LOW: status.UNAVAILABLE,
};

/** docs/architecture.md's status table. Unknown errors become INTERNAL without leaking their text. */
export function toGrpcFailure(error: unknown): GrpcFailure {
  if (error instanceof AuthenticationError) {
    const failure: AuthenticationError = error;
    return { code: failure.retryable ? status.UNAVAILABLE : status.UNAUTHENTICATED, details: `authentication failed: ${failure.message}`, reason: failure.code };
  }
  if (error instanceof IssuanceError) return { code: ISSUANCE_STATUS[error.code], details: error.message, reason: error.code };
  return { code: status.INTERNAL, details: 'internal error; see the meshca server log', reason: 'ERR_INTERNAL' };
}
