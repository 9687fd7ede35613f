import type { AuthorityRecord, AuthorityState } from '../store/types.js';
import { pemEncode } from '../pki/pem.js';
import type { SigningAuthority } from './signer.js';

/** States whose roots are trusted, i.e. published in the bundle (docs/architecture.md). */
export const TRUSTED_STATES: ReadonlySet<AuthorityState> = new Set(['prepared', 'active', 'retired', 'tainted']);

/**
 * An immutable view of the authorities at one bundle sequence. The hot path reads only this, so a
 * rotation swaps one reference and in-flight requests finish on the view they started with.
 */
export interface TrustSnapshot {
  readonly authorities: readonly AuthorityRecord[];
  readonly signer: SigningAuthority;
  readonly bundleSequence: number;
  /** Trusted roots (DER), oldest first. */
  readonly roots: readonly Buffer[];
  /** All trusted roots as one PEM string: the last cert_chain element. */
  readonly rootsPem: string;
  /**
   * cert_chain after the leaf: the signing intermediate and its upstream intermediates, each as its
   * own element, then every trusted root in one element with the root that signs the chain first, so
   * the concatenated chain Envoy sends is in signing order.
   */
  readonly chainTail: readonly string[];
}

export function buildSnapshot(authorities: readonly AuthorityRecord[], signer: SigningAuthority, bundleSequence: number): TrustSnapshot {
  const { ders: roots, pem: rootsPem } = trustedRootsPem(authorities);
  const intermediates = [signer.record.certificateDer, ...signer.record.upstreamChainDers];
  const issuingRoot = authorities.find((a) => a.id === signer.record.parentId)?.certificateDer;
  const signingOrder = issuingRoot ? [issuingRoot, ...roots.filter((der) => !der.equals(issuingRoot))] : roots;
  const chainTail = [
    ...intermediates.map((der) => pemEncode(der, 'CERTIFICATE')),
    signingOrder.map((der) => pemEncode(der, 'CERTIFICATE')).join(''),
  ];
  return { authorities, signer, bundleSequence, roots, rootsPem, chainTail };
}

/** Trusted roots straight from the records (for tools that read the data dir without the KEK). */
export function trustedRootsPem(authorities: readonly AuthorityRecord[]): { ders: Buffer[]; pem: string } {
  const ders = authorities
    .filter((a) => a.kind === 'root' && TRUSTED_STATES.has(a.state))
    .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id))
    .map((a) => a.certificateDer);
  return { ders, pem: ders.map((der) => pemEncode(der, 'CERTIFICATE')).join('') };
}
