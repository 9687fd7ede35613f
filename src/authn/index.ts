/** Token validation and caller-identity mapping (docs/architecture.md). */

export type { AuthenticationContext, Authenticator, CallerIdentity, ImpersonationAuthorizer } from './types.js';
export { AuthenticationError, type AuthenticationErrorCode } from './errors.js';
export { bearerToken, MAX_TOKEN_BYTES } from './bearer.js';
export {
  ALLOWED_ALGORITHMS,
  createJwksAuthenticator,
  DEFAULT_CLOCK_TOLERANCE_SECONDS,
  type JwksAuthenticator,
  type JwksAuthenticatorOptions,
} from './jwks-authenticator.js';
export type { JwksSource } from './jwks-source.js';
export type { CacheStats } from './token-cache.js';
export { createClusterRouter, createMeshAuthenticator, type MeshAuthenticators } from './router.js';
export { DEV_TOKEN_ISSUER, openDevTokenIssuer, type DevTokenClaims, type DevTokenIssuer } from './dev-issuer.js';
export {
  createIssuerRouter,
  createTokenReviewAuthenticator,
  type TokenReviewAuthenticator,
  type TokenReviewAuthenticatorOptions,
  type TokenReviewer,
  type TokenReviewResult,
} from './token-review.js';
