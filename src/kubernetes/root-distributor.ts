/**
 * Keeps ConfigMap istio-ca-root-cert (key root-cert.pem) equal to the trust bundle in every
 * namespace (or those matching a label selector): istiod does this itself only when it is the CA
 * (docs/architecture.md). Runs while this replica leads; other keys, labels and annotations of an existing
 * ConfigMap are left as they are.
 */

import type { Logger } from 'pino';
import { listNamespaces, Resource } from './api.js';
import { KubeApiError, type KubeClient } from './client.js';
import type { ConfigMap, Namespace } from './types.js';

export const ROOT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';

export interface RootDistributorOptions {
  readonly client: KubeClient;
  /** The current trust bundle, PEM. */
  readonly bundle: () => string;
  readonly namespaceSelector: string | undefined;
  readonly resyncIntervalMs: number;
  readonly logger: Logger;
  /** Namespaces written at once during a full sync (default 8). */
  readonly concurrency?: number;
}

export interface SyncResult {
  readonly created: number;
  readonly updated: number;
  readonly unchanged: number;
  readonly failed: number;
}

/** A leader task: start() when elected, stop() when not. */
export class RootDistributor {
  readonly #options: RootDistributorOptions;
  readonly #configMaps: Resource<ConfigMap>;
  #abort: AbortController | undefined;
  #timer: NodeJS.Timeout | undefined;
  #syncing: Promise<SyncResult> | undefined;
  #again = false;

  constructor(options: RootDistributorOptions) {
    this.#options = options;
    this.#configMaps = Resource.configMaps(options.client);
  }

  get running(): boolean {
    return this.#abort !== undefined;
  }

  start(): void {
    if (this.#abort) return;
    const abort = (this.#abort = new AbortController());
    void this.#watchNamespaces(abort.signal);
    this.#resync();
  }

  stop(): void {
    this.#abort?.abort();
    this.#abort = undefined;
    clearTimeout(this.#timer);
  }

  /** The bundle changed (rotation): write it everywhere now. */
  bundleChanged(): void {
    if (this.#abort) void this.syncAll();
  }

  /** One pass over every selected namespace; concurrent requests coalesce into one more pass. */
  syncAll(): Promise<SyncResult> {
    if (this.#syncing) {
      this.#again = true;
      return this.#syncing;
    }
    const run = async (): Promise<SyncResult> => {
      let result: SyncResult;
      do {
        this.#again = false;
        result = await this.#syncAllOnce();
      } while (this.#again && this.#abort);
      return result;
    };
    this.#syncing = run().finally(() => (this.#syncing = undefined));
    return this.#syncing;
  }

  #resync(): void {
    clearTimeout(this.#timer);
    if (!this.#abort) return;
    void this.syncAll().finally(() => {
      if (!this.#abort) return;
      this.#timer = setTimeout(() => this.#resync(), this.#options.resyncIntervalMs);
      this.#timer.unref();
    });
  }

  async #syncAllOnce(): Promise<SyncResult> {
    const counts = { created: 0, updated: 0, unchanged: 0, failed: 0 };
    let namespaces: Namespace[];
    try {
      namespaces = (await listNamespaces(this.#options.client, this.#options.namespaceSelector)).items;
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'root distribution: cannot list namespaces; retrying at the next resync');
      return { ...counts, failed: 1 };
    }
    const pending = namespaces.filter((ns) => ns.status?.phase !== 'Terminating').map((ns) => ns.metadata.name!);
    const worker = async () => {
      for (let name = pending.shift(); name !== undefined && this.#abort; name = pending.shift()) {
        const outcome = await this.syncNamespace(name);
        counts[outcome] += 1;
      }
    };
    await Promise.all(Array.from({ length: this.#options.concurrency ?? 8 }, worker));
    const changed = counts.created + counts.updated;
    if (changed > 0 || counts.failed > 0)
      this.#options.logger.info(
        { ...counts, namespaces: namespaces.length },
        'distributed the trust bundle (ConfigMap istio-ca-root-cert)',
      );
    return counts;
  }

  /** Creates or updates the ConfigMap in one namespace. */
  async syncNamespace(namespace: string): Promise<'created' | 'updated' | 'unchanged' | 'failed'> {
    if (!this.#abort) return 'unchanged'; // no longer the leader: never write
    const pem = this.#options.bundle();
    try {
      return await this.#configMaps.upsert(namespace, ROOT_CONFIGMAP, (current) => {
        if (!this.#abort) return undefined;
        if (current === undefined) {
          return {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: ROOT_CONFIGMAP, namespace, labels: { 'istio.io/config': 'true' } },
            data: { [ROOT_CONFIGMAP_KEY]: pem },
          };
        }
        if (current.data?.[ROOT_CONFIGMAP_KEY] === pem) return undefined;
        return { ...current, data: { ...(current.data ?? {}), [ROOT_CONFIGMAP_KEY]: pem } };
      });
    } catch (error) {
      const level = error instanceof KubeApiError && error.status === 404 ? 'debug' : 'warn'; // namespace deleted meanwhile
      this.#options.logger[level]({ err: error, namespace }, 'root distribution: cannot write ConfigMap istio-ca-root-cert');
      return 'failed';
    }
  }

  /** New (or relabelled) namespaces get the ConfigMap at once, not at the next resync. */
  async #watchNamespaces(signal: AbortSignal): Promise<void> {
    let resourceVersion: string | undefined;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (resourceVersion === undefined) {
          resourceVersion = (await listNamespaces(this.#options.client, this.#options.namespaceSelector)).metadata.resourceVersion;
        }
        await this.#options.client.watch<Namespace>(
          '/api/v1/namespaces',
          { labelSelector: this.#options.namespaceSelector, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 },
          (event) => {
            resourceVersion = event.object.metadata.resourceVersion ?? resourceVersion;
            failures = 0;
            if ((event.type === 'ADDED' || event.type === 'MODIFIED') && event.object.status?.phase !== 'Terminating') {
              void this.syncNamespace(event.object.metadata.name!);
            }
          },
          signal,
        );
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof KubeApiError && error.status === 410) {
          resourceVersion = undefined; // too old: list again, then a full pass catches what we missed
          void this.syncAll();
          continue;
        }
        failures += 1;
        this.#options.logger.debug({ err: error }, 'root distribution: namespace watch failed; retrying');
        await new Promise<void>((resolve) => setTimeout(resolve, Math.min(30_000, 500 * 2 ** Math.min(failures, 6))).unref());
      }
    }
  }
}
