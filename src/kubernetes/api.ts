/** Typed calls to the few Kubernetes API endpoints meshca uses. */

import type { TokenReviewer, TokenReviewResult } from '../authn/index.js';
import { isConflict, isNotFound, type KubeClient } from './client.js';
import type { ConfigMap, KubeList, KubeObject, Lease, Namespace, Pod, Secret, TokenReview } from './types.js';

const enc = encodeURIComponent;

/** POST /apis/authentication.k8s.io/v1/tokenreviews (needs `create tokenreviews`). */
export function tokenReviewer(client: KubeClient): TokenReviewer {
  return {
    description: client.description,
    async review(token: string, audiences: readonly string[]): Promise<TokenReviewResult> {
      const body: TokenReview = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } };
      const answer = await client.post<TokenReview>('/apis/authentication.k8s.io/v1/tokenreviews', body);
      return answer.status ?? {};
    },
  };
}

export async function getPod(client: KubeClient, namespace: string, name: string): Promise<Pod | undefined> {
  return orUndefined(client.get<Pod>(`/api/v1/namespaces/${enc(namespace)}/pods/${enc(name)}`));
}

export async function listPods(client: KubeClient, namespace: string, fieldSelector: string): Promise<Pod[]> {
  return (await client.get<KubeList<Pod>>(`/api/v1/namespaces/${enc(namespace)}/pods`, { fieldSelector })).items ?? [];
}

export async function listNamespaces(client: KubeClient, labelSelector: string | undefined): Promise<KubeList<Namespace>> {
  return client.get<KubeList<Namespace>>('/api/v1/namespaces', { labelSelector });
}

/** A namespaced object type: configmaps, secrets (core) or leases (coordination.k8s.io/v1). */
export class Resource<T extends KubeObject> {
  constructor(
    private readonly client: KubeClient,
    private readonly group: string,
    private readonly plural: string,
  ) {}

  static configMaps(client: KubeClient): Resource<ConfigMap> {
    return new Resource(client, '/api/v1', 'configmaps');
  }

  static secrets(client: KubeClient): Resource<Secret> {
    return new Resource(client, '/api/v1', 'secrets');
  }

  static leases(client: KubeClient): Resource<Lease> {
    return new Resource(client, '/apis/coordination.k8s.io/v1', 'leases');
  }

  get(namespace: string, name: string): Promise<T | undefined> {
    return orUndefined(this.client.get<T>(this.path(namespace, name)));
  }

  create(namespace: string, object: T): Promise<T> {
    return this.client.post<T>(this.path(namespace), object);
  }

  /** PUT with the object's metadata.resourceVersion: a stale version fails with 409 Conflict. */
  update(namespace: string, object: T): Promise<T> {
    return this.client.put<T>(this.path(namespace, object.metadata.name!), object);
  }

  /**
   * Read-modify-write until it sticks: `change` gets the current object (or undefined) and returns
   * the object to write, or undefined to leave it alone. Conflicts (409) re-read and try again.
   */
  async upsert(
    namespace: string,
    name: string,
    change: (current: T | undefined) => T | undefined,
    attempts = 5,
  ): Promise<'created' | 'updated' | 'unchanged'> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.get(namespace, name);
      const next = change(current);
      if (next === undefined) return 'unchanged';
      try {
        if (current === undefined) {
          await this.create(namespace, next);
          return 'created';
        }
        await this.update(namespace, { ...next, metadata: { ...next.metadata, resourceVersion: current.metadata.resourceVersion } });
        return 'updated';
      } catch (error) {
        if (!isConflict(error) || attempt >= attempts) throw error; // 409: AlreadyExists or a stale resourceVersion
      }
    }
  }

  private path(namespace: string, name?: string): string {
    return `${this.group}/namespaces/${enc(namespace)}/${this.plural}${name === undefined ? '' : `/${enc(name)}`}`;
  }
}

async function orUndefined<T>(request: Promise<T>): Promise<T | undefined> {
  try {
    return await request;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}
