import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { AuthenticationError, type Authenticator } from '../authn/index.js';
import { IssuanceError } from '../authority/errors.js';
import type { JwtSvidIssuance } from '../authority/jwt-svid-issuance.js';
import type { Metrics } from '../observability/metrics.js';
import { RateLimitedError, type IdentityRateLimiter } from './rate-limit.js';
import { authenticateCall } from './certificate-service.js';
import type { FetchBundlesResponse, MintJwtSvidRequest, MintJwtSvidResponse } from './proto.js';
import { toGrpcFailure } from './status.js';
import { CallFailure, type UnaryCall, type UnaryHandlers } from './unary.js';

export interface JwtSvidServiceOptions {
  readonly authenticator: Authenticator;
  readonly jwtSvids: JwtSvidIssuance;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** --rate-limit-per-identity, with buckets of its own: minting is cheap but each JWT-SVID is recorded. */
  readonly rateLimiter?: IdentityRateLimiter;
}

/** meshca.v1.JwtSvidService: authn as CreateCertificate, then mint for the caller's own identity. */
export function jwtSvidServiceHandlers(options: JwtSvidServiceOptions): UnaryHandlers {
  const MintJwtSvid = (call: UnaryCall<MintJwtSvidRequest>): Promise<MintJwtSvidResponse> =>
    (async () => {
      const caller = await authenticateCall(options.authenticator, call.metadata);
      if (options.rateLimiter && !options.rateLimiter.allow(caller.spiffeId)) throw new RateLimitedError(caller.spiffeId);
      const minted = await options.jwtSvids.mint({
        caller,
        audiences: call.request.audience ?? [],
        ttlSeconds: Number(call.request.ttl_seconds) || 0,
      });
      options.metrics.jwtSvidsMinted.inc();
      options.logger.info({ spiffeId: minted.spiffeId, kid: minted.kid, jti: minted.jti, expiresAt: minted.expiresAt }, 'minted JWT-SVID');
      return {
        token: minted.token,
        spiffe_id: minted.spiffeId,
        expires_at: Math.floor(minted.expiresAt.getTime() / 1000),
        kid: minted.kid,
      };
    })().catch((error: unknown) => {
      if (error instanceof AuthenticationError) options.metrics.authenticationFailures.inc();
      else if (error instanceof RateLimitedError) options.metrics.shed.inc();
      else if (error instanceof IssuanceError && error.code === 'ERR_IDENTITY_DENIED') options.metrics.denied.inc();
      else if (!(error instanceof IssuanceError)) options.logger.error({ err: error }, 'unexpected error in MintJwtSvid');
      const failure = toGrpcFailure(error);
      options.logger.warn({ code: failure.reason, status: status[failure.code], details: failure.details }, 'JWT-SVID request refused');
      throw new CallFailure(failure.code, failure.details);
    });
  return { MintJwtSvid };
}

/** meshca.v1.TrustBundleService: public trust data, like GET /v1/bundle, so no authentication. */
export function trustBundleServiceHandlers(bundles: () => FetchBundlesResponse): UnaryHandlers {
  const FetchBundles = async (): Promise<FetchBundlesResponse> => {
    try {
      return bundles();
    } catch (error) {
      throw new CallFailure(status.UNAVAILABLE, `bundles unavailable: ${(error as Error).message}`);
    }
  };
  return { FetchBundles };
}
