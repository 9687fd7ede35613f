/**
 * The Kubernetes side of meshca, from its own config slice and ports: TokenReview against the local
 * and remote clusters' APIs, ztunnel impersonation checks, and the leader-only writers (root
 * ConfigMaps, istiod Secret). It composes no authentication: authn/ routes between the reviewers
 * it returns. The application context (app/server.ts) calls this once.
 */

import type { Logger } from 'pino';
import type { ImpersonationAuthorizer, TokenReviewer } from '../authn/index.js';
import type { IstiodCertificate, IstiodCertificateRequest } from '../authority/istiod-profile.js';
import { tokenReviewer } from './api.js';
import { KubeClient } from './client.js';
import { loadKubeconfig, loadKubeConnection, type KubeConnection } from './connection.js';
import { createNodeAuthorizer } from './impersonation.js';
import { IstiodSecretKeeper } from './istiod-cert.js';
import { LeaderElector } from './leader-election.js';
import { needsLocalApi, type KubernetesConfig } from './options.js';
import { RootDistributor } from './root-distributor.js';

export const LEADER_LEASE = 'meshca-leader';

/** What the integration needs to know beyond its own flags. */
export interface KubernetesIntegrationConfig extends KubernetesConfig {
  readonly trustDomain: string;
  /** The local cluster's id (--cluster-id). */
  readonly clusterId: string;
  /** meshca's own SPIFFE ID, recorded as the requester of the certificates it issues itself. */
  readonly selfId: string;
}

/** The trust bundle as the integration sees it. */
export interface TrustBundlePort {
  rootsPem(): string;
  onChange(listener: () => void): void;
}

export interface KubernetesPorts {
  readonly bundle: TrustBundlePort;
  /** Issues istiod's serving certificate (authority/istiod-profile.ts). */
  readonly issueIstiodCertificate: (request: IstiodCertificateRequest) => Promise<IstiodCertificate>;
  readonly logger: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

export interface KubernetesIntegration {
  /** TokenReview on the local cluster's API, when --token-review is set. */
  readonly localReviewer: TokenReviewer | undefined;
  /** TokenReview per remote cluster (--cluster NAME=KUBECONFIG). */
  readonly remoteReviewers: ReadonlyMap<string, TokenReviewer>;
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

export async function startKubernetesIntegration(k: KubernetesIntegrationConfig, ports: KubernetesPorts): Promise<KubernetesIntegration> {
  const logger = ports.logger.child({ component: 'kubernetes' });
  const client = (connection: KubeConnection) =>
    new KubeClient({ connection, qps: k.qps, burst: k.burst, timeoutMs: k.requestTimeoutMs, logger });
  const local = needsLocalApi(k) ? client(loadKubeConnection({ kubeconfig: k.kubeconfig, env: ports.env ?? process.env })) : undefined;
  const remotes = new Map(k.clusters.map((c) => [c.name, client(loadKubeconfig(c.kubeconfig))] as const));

  const impersonation =
    k.trustedNodeAccounts.length === 0
      ? undefined
      : createNodeAuthorizer({
          trustDomain: k.trustDomain,
          trustedAccounts: k.trustedNodeAccounts,
          clientFor: (id) => (id === k.clusterId ? local : remotes.get(id)),
        });

  const tasks: LeaderTask[] = [];
  let rootDistributor: RootDistributor | undefined;
  if (local && k.distributeRoot) {
    rootDistributor = new RootDistributor({
      client: local,
      bundle: () => ports.bundle.rootsPem(),
      namespaceSelector: k.namespaceSelector,
      resyncIntervalMs: k.rootResyncIntervalMs,
      logger,
    });
    tasks.push(rootDistributor);
  }
  if (local && k.istiodSecret) {
    const request = {
      trustDomain: k.trustDomain,
      namespace: k.istiodNamespace,
      revisions: k.istiodRevisions,
      ttlMs: k.istiodCertTtlMs,
      requestedBy: k.selfId,
      clusterId: k.clusterId,
    };
    tasks.push(
      new IstiodSecretKeeper({
        client: local,
        rootsPem: () => ports.bundle.rootsPem(),
        issue: ports.issueIstiodCertificate,
        request,
        logger,
      }),
    );
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
    let lastBundle = ports.bundle.rootsPem();
    ports.bundle.onChange(() => {
      const bundle = ports.bundle.rootsPem();
      if (bundle === lastBundle) return; // e.g. an intermediate rotation: the roots are unchanged
      lastBundle = bundle;
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
    localReviewer: local && k.tokenReview ? tokenReviewer(local) : undefined,
    remoteReviewers: new Map([...remotes].map(([name, api]) => [name, tokenReviewer(api)])),
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
