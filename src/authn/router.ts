import { AuthenticationError } from './errors.js';
import { createIssuerRouter } from './token-review.js';
import type { AuthenticationContext, Authenticator, CallerIdentity } from './types.js';

/**
 * Picks the authenticator for the `clusterid` header; an empty id means the default cluster. The
 * inner authenticator sees the resolved id, so identities always name a configured cluster.
 */
export function createClusterRouter(byCluster: ReadonlyMap<string, Authenticator>, defaultClusterId: string): Authenticator {
  if (!byCluster.has(defaultClusterId)) {
    throw new TypeError(`default cluster ${JSON.stringify(defaultClusterId)} has no authenticator`);
  }
  const routes = new Map(byCluster); // a snapshot: later changes to the caller's map do not leak in
  return {
    async authenticate(ctx: AuthenticationContext): Promise<CallerIdentity> {
      const clusterId = ctx.clusterId === '' ? defaultClusterId : ctx.clusterId;
      const authenticator = routes.get(clusterId);
      if (authenticator === undefined) {
        // The id is caller-supplied: quoted and truncated before it reaches a log line.
        throw new AuthenticationError('ERR_CLUSTER_UNKNOWN', `cluster ${JSON.stringify(clusterId.slice(0, 64))} is not configured`);
      }
      return authenticator.authenticate({ token: ctx.token, clusterId });
    },
  };
}

export interface MeshAuthenticators {
  readonly localClusterId: string;
  /** Offline validation of local-cluster tokens (JWKS or the dev issuer) and the issuer it checks. */
  readonly jwks?: { readonly authenticator: Authenticator; readonly issuer: string };
  /** TokenReview on the local cluster's API, when configured. */
  readonly localReview?: Authenticator;
  /** Remote clusters by clusterid, each validated by its own API's TokenReview. */
  readonly remotes?: ReadonlyMap<string, Authenticator>;
}

/**
 * The authenticator the gRPC service uses: routes by the clusterid header; the local cluster uses
 * JWKS alone, TokenReview alone, or both (JWKS for tokens from its issuer, TokenReview for the rest).
 */
export function createMeshAuthenticator(options: MeshAuthenticators): Authenticator {
  const routes = new Map<string, Authenticator>([[options.localClusterId, localAuthenticator(options)]]);
  for (const [name, authenticator] of options.remotes ?? []) routes.set(name, authenticator);
  return createClusterRouter(routes, options.localClusterId);
}

function localAuthenticator({ jwks, localReview }: MeshAuthenticators): Authenticator {
  if (localReview === undefined) {
    if (jwks === undefined) throw new Error('no token validation configured for the local cluster');
    return jwks.authenticator;
  }
  if (jwks === undefined) return localReview;
  return createIssuerRouter(new Map([[jwks.issuer, jwks.authenticator]]), localReview);
}
