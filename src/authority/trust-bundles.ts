import { spiffeBundle, type SpiffeBundle } from '../spiffe/bundle.js';
import type { JwtAuthority } from './jwt-authority.js';
import type { CertificateAuthority } from './lifecycle.js';

/** Bundles of other trust domains (federation), by trust domain name. */
export interface FederatedBundleSource {
  current(): ReadonlyMap<string, SpiffeBundle>;
}

/**
 * meshca's own SPIFFE bundle (X.509 roots and JWT keys, one sequence shared by both) and the
 * federated ones: what GET /v1/bundle?format=spiffe, /v1/bundles/federated and FetchBundles serve.
 */
export class TrustBundles {
  constructor(
    private readonly ca: CertificateAuthority,
    private readonly jwt: JwtAuthority,
    readonly trustDomain: string,
    private readonly refreshHintSeconds: number,
    private readonly federation?: FederatedBundleSource,
  ) {}

  /** Both views read the same store counter, so the larger one is the current sequence. */
  sequence(): number {
    return Math.max(this.ca.current().bundleSequence, this.jwt.current().bundleSequence);
  }

  own(): SpiffeBundle {
    return spiffeBundle(this.ca.current().roots, this.sequence(), this.refreshHintSeconds, this.jwt.current().published);
  }

  federated(): ReadonlyMap<string, SpiffeBundle> {
    return this.federation?.current() ?? new Map();
  }

  /** Own and federated bundles as JSON documents, keyed by trust domain name. */
  all(): Record<string, string> {
    const documents: Record<string, string> = {};
    for (const [trustDomain, bundle] of this.federated()) documents[trustDomain] = JSON.stringify(bundle);
    documents[this.trustDomain] = JSON.stringify(this.own());
    return documents;
  }
}
