import { status } from '@grpc/grpc-js';
import type { AuthenticationErrorCode } from '../authn/index.js';
import type { IssuanceErrorCode } from '../authority/errors.js';
import { MeshcaError } from '../errors.js';

export interface GrpcFailure {
  readonly code: status;
  readonly details: string;
  /** A short label for metrics and logs. */
  readonly reason: string;
}

const ISSUANCE_STATUS: Readonly<Record<IssuanceErrorCode, status>> = {
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

/** Authentication failures are UNAUTHENTICATED, except where the failure is ours. */
const AUTHENTICATION_STATUS: Readonly<Record<AuthenticationErrorCode, status>> = {
  ERR_TOKEN_MISSING: status.UNAUTHENTICATED,
  ERR_TOKEN_MALFORMED: status.UNAUTHENTICATED,
  ERR_TOKEN_ALGORITHM: status.UNAUTHENTICATED,
  ERR_TOKEN_SIGNATURE: status.UNAUTHENTICATED,
  ERR_TOKEN_EXPIRED: status.UNAUTHENTICATED,
  ERR_TOKEN_NOT_YET_VALID: status.UNAUTHENTICATED,
  ERR_TOKEN_ISSUER: status.UNAUTHENTICATED,
  ERR_TOKEN_AUDIENCE: status.UNAUTHENTICATED,
  ERR_TOKEN_SUBJECT: status.UNAUTHENTICATED,
  ERR_TOKEN_KEY_UNKNOWN: status.UNAUTHENTICATED,
  ERR_CLUSTER_UNKNOWN: status.UNAUTHENTICATED,
  ERR_IMPERSONATION_DENIED: status.UNAUTHENTICATED,
  // Ours, not the caller's: istio-agent retries UNAVAILABLE.
  ERR_JWKS_UNAVAILABLE: status.UNAVAILABLE,
  ERR_AUTHN_BACKEND_UNAVAILABLE: status.UNAVAILABLE,
};

/** Refusals of the transport itself. */
const TRANSPORT_STATUS: Readonly<Record<'ERR_RATE_LIMITED', status>> = {
  ERR_RATE_LIMITED: status.RESOURCE_EXHAUSTED,
};

/** The gRPC transport's one code → status table (docs/errors.md). */
const GRPC_STATUS: Readonly<Record<string, status>> = { ...ISSUANCE_STATUS, ...AUTHENTICATION_STATUS, ...TRANSPORT_STATUS };

/** Unknown errors become INTERNAL without leaking their text; unlisted retryable ones UNAVAILABLE. */
export function toGrpcFailure(error: unknown): GrpcFailure {
  const code = error instanceof MeshcaError ? GRPC_STATUS[error.code] : undefined;
  if (error instanceof MeshcaError && code !== undefined) {
    const details = error.code in AUTHENTICATION_STATUS ? `authentication failed: ${error.message}` : error.message;
    return { code, details, reason: error.code };
  }
  // A failure of ours that says trying again may succeed (a store or worker going away): istio-agent retries UNAVAILABLE.
  if (error instanceof MeshcaError && error.retryable) return { code: status.UNAVAILABLE, details: error.message, reason: error.code };
  return { code: status.INTERNAL, details: 'internal error; see the meshca server log', reason: 'ERR_INTERNAL' };
}
