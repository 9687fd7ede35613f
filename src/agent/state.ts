import { EventEmitter } from 'node:events';
import { pemEncode } from '../pki/pem.js';

/** The agent's X509-SVID: DER for the Workload API, PEM for files and SDS. */
export interface X509Svid {
  readonly spiffeId: string;
  /** Leaf first, then intermediates (no roots). */
  readonly chainDer: readonly Buffer[];
  readonly keyPkcs8Der: Buffer;
  readonly notAfter: Date;
  /** When the agent received it (the renewal clock starts here, not at the backdated notBefore). */
  readonly receivedAt: Date;
}

/** One trust domain's bundle as the agent uses it. */
export interface TrustDomainBundle {
  readonly trustDomain: string;
  /** X.509 authorities (DER). */
  readonly x509Roots: readonly Buffer[];
  /** JWT authorities as JWKs (kid, kty, crv/x/y or n/e), without the SPIFFE "use". */
  readonly jwtKeys: readonly Readonly<Record<string, unknown>>[];
  readonly sequence: number | undefined;
  readonly refreshHintSeconds: number | undefined;
}

export type AgentChange = 'svid' | 'bundles';

/**
 * What the agent serves, in one place: its SVID and the bundles (own trust domain first). Every
 * transport (Workload API, SDS, files) reads this and subscribes to its changes.
 */
export class AgentState {
  private svid: X509Svid | undefined;
  private bundleMap = new Map<string, TrustDomainBundle>();
  private readonly events = new EventEmitter();

  constructor(readonly trustDomain: string) {
    this.events.setMaxListeners(0);
  }

  currentSvid(): X509Svid | undefined {
    return this.svid;
  }

  bundles(): ReadonlyMap<string, TrustDomainBundle> {
    return this.bundleMap;
  }

  ownBundle(): TrustDomainBundle | undefined {
    return this.bundleMap.get(this.trustDomain);
  }

  federatedBundles(): TrustDomainBundle[] {
    return [...this.bundleMap.values()].filter((b) => b.trustDomain !== this.trustDomain);
  }

  setSvid(svid: X509Svid): void {
    this.svid = svid;
    this.events.emit('change', 'svid');
  }

  /** Replaces the bundles; emits only when something a workload would see changed. */
  setBundles(bundles: readonly TrustDomainBundle[]): void {
    const next = new Map(bundles.map((b) => [b.trustDomain, b]));
    if (sameBundles(this.bundleMap, next)) return;
    this.bundleMap = next;
    this.events.emit('change', 'bundles');
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  onChange(listener: (change: AgentChange) => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  /** Own roots first, then every federated trust domain's, as PEM. */
  allRootsPem(): string {
    const own = this.ownBundle();
    return [...(own ? [own] : []), ...this.federatedBundles()]
      .flatMap((b) => b.x509Roots)
      .map((der) => pemEncode(der, 'CERTIFICATE'))
      .join('');
  }
}

function bundleKey(b: TrustDomainBundle): string {
  return JSON.stringify([b.x509Roots.map((d) => d.toString('base64')), b.jwtKeys]);
}

function sameBundles(a: ReadonlyMap<string, TrustDomainBundle>, b: ReadonlyMap<string, TrustDomainBundle>): boolean {
  if (a.size !== b.size) return false;
  for (const [td, bundle] of a) {
    const other = b.get(td);
    if (!other || bundleKey(other) !== bundleKey(bundle)) return false;
  }
  return true;
}

/** PEM of a chain (leaf first) and of a PKCS#8 key, for files and SDS. */
export function svidPem(svid: X509Svid): { chainPem: string; keyPem: string } {
  return {
    chainPem: svid.chainDer.map((der) => pemEncode(der, 'CERTIFICATE')).join(''),
    keyPem: pemEncode(svid.keyPkcs8Der, 'PRIVATE KEY'),
  };
}
