/**
 * ztunnel impersonation (docs/architecture.md), Istio's NodeAuthorizer checked against the API server: a
 * trusted node agent may obtain a certificate for an identity only while a pod with that identity
 * runs on the agent's own node.
 */

import { AuthenticationError, type CallerIdentity, type ImpersonationAuthorizer } from '../authn/index.js';
import { parseWorkloadId, SpiffeIdError, type WorkloadIdentity } from '../spiffe/id.js';
import { getPod, listPods } from './api.js';
import type { KubeClient } from './client.js';
import type { ServiceAccountRef } from './options.js';
import type { Pod } from './types.js';

export interface NodeAuthorizerOptions {
  readonly trustDomain: string;
  readonly trustedAccounts: readonly ServiceAccountRef[];
  /** The API of the caller's cluster (the cluster that authenticated it); undefined if none. */
  readonly clientFor: (clusterId: string) => KubeClient | undefined;
  /**
   * Positive pod lookups are reused this long (default 5 s): after a rotation one ztunnel asks for
   * every pod on its node at once. Istio's informer-based check is at least as stale.
   */
  readonly cacheTtlMs?: number;
  readonly nowMs?: () => number;
}

const TERMINATED: ReadonlySet<string> = new Set(['Failed', 'Succeeded']);

export function createNodeAuthorizer(options: NodeAuthorizerOptions): ImpersonationAuthorizer {
  const trusted = new Set(options.trustedAccounts.map((a) => `${a.namespace}/${a.serviceAccount}`));
  const cache = new PositiveCache(options.cacheTtlMs ?? 5_000, options.nowMs ?? Date.now);

  return async (caller: CallerIdentity, impersonated: string): Promise<void> => {
    if (!trusted.has(`${caller.namespace}/${caller.serviceAccount}`)) {
      throw deny(`${caller.namespace}/${caller.serviceAccount} is not a trusted node account (--trusted-node-accounts)`);
    }
    const target = requestedIdentity(impersonated, options.trustDomain);
    const client = options.clientFor(caller.clusterId);
    if (client === undefined) throw deny(`cluster ${caller.clusterId} has no Kubernetes API configured for pod checks`);
    if (caller.podName === undefined || caller.podUid === undefined) {
      throw deny("the caller's token is not bound to a pod (no pod name/uid); use a projected service-account token");
    }
    const callerKey = [
      'pod',
      caller.clusterId,
      caller.namespace,
      caller.podName,
      caller.podUid,
      caller.serviceAccount,
      caller.nodeName ?? '',
    ].join('\0');
    const node = await cache.getOrLoad(callerKey, () => callerNode(client, caller));
    const targetKey = ['node', caller.clusterId, node, target.namespace, target.serviceAccount].join('\0');
    await cache.getOrLoad(targetKey, () => requirePodOnNode(client, target, node).then(() => node));
  };
}

function requestedIdentity(impersonated: string, trustDomain: string): WorkloadIdentity {
  let target: WorkloadIdentity;
  try {
    target = parseWorkloadId(impersonated);
  } catch (error) {
    if (error instanceof SpiffeIdError) throw deny(`ImpersonatedIdentity is not a workload SPIFFE ID: ${error.message}`);
    throw error;
  }
  if (target.trustDomain !== trustDomain) throw deny(`ImpersonatedIdentity is outside trust domain ${trustDomain}`);
  return target;
}

/** Successful checks only (a denial is always re-checked), bounded, with a short lifetime. */
class PositiveCache {
  readonly #entries = new Map<string, { readonly value: string; readonly until: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly nowMs: () => number,
  ) {}

  async getOrLoad(key: string, load: () => Promise<string>): Promise<string> {
    const hit = this.#entries.get(key);
    if (hit !== undefined && hit.until > this.nowMs()) return hit.value;
    const value = await load();
    if (this.#entries.size >= 10_000) this.#entries.clear();
    this.#entries.set(key, { value, until: this.nowMs() + this.ttlMs });
    return value;
  }
}

/** The caller's pod must exist with the token's uid and service account; returns its node. */
async function callerNode(client: KubeClient, caller: CallerIdentity): Promise<string> {
  const pod = await backend(() => getPod(client, caller.namespace, caller.podName!));
  const where = `pod ${caller.namespace}/${caller.podName}`;
  if (pod === undefined) throw deny(`${where} of the caller does not exist`);
  if (pod.metadata.uid !== caller.podUid) throw deny(`${where} has uid ${pod.metadata.uid}, not the token's ${caller.podUid} (recreated?)`);
  if (pod.spec?.serviceAccountName !== caller.serviceAccount) throw deny(`${where} does not run as ${caller.serviceAccount}`);
  if (TERMINATED.has(pod.status?.phase ?? '')) throw deny(`${where} has terminated`);
  const node = pod.spec?.nodeName;
  if (!node) throw deny(`${where} is not scheduled on a node`);
  if (caller.nodeName !== undefined && caller.nodeName !== node)
    throw deny(`${where} runs on ${node}, not on the token's node ${caller.nodeName}`);
  return node;
}

/** A pod running as the impersonated namespace/service account must be on `node` and not terminated. */
async function requirePodOnNode(client: KubeClient, target: WorkloadIdentity, node: string): Promise<void> {
  const selector = `spec.nodeName=${node},spec.serviceAccountName=${target.serviceAccount},status.phase!=Failed,status.phase!=Succeeded`;
  const pods = await backend(() => listPods(client, target.namespace, selector));
  // Re-checked here: field selectors are the server's business, the decision is ours.
  const running = pods.filter(
    (p: Pod) => p.spec?.nodeName === node && p.spec?.serviceAccountName === target.serviceAccount && !TERMINATED.has(p.status?.phase ?? ''),
  );
  if (running.length === 0) throw deny(`no running pod of ${target.namespace}/${target.serviceAccount} on node ${node}`);
}

async function backend<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (cause) {
    throw new AuthenticationError('ERR_AUTHN_BACKEND_UNAVAILABLE', `pod check failed: ${(cause as Error).message}`, { cause });
  }
}

function deny(message: string): AuthenticationError {
  return new AuthenticationError('ERR_IMPERSONATION_DENIED', `impersonation refused: ${message}`);
}
