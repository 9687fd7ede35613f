/**
 * Wires the Kubernetes side of meshca from the config: the per-cluster authenticator (JWKS,
 * TokenReview or both; remote clusters by TokenReview), ztunnel impersonation checks, and the
 * leader-only writers (root ConfigMaps, istiod Secret). server.ts calls this once.
 */

import type { Logger } from 'pino';
import { createClusterRouter, createIssuerRouter, createTokenReviewAuthenticator, DEV_TOKEN_ISSUER, type Authenticator } from '../authn/index.js';
import type { IssuanceService } from '../authority/issuance.js';
import type { CertificateAuthority } from '../authority/lifecycle.js';
import type { ServerConfig } from '../config.js';
import type { ImpersonationAuthorizer } from '../grpc/certificate-service.js';
import { tokenReviewer } from './api.js';
import { KubeClient } from './client.js';
import { loadKubeconfig, loadKubeConnection, type KubeConnection } from './connection.js';
import { createNodeAuthorizer } from './impersonation.js';
import { IstiodSecretKeeper } from './istiod-cert.js';
import { LeaderElector } from './leader-election.js';
import { needsLocalApi } from './options.js';
import { RootDistributor } from './root-distributor.js';

export const LEADER_LEASE = 'meshca-leader';

export interface KubernetesIntegrationDeps {
  /** Offline validation of local-cluster tokens, if configured (--jwks-file/--jwks-url or --dev). */
  readonly jwks: Authenticator | undefined;
  readonly ca: CertificateAuthority;
  readonly issuance: IssuanceService;
  readonly logger: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

export interface KubernetesIntegration {
  /** Routes by the clusterid header; what the gRPC service authenticates with. */
  readonly authenticator: Authenticator;
  readonly impersonation: ImpersonationAuthorizer | undefined;
  readonly leaderElector: LeaderElector | undefined;
  readonly rootDistributor: RootDistributor | undefined;
  /** Stops the leader tasks, releases the lease, closes API connections. */
  close(): Promise<void>;
}

interface LeaderTask {
  start(): void;
  stop(): void;
  bundleChanged(): void;
}

export async function startKubernetesIntegration(config: ServerConfig, deps: KubernetesIntegrationDeps): Promise<KubernetesIntegration> {
  const k = config.kubernetes;
  const logger = deps.logger.child({ component: 'kubernetes' });
  const client = (connection: KubeConnection) => new KubeClient({ connection, qps: k.qps, burst: k.burst, timeoutMs: k.requestTimeoutMs, logger });
  const local = needsLocalApi(k) ? client(loadKubeConnection({ kubeconfig: k.kubeconfig, env: deps.env ?? process.env })) : undefined;
  const remotes = new Map(k.clusters.map((c) => [c.name, client(loadKubeconfig(c.kubeconfig))] as const));
  const byTokenReview = (api: KubeClient) => createTokenReviewAuthenticator({ trustDomain: config.trustDomain, audiences: config.jwt.audiences, reviewer: tokenReviewer(api) });

  const routes = new Map<string, Authenticator>([[config.clusterId, localAuthenticator(config, deps.jwks, local && k.tokenReview ? byTokenReview(local) : undefined)]]);
  for (const [name, api] of remotes) routes.set(name, byTokenReview(api));
  const authenticator = createClusterRouter(routes, config.clusterId);

  const impersonation =
    k.trustedNodeAccounts.length === 0
      ? undefined
      : createNodeAuthorizer({ trustDomain: config.trustDomain, trustedAccounts: k.trustedNodeAccounts, clientFor: (id) => (id === config.clusterId ? local : remotes.get(id)) });

  const tasks: LeaderTask[] = [];
  let rootDistributor: RootDistributor | undefined;
  if (local && k.distributeRoot) {
    rootDistributor = new RootDistributor({ client: local, bundle: () => deps.ca.current().rootsPem, namespaceSelector: k.namespaceSelector, resyncIntervalMs: k.rootResyncIntervalMs, logger });
    tasks.push(rootDistributor);
  }
  if (local && k.istiodSecret) {
    const request = { trustDomain: config.trustDomain, namespace: k.istiodNamespace, revisions: k.istiodRevisions, ttlMs: k.istiodCertTtlMs, requestedBy: `spiffe://${config.trustDomain}/ns/meshca/sa/meshca`, clusterId: config.clusterId };
    tasks.push(new IstiodSecretKeeper({ client: local, ca: deps.ca, issuance: deps.issuance, request, logger }));
  }
  let leaderElector: LeaderElector | undefined;
  if (local && tasks.length > 0) {
    leaderElector = new LeaderElector({
      client: local,
      namespace: k.leaseNamespace ?? local.namespace ?? 'default',
      name: LEADER_LEASE,
      leaseDurationMs: k.leaseDurationMs,
      logger,
      onStartedLeading: () => tasks.forEach((t) => t.start()),
      onStoppedLeading: () => tasks.forEach((t) => t.stop()),
    });
    let lastBundle = deps.ca.current().rootsPem;
    deps.ca.onChange((snapshot) => {
      if (snapshot.rootsPem === lastBundle) return; // e.g. an intermediate rotation: the roots are unchanged
      lastBundle = snapshot.rootsPem;
      tasks.forEach((t) => t.bundleChanged());
    });
    leaderElector.start();
  }

  if (local || remotes.size > 0) {
    logger.info(
      {
        api: local?.description,
        tokenReview: k.tokenReview,
        remoteClusters: [...remotes.keys()],
        impersonation: impersonation !== undefined,
        distributeRoot: k.distributeRoot,
        istiodSecret: k.istiodSecret,
        leaderElection: leaderElector ? `${k.leaseNamespace ?? local?.namespace ?? 'default'}/${LEADER_LEASE}` : undefined,
      },
      'Kubernetes integration enabled',
    );
  }

  return {
    authenticator,
    impersonation,
    leaderElector,
    rootDistributor,
    close: async () => {
      await leaderElector?.stop();
      tasks.forEach((t) => t.stop());
      local?.close();
      remotes.forEach((api) => api.close());
    },
  };
}

/** JWKS alone, TokenReview alone, or both: JWKS for tokens from its issuer, TokenReview for the rest. */
function localAuthenticator(config: ServerConfig, jwks: Authenticator | undefined, review: Authenticator | undefined): Authenticator {
  if (review === undefined) {
    if (jwks === undefined) throw new Error('no token validation configured for the local cluster');
    return jwks;
  }
  if (jwks === undefined) return review;
  const issuer = config.jwt.jwksFile || config.jwt.jwksUrl ? config.jwt.issuer! : DEV_TOKEN_ISSUER;
  return createIssuerRouter(new Map([[issuer, jwks]]), review);
}
