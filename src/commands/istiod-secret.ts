/** The Kubernetes half of `meshca istiod-cert --k8s-secret`, loaded on demand. */
import { Resource } from '../kubernetes/api.js';
import { KubeClient } from '../kubernetes/client.js';
import { loadKubeConnection } from '../kubernetes/connection.js';
import { ISTIOD_SECRET, renewalReason, writeIstiodSecret } from '../kubernetes/istiod-cert.js';

export { ISTIOD_SECRET, writeIstiodSecret };

export function connect(kubeconfig: string | undefined): KubeClient {
  return new KubeClient({ connection: loadKubeConnection({ kubeconfig, env: process.env }) });
}

/** Whether Secret istiod-tls is still good (before 2/3 of its lifetime, same names and roots). */
export async function isCurrent(
  client: KubeClient,
  namespace: string,
  want: { readonly rootsPem: string; readonly dnsNames: readonly string[] },
): Promise<boolean> {
  return renewalReason(await Resource.secrets(client).get(namespace, ISTIOD_SECRET), want) === undefined;
}
