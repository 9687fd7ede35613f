import type { Logger } from 'pino';
import type { SpiffeBundle } from '../spiffe/bundle.js';
import type { Store } from '../store/types.js';
import { fetchBundleDocument, parseBundleDocument } from './endpoint.js';

export interface FederationPeer {
  readonly trustDomain: string;
  /** The peer's bundle endpoint (https_web), e.g. https://meshca.other.example/v1/bundle?format=spiffe. */
  readonly url: string;
}

export interface FederationOptions {
  readonly peers: readonly FederationPeer[];
  readonly store: Pick<Store, 'loadFederatedBundles' | 'saveFederatedBundle'>;
  readonly logger: Logger;
  /** PEM roots for the bundle endpoints instead of the system roots (--federation-ca-file). */
  readonly caPem?: string;
  /** Used when a bundle gives no spiffe_refresh_hint; also the upper bound of the interval. */
  readonly defaultRefreshMs?: number;
  readonly onChange?: (trustDomain: string) => void;
}

const MIN_REFRESH_MS = 1000;

/**
 * Bundles of federated trust domains: fetched from each peer's bundle endpoint, refreshed at the
 * bundle's spiffe_refresh_hint, stored on every change so the last good one survives failures of
 * the endpoint and restarts of meshca.
 */
export class Federation {
  private readonly bundles = new Map<string, SpiffeBundle>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  private stopped = false;

  private constructor(private readonly options: FederationOptions) {}

  /** Loads the stored bundles, then starts refreshing (the first fetch runs at once, in the background). */
  static async start(options: FederationOptions): Promise<Federation> {
    const federation = new Federation(options);
    const wanted = new Set(options.peers.map((p) => p.trustDomain));
    for (const stored of await options.store.loadFederatedBundles()) {
      if (!wanted.has(stored.trustDomain)) continue;
      try {
        federation.bundles.set(stored.trustDomain, parseBundleDocument(stored.trustDomain, stored.bundleJson));
      } catch (error) {
        options.logger.warn(
          { err: error, trustDomain: stored.trustDomain },
          'the stored federated bundle is unusable; waiting for a fresh one',
        );
      }
    }
    for (const peer of options.peers) federation.schedule(peer, 0);
    return federation;
  }

  current(): ReadonlyMap<string, SpiffeBundle> {
    return this.bundles;
  }

  /** Fetches one peer now; false (and the last good bundle kept) on any failure. */
  async refresh(peer: FederationPeer): Promise<boolean> {
    const { logger, store } = this.options;
    try {
      const text = await fetchBundleDocument(peer.url, this.options.caPem);
      const bundle = parseBundleDocument(peer.trustDomain, text);
      this.failures.delete(peer.trustDomain);
      const previous = this.bundles.get(peer.trustDomain);
      if (previous && JSON.stringify(previous) === JSON.stringify(bundle)) return true;
      await store.saveFederatedBundle({
        trustDomain: peer.trustDomain,
        endpointUrl: peer.url,
        bundleJson: JSON.stringify(bundle),
        sequence: bundle.spiffe_sequence,
        fetchedAt: new Date(),
      });
      this.bundles.set(peer.trustDomain, bundle);
      logger.info(
        { trustDomain: peer.trustDomain, sequence: bundle.spiffe_sequence, keys: bundle.keys.length },
        'federated bundle updated',
      );
      this.options.onChange?.(peer.trustDomain);
      return true;
    } catch (error) {
      const failures = (this.failures.get(peer.trustDomain) ?? 0) + 1;
      this.failures.set(peer.trustDomain, failures);
      logger.warn(
        { err: error, trustDomain: peer.trustDomain, url: peer.url, failures, keepingLastGood: this.bundles.has(peer.trustDomain) },
        `federated bundle refresh failed: ${(error as Error).message}`,
      );
      return false;
    }
  }

  stop(): void {
    this.stopped = true;
    this.timers.forEach((timer) => clearTimeout(timer));
  }

  private interval(peer: FederationPeer, ok: boolean): number {
    const max = this.options.defaultRefreshMs ?? 300_000;
    const hint = (this.bundles.get(peer.trustDomain)?.spiffe_refresh_hint ?? 0) * 1000;
    const normal = Math.max(MIN_REFRESH_MS, hint > 0 ? Math.min(hint, max) : max);
    if (ok) return normal;
    const failures = this.failures.get(peer.trustDomain) ?? 1;
    return Math.min(normal, MIN_REFRESH_MS * 2 ** Math.min(failures - 1, 8));
  }

  private schedule(peer: FederationPeer, delayMs: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => void this.refresh(peer).then((ok) => this.schedule(peer, this.interval(peer, ok))), delayMs);
    timer.unref();
    this.timers.set(peer.trustDomain, timer);
  }
}

/** Parses --federate-with TD=URL values. */
export function parseFederationPeer(value: string, parseTrustDomain: (name: string) => string): FederationPeer {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new Error(`"${value}" is not TD=URL (e.g. other.example=https://meshca.other.example/v1/bundle?format=spiffe)`);
  const trustDomain = parseTrustDomain(value.slice(0, eq));
  const url = value.slice(eq + 1);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`"${url}" is not a URL`);
  }
  if (parsed.protocol !== 'https:') throw new Error(`the bundle endpoint of ${trustDomain} must be https:// (https_web profile)`);
  return { trustDomain, url };
}
