/** The validated Kubernetes and Istio integration settings (parsed from flags by config/kubernetes.ts). */

export interface ServiceAccountRef {
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface RemoteCluster {
  /** The `clusterid` header value that selects this cluster. */
  readonly name: string;
  readonly kubeconfig: string;
}

export interface KubernetesConfig {
  /** Local cluster API; undefined means in-cluster config (service-account token + CA file). */
  readonly kubeconfig: string | undefined;
  /** Validate tokens of the local cluster with TokenReview (after JWKS, when both are configured). */
  readonly tokenReview: boolean;
  /** Remote clusters, each validated by its own API server's TokenReview. */
  readonly clusters: readonly RemoteCluster[];
  /** Callers allowed to send ImpersonatedIdentity (ztunnel). Empty: impersonation disabled. */
  readonly trustedNodeAccounts: readonly ServiceAccountRef[];
  readonly distributeRoot: boolean;
  /** Label selector of the namespaces that get istio-ca-root-cert; undefined = every namespace. */
  readonly namespaceSelector: string | undefined;
  readonly rootResyncIntervalMs: number;
  /** Keep Secret istiod-tls in istiodNamespace. */
  readonly istiodSecret: boolean;
  readonly istiodNamespace: string;
  readonly istiodRevisions: readonly string[];
  readonly istiodCertTtlMs: number;
  /** Where the leader-election Lease lives; undefined = the pod's (or kubeconfig context's) namespace. */
  readonly leaseNamespace: string | undefined;
  readonly leaseDurationMs: number;
  readonly qps: number;
  readonly burst: number;
  readonly requestTimeoutMs: number;
}

/** True when any feature needs the local cluster's API. */
export function needsLocalApi(config: KubernetesConfig): boolean {
  return config.tokenReview || config.trustedNodeAccounts.length > 0 || config.distributeRoot || config.istiodSecret;
}
