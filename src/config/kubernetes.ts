/** `meshca serve` flags for the Kubernetes and Istio integration, and their validated form. */

import { isNamespaceName, isServiceAccountName } from '../authn/subject.js';
import { UsageError } from '../errors.js';
import { bool, list, str, type FlagSpec, type FlagValues } from '../flags.js';
import type { KubernetesConfig, RemoteCluster, ServiceAccountRef } from '../kubernetes/options.js';
import { durationFlag, positiveNumber } from './values.js';

export const KUBERNETES_FLAGS: readonly FlagSpec[] = [
  {
    name: 'kubeconfig',
    kind: 'string',
    value: 'PATH',
    help: "kubeconfig of the local cluster's API (default: in-cluster service-account config)",
  },
  {
    name: 'token-review',
    kind: 'boolean',
    help: 'validate local-cluster tokens with the Kubernetes TokenReview API (after JWKS for tokens whose issuer matches)',
  },
  {
    name: 'cluster',
    kind: 'list',
    value: 'NAME=KUBECONFIG',
    help: 'a remote cluster: clusterid NAME is validated by TokenReview on that API (repeatable)',
  },
  {
    name: 'trusted-node-accounts',
    kind: 'list',
    value: 'NS/SA,...',
    help: 'service accounts allowed to impersonate pods on their node (ztunnel: istio-system/ztunnel)',
  },
  {
    name: 'distribute-root',
    kind: 'boolean',
    help: 'keep ConfigMap istio-ca-root-cert (root-cert.pem) equal to the trust bundle in every namespace',
  },
  {
    name: 'namespace-selector',
    kind: 'string',
    value: 'SELECTOR',
    help: 'with --distribute-root: only namespaces matching this label selector (e.g. istio-injection=enabled)',
  },
  {
    name: 'root-resync-interval',
    kind: 'string',
    value: 'DURATION',
    default: '5m',
    help: 'with --distribute-root: re-check every namespace this often',
  },
  {
    name: 'k8s-secret',
    kind: 'boolean',
    help: "keep Secret istiod-tls (istiod's serving certificate) in --istiod-namespace, renewed at 2/3 of its lifetime",
  },
  {
    name: 'istiod-namespace',
    kind: 'string',
    value: 'NS',
    default: 'istio-system',
    help: 'namespace of istiod (DNS SANs istiod.<ns>.svc)',
  },
  { name: 'istiod-revision', kind: 'list', value: 'REV,...', help: 'istiod revisions: adds istiod-<rev>.<ns>.svc SANs' },
  {
    name: 'istiod-cert-ttl',
    kind: 'string',
    value: 'DURATION',
    default: '24h',
    help: "lifetime of istiod's serving certificate (at most --max-ttl)",
  },
  {
    name: 'lease-namespace',
    kind: 'string',
    value: 'NS',
    help: 'namespace of the leader-election Lease "meshca-leader" (default: the pod\'s namespace)',
  },
  {
    name: 'lease-duration',
    kind: 'string',
    value: 'DURATION',
    default: '15s',
    help: 'leader-election lease duration; a stopped leader is replaced within it',
  },
  { name: 'kube-qps', kind: 'string', value: 'N', default: '50', help: 'sustained Kubernetes API requests per second, per cluster' },
  { name: 'kube-burst', kind: 'string', value: 'N', default: '100', help: 'Kubernetes API request burst, per cluster' },
  { name: 'kube-timeout', kind: 'string', value: 'DURATION', default: '5s', help: 'timeout of one Kubernetes API request attempt' },
];

export function buildKubernetesConfig(values: FlagValues, localClusterId: string): KubernetesConfig {
  const leaseDurationMs = durationFlag(values, 'lease-duration');
  if (leaseDurationMs < 1000) throw new UsageError('--lease-duration must be at least 1s');
  const istiodNamespace = str(values, 'istiod-namespace')!;
  if (!isNamespaceName(istiodNamespace)) throw new UsageError('--istiod-namespace must be a namespace name');
  const leaseNamespace = str(values, 'lease-namespace');
  if (leaseNamespace !== undefined && !isNamespaceName(leaseNamespace)) throw new UsageError('--lease-namespace must be a namespace name');
  return {
    kubeconfig: str(values, 'kubeconfig'),
    tokenReview: bool(values, 'token-review'),
    clusters: parseClusters(list(values, 'cluster'), localClusterId),
    trustedNodeAccounts: list(values, 'trusted-node-accounts').map(parseServiceAccountRef),
    distributeRoot: bool(values, 'distribute-root'),
    namespaceSelector: str(values, 'namespace-selector'),
    rootResyncIntervalMs: durationFlag(values, 'root-resync-interval'),
    istiodSecret: bool(values, 'k8s-secret'),
    istiodNamespace,
    istiodRevisions: parseRevisions(list(values, 'istiod-revision'), '--istiod-revision'),
    istiodCertTtlMs: durationFlag(values, 'istiod-cert-ttl'),
    leaseNamespace,
    leaseDurationMs,
    qps: positiveNumber(values, 'kube-qps'),
    burst: positiveNumber(values, 'kube-burst'),
    requestTimeoutMs: durationFlag(values, 'kube-timeout'),
  };
}

/** `ns/sa` as in Istio's TRUSTED_NODE_ACCOUNTS (also accepts `ns:sa`). */
export function parseServiceAccountRef(text: string): ServiceAccountRef {
  const [namespace, serviceAccount, ...rest] = text.split(/[/:]/);
  if (rest.length > 0 || !namespace || !serviceAccount || !isNamespaceName(namespace) || !isServiceAccountName(serviceAccount)) {
    throw new UsageError(`--trusted-node-accounts: "${text}" is not NAMESPACE/SERVICE_ACCOUNT (e.g. istio-system/ztunnel)`);
  }
  return { namespace, serviceAccount };
}

/** Revision names become DNS labels `istiod-<rev>`; "default" is the unrevisioned istiod. */
export function parseRevisions(revisions: readonly string[], flag: string): string[] {
  for (const revision of revisions) {
    if (!isNamespaceName(revision) || revision.length > 56)
      throw new UsageError(`${flag}: "${revision}" is not a revision name (a DNS label of at most 56 characters)`);
  }
  return [...new Set(revisions)];
}

function parseClusters(entries: readonly string[], localClusterId: string): RemoteCluster[] {
  const clusters = entries.map((entry) => {
    const eq = entry.indexOf('=');
    const name = entry.slice(0, eq);
    const kubeconfig = entry.slice(eq + 1);
    if (eq <= 0 || kubeconfig === '') throw new UsageError(`--cluster: "${entry}" is not NAME=KUBECONFIG_PATH`);
    if (name === localClusterId)
      throw new UsageError(`--cluster ${name}: that is the local cluster (--cluster-id); configure it with --kubeconfig instead`);
    return { name, kubeconfig };
  });
  const names = clusters.map((c) => c.name);
  const duplicate = names.find((name, i) => names.indexOf(name) !== i);
  if (duplicate !== undefined) throw new UsageError(`--cluster ${duplicate} is given twice`);
  return clusters;
}
