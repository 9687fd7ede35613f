import { AuthenticationError } from './errors.js';
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
