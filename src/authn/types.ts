/** The authn contract shared by every token validator (JWKS today; TokenReview and more later). */

export interface CallerIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** spiffe://<td>/ns/<ns>/sa/<sa> */
  readonly spiffeId: string;
  readonly clusterId: string;
  /** From the `kubernetes.io` claim, when present. */
  readonly podName?: string;
  readonly podUid?: string;
  readonly nodeName?: string;
  /** The token's `exp`. */
  readonly expiresAt: Date;
}

export interface AuthenticationContext {
  readonly token: string;
  readonly clusterId: string;
}

export interface Authenticator {
  /** Resolves the caller's identity; rejects with AuthenticationError. */
  authenticate(ctx: AuthenticationContext): Promise<CallerIdentity>;
}

/**
 * The impersonation port (ztunnel): resolves when `caller` may obtain a certificate for
 * `impersonatedIdentity`, rejects with AuthenticationError ERR_IMPERSONATION_DENIED otherwise.
 * Implemented against the Kubernetes API in kubernetes/impersonation.ts.
 */
export type ImpersonationAuthorizer = (caller: CallerIdentity, impersonatedIdentity: string) => Promise<void>;
